//! `entourage certs`: its flags and the command.

use std::path::PathBuf;

use super::{generate, write_dev_certs, CertError};

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
}

/// Writes a development CA and serving certificate, and says where.
pub fn cmd(args: CertsArgs) -> Result<(), CertError> {
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
