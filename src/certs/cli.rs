//! `entourage certs`: its flags and the command.

use std::path::PathBuf;

use super::{generate, secret, write_dev_certs, CertError};

/// Flags of `entourage certs`.
#[derive(clap::Args)]
pub struct CertsArgs {
    /// Directory to write `ca.crt`, `ca.key`, `tls.crt`, `tls.key` into.
    #[arg(long, env = "ENTOURAGE_CERTS_OUT", default_value = "certs")]
    pub out: PathBuf,
    /// The webhook's Service name.
    #[arg(long, env = "ENTOURAGE_SERVICE", default_value = "entourage")]
    pub service: String,
    /// The webhook's namespace.
    #[arg(long, env = "ENTOURAGE_NAMESPACE", default_value = "entourage-system")]
    pub namespace: String,
    /// Validity in days.
    #[arg(long, default_value_t = 365)]
    pub days: i64,
    /// Instead of files: make the pair in this Secret of `--namespace` when it is missing (kubeconfig or the
    /// in-cluster service account; the chart's `certificates.source: job` runs it in a hook Job).
    #[arg(long, value_parser = secret_name)]
    pub secret: Option<String>,
    /// With `--secret`: the rotation the pair must have been made for; a Secret that records another one gets a
    /// new pair (and the caBundle of `--webhook-configuration` trusts the previous CA and the new one first).
    #[arg(long, requires = "secret")]
    pub rotation: Option<String>,
    /// With `--secret`: only create a missing Secret, never rotate (the new Secret records `--rotation`).
    #[arg(long, requires = "secret")]
    pub only_create: bool,
    /// With `--secret --rotation`: the MutatingWebhookConfiguration whose caBundle a rotation writes first.
    #[arg(long, requires = "secret")]
    pub webhook_configuration: Option<String>,
}

/// Writes a development CA and serving certificate, and says where; with `--secret`, makes or rotates the
/// cluster's Secret.
pub async fn cmd(args: CertsArgs) -> Result<(), CertError> {
    if let Some(name) = &args.secret {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| CertError::Client(e.to_string()))?;
        let spec = secret::SecretSpec {
            name,
            namespace: &args.namespace,
            service: &args.service,
            days: args.days,
            rotation: args.rotation.as_deref(),
            only_create: args.only_create,
            webhook_configuration: args.webhook_configuration.as_deref(),
        };
        let outcome = secret::ensure(client, &spec).await?;
        println!("Secret {}/{name}: {outcome}", args.namespace);
        return Ok(());
    }
    let generated = generate(&args.service, &args.namespace, args.days)?;
    write_dev_certs(&args.out, &generated)?;
    println!(
        "wrote {}/{{ca.crt,ca.key,tls.crt,tls.key}} for {}.{}.svc",
        args.out.display(),
        args.service,
        args.namespace
    );
    Ok(())
}

/// A Secret's name: a DNS subdomain.
fn secret_name(value: &str) -> Result<String, String> {
    if crate::support::names::is_dns_subdomain(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253)"
        ))
    }
}
