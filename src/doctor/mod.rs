//! `entourage doctor`: checks, from wherever `kubectl` works, the things that break an install, and says in one
//! line each what is wrong and how to fix it (as `linkerd check` and `istioctl analyze` do).
//!
//! Everything goes through the API server with the current kubeconfig, never straight to a Pod: a laptop
//! outside the cluster has no route to Pod IPs, and the API server is also the one whose view matters. So the
//! serving certificate is checked as the API server checks it, but on the certificate the webhook is given (the
//! Secret's `tls.crt`, which the webhook reloads) rather than one read off the wire; and the API server's
//! service proxy (`/api/v1/namespaces/NS/services/https:NAME:PORT/proxy/readyz`) proves that the control plane
//! reaches the webhook through its Service, the path every admission call takes.
//!
//! Exit status: **0** when no check failed (warnings are printed but pass), **1** when at least one check failed,
//! **2** when the doctor could not check at all (no kubeconfig, the API unreachable, bad flags).

mod cert;
mod checks;
mod cluster;

use std::{io::Write, path::PathBuf};

use clap::Args;
use kube::config::{KubeConfigOptions, Kubeconfig};
use rustls::pki_types::UnixTime;

pub use checks::{selects, Check, Level};

/// `entourage doctor` flags.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The kubeconfig file (default: `KUBECONFIG`, then `~/.kube/config`, then the in-cluster service account).
    #[arg(long, env = "ENTOURAGE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long, env = "ENTOURAGE_CONTEXT")]
    pub context: Option<String>,
    /// The namespace entourage runs in.
    #[arg(long, env = "ENTOURAGE_NAMESPACE", default_value = "entourage-system")]
    pub namespace: String,
    /// The webhook's Service.
    #[arg(long, env = "ENTOURAGE_SERVICE", default_value = "entourage")]
    pub service: String,
    /// The webhook's Deployment (its image tag is the running version).
    #[arg(long, env = "ENTOURAGE_DEPLOYMENT", default_value = "entourage")]
    pub deployment: String,
    /// The MutatingWebhookConfiguration.
    #[arg(long, env = "ENTOURAGE_WEBHOOK_CONFIGURATION", default_value = "entourage")]
    pub webhook_configuration: String,
    /// The revision of the install checked (the chart's `revision`); unset: the default revision. Pods of other
    /// revisions are left to theirs when versions are compared.
    #[arg(long, env = "ENTOURAGE_REVISION")]
    pub revision: Option<String>,
    /// The Secret holding the serving certificate (`tls.crt`).
    #[arg(long, env = "ENTOURAGE_TLS_SECRET", default_value = "entourage-tls")]
    pub tls_secret: String,
    /// Warn when the serving certificate expires within this many days.
    #[arg(long, env = "ENTOURAGE_EXPIRY_WARNING_DAYS", default_value_t = 14)]
    pub expiry_warning_days: u32,
}

/// Why the doctor could not check at all (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// No usable kubeconfig.
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    /// The API server did not answer.
    #[error(transparent)]
    Unreachable(#[from] cluster::Unreachable),
}

/// The exit status for a set of findings: 1 if any failed, else 0.
pub fn exit_status(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.level == Level::Fail))
}

/// One line: `[FAIL] ca-bundle: what is wrong; fix: how`.
pub fn line(check: &Check) -> String {
    let tag = match check.level {
        Level::Ok => "[ok]  ",
        Level::Warn => "[warn]",
        Level::Fail => "[FAIL]",
    };
    match &check.fix {
        Some(fix) => format!("{tag} {}: {}; fix: {fix}", check.id, check.message),
        None => format!("{tag} {}: {}", check.id, check.message),
    }
}

async fn client(args: &DoctorArgs) -> Result<(kube::Client, String), DoctorError> {
    let fail = |e: &dyn std::fmt::Display| DoctorError::Kubeconfig(e.to_string());
    let config = if args.kubeconfig.is_some() || args.context.is_some() {
        let kubeconfig = match &args.kubeconfig {
            Some(path) => Kubeconfig::read_from(path).map_err(|e| fail(&e))?,
            None => Kubeconfig::read().map_err(|e| fail(&e))?,
        };
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..KubeConfigOptions::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| fail(&e))?
    } else {
        kube::Config::infer().await.map_err(|e| fail(&e))?
    };
    let mut config = config;
    // A person is waiting: a 503 from the service proxy (the API server cannot reach the webhook) is the answer,
    // not something to retry with backoff for minutes, as kube's default policy for controllers does.
    config.default_retry = false;
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|e| fail(&e))?;
    Ok((client, server))
}

/// Runs every check, prints one line each and a summary, and returns the exit status (0, 1 or 2).
pub async fn cmd(args: DoctorArgs) -> i32 {
    let mut stdout = std::io::stdout().lock();
    let result = async {
        let (client, server) = client(&args).await?;
        let snapshot = cluster::read_cluster(client, &args).await?;
        Ok::<_, DoctorError>((server, snapshot))
    }
    .await;
    let (server, snapshot) = match result {
        Ok(found) => found,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "entourage doctor: {e}; check --kubeconfig and --context (kubectl cluster-info should answer)"
            );
            return 2;
        }
    };
    let checks = checks::run(&snapshot, &args, UnixTime::now());
    let _ = writeln!(stdout, "entourage doctor: {server}, namespace {}", args.namespace);
    for check in &checks {
        let _ = writeln!(stdout, "{}", line(check));
    }
    let count = |level| checks.iter().filter(|c| c.level == level).count();
    let _ = writeln!(
        stdout,
        "{} ok, {} warnings, {} failed",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail)
    );
    exit_status(&checks)
}
