//! The one shutdown signal every long-running program waits for: SIGTERM (the kubelet stopping the container)
//! or SIGINT (a person at a terminal).

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// Resolves with the signal's name on the first SIGTERM or SIGINT. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives while the program is busy is never lost
/// to the default action (death by signal).
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
