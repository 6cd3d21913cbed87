//! One JSON line per proxied request on stdout, written off the request path.
//!
//! Requests hand a finished line to a dedicated thread over a bounded channel; the thread writes whatever has
//! queued up in one go and flushes when the queue is empty. Under load that batches many lines per `write`, and a
//! slow reader of stdout (the container runtime) can never stall the proxy: past the bound lines are dropped and
//! counted instead.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// What is logged about one request.
#[derive(Debug, serde::Serialize)]
pub struct Entry<'a> {
    /// Milliseconds since the Unix epoch when the line was made.
    pub ts_ms: u64,
    /// Request method.
    pub method: &'a str,
    /// Request path (the query is left out: it may carry secrets).
    pub path: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Time until the upstream's response head arrived (or the request failed), in milliseconds.
    pub upstream_ms: f64,
    /// Request body size when the client declared it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    /// Response body size when the upstream declared it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    /// Attempts beyond the first.
    pub retries: u32,
    /// Why the ambassador answered by itself (timeout, unreachable upstream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// The sending side of the access log; cheap to share.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread on stdout.
    pub fn stdout() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&dropped);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&rx, &counter))?;
        Ok(Self { tx, dropped })
    }

    /// Queues one line; never blocks.
    pub fn record(&self, entry: &Entry<'_>) {
        let mut line = Vec::with_capacity(160);
        if serde_json::to_writer(&mut line, entry).is_err() {
            return;
        }
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Milliseconds since the Unix epoch, for `ts_ms`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn write_lines(rx: &Receiver<Vec<u8>>, dropped: &AtomicU64) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(first) = rx.recv() {
        let mut ok = out.write_all(&first).is_ok();
        while let Ok(line) = rx.try_recv() {
            ok &= out.write_all(&line).is_ok();
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note = format!("{{\"ts_ms\":{},\"dropped_log_lines\":{lost}}}\n", now_ms());
            ok &= out.write_all(note.as_bytes()).is_ok();
        }
        if !(ok && out.flush().is_ok()) {
            // stdout is gone (closed pipe): nothing left to log to, but the proxy keeps serving.
            while rx.recv().is_ok() {}
            return;
        }
    }
}
