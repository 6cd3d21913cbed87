//! The ambassador runtime (`entourage ambassador`): a reverse proxy from a loopback port to an upstream service.
//! (Skeleton: being built in its own branch.)

/// Command-line arguments of `entourage ambassador`.
#[derive(Debug, Clone, clap::Args)]
pub struct AmbassadorArgs {
    /// Where the app reaches the ambassador.
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: std::net::SocketAddr,
    /// The upstream base URL (`http://` or `https://`).
    #[arg(long, env = "ENTOURAGE_AMBASSADOR_UPSTREAM")]
    pub upstream: String,
}

/// Errors of the ambassador runtime.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Not built yet.
    #[error("the ambassador runtime is not built yet")]
    NotBuilt,
}

/// Runs the ambassador until SIGTERM.
pub async fn run(_args: AmbassadorArgs) -> Result<(), ProxyError> {
    Err(ProxyError::NotBuilt)
}
