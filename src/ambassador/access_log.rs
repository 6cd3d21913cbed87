//! One JSON line per proxied request on stdout, written off the request path.
//!
//! Requests serialize their line straight into a shared buffer; a dedicated thread swaps the buffer out and writes
//! it with one `write`, then pauses briefly so that under load lines pile up into large batches. Waking a writer
//! for every line would cost a context switch per request on the one CPU a sidecar usually gets. A slow reader of
//! stdout (the container runtime) can never stall the proxy: past a bound, lines are dropped and counted instead.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bytes that may wait for the writer before new lines are dropped.
const MAX_PENDING: usize = 4 << 20;
/// How long the writer lets lines accumulate after each write; bounds how late a line can appear. At 20 ms a
/// proxy answering 20,000 requests a second writes about 400 lines at once, 50 writes a second; at 5 ms the writes
/// (and the wake-ups of whatever reads stdout) were four times as many for the same bytes.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// `protocol` of a plain HTTP/1.1 request.
pub const HTTP1: &str = "http/1.1";
/// `protocol` of an HTTP/2 request that is not gRPC.
pub const H2: &str = "h2";
/// `protocol` of a gRPC call (HTTP/2, `content-type: application/grpc`).
pub const GRPC: &str = "grpc";
/// `protocol` of a relayed WebSocket (HTTP/1.1 `Upgrade: websocket`).
pub const WEBSOCKET: &str = "websocket";

/// What is logged about one request.
#[derive(Debug, serde::Serialize)]
pub struct Entry<'a> {
    /// Milliseconds since the Unix epoch when the line was made.
    pub ts_ms: u64,
    /// Request method.
    pub method: &'a str,
    /// Request path (the query is left out: it may carry secrets).
    pub path: &'a str,
    /// What the app spoke: `http/1.1`, `h2`, `grpc` or `websocket`.
    pub protocol: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// A gRPC call's final status code (from the trailers, or the ambassador's own answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u16>,
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

impl Entry<'_> {
    /// Appends the entry as one JSON line, the same text `serde_json` makes of it (the derived `Serialize` stays
    /// the definition), without going through its serializer: field names are constants and numbers go through
    /// `itoa`, which takes about half the time on the request path. Strings that need no escaping, which is
    /// every method and protocol and almost every path, are copied as they are.
    fn write_line(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(b"{\"ts_ms\":");
        out.extend_from_slice(digits.format(self.ts_ms).as_bytes());
        out.extend_from_slice(b",\"method\":");
        write_str(out, self.method);
        out.extend_from_slice(b",\"path\":");
        write_str(out, self.path);
        out.extend_from_slice(b",\"protocol\":");
        write_str(out, self.protocol);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(digits.format(self.status).as_bytes());
        if let Some(grpc_status) = self.grpc_status {
            out.extend_from_slice(b",\"grpc_status\":");
            out.extend_from_slice(digits.format(grpc_status).as_bytes());
        }
        out.extend_from_slice(b",\"upstream_ms\":");
        // Floats as serde_json writes them (shortest round-trip form; `null` if not finite).
        if serde_json::to_writer(&mut *out, &self.upstream_ms).is_err() {
            out.extend_from_slice(b"null");
        }
        if let Some(bytes_in) = self.bytes_in {
            out.extend_from_slice(b",\"bytes_in\":");
            out.extend_from_slice(digits.format(bytes_in).as_bytes());
        }
        if let Some(bytes_out) = self.bytes_out {
            out.extend_from_slice(b",\"bytes_out\":");
            out.extend_from_slice(digits.format(bytes_out).as_bytes());
        }
        out.extend_from_slice(b",\"retries\":");
        out.extend_from_slice(digits.format(self.retries).as_bytes());
        if let Some(error) = self.error {
            out.extend_from_slice(b",\"error\":");
            write_str(out, error);
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Appends `text` as a JSON string: as it is when nothing in it needs escaping, else through `serde_json`.
fn write_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, text).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    dropped: AtomicU64,
    /// Set when stdout is gone or the log is closing; no more lines are taken.
    closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while holding the lock can only have left a partial line; the buffer itself is still usable.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The access log; cheap to share between connections.
#[derive(Debug)]
pub struct AccessLog {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl AccessLog {
    /// Starts the writer thread on stdout.
    pub fn stdout() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let for_writer = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_batches(&for_writer, &mut std::io::stdout()))?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues one line; never blocks on I/O.
    pub fn record(&self, entry: &Entry<'_>) {
        if self.shared.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut pending = self.shared.lock();
        if pending.len() > MAX_PENDING {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = pending.is_empty();
        entry.write_line(&mut pending);
        drop(pending);
        if was_empty {
            self.shared.wake.notify_one();
        }
    }

    /// Writes whatever is queued and stops the writer; later lines are discarded.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.wake.notify_one();
        let writer = self.writer.lock().ok().and_then(|mut slot| slot.take());
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

/// Milliseconds since the Unix epoch, for `ts_ms`.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn write_batches(shared: &Shared, out: &mut impl Write) {
    let mut batch = Vec::with_capacity(64 * 1024);
    loop {
        {
            let mut pending = shared.lock();
            while pending.is_empty() && !shared.closed.load(Ordering::Relaxed) {
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            std::mem::swap(&mut *pending, &mut batch);
        }
        let closing = shared.closed.load(Ordering::Relaxed);
        let lost = shared.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(batch, "{{\"ts_ms\":{},\"dropped_log_lines\":{lost}}}", now_ms());
        }
        if out.write_all(&batch).and_then(|()| out.flush()).is_err() {
            // stdout is gone (closed pipe): nothing left to log to, but the proxy keeps serving.
            shared.closed.store(true, Ordering::Relaxed);
            shared.lock().clear();
            return;
        }
        batch.clear();
        if closing && shared.lock().is_empty() {
            return;
        }
        std::thread::sleep(BATCH_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry<'_> {
        Entry {
            ts_ms: 1,
            method: "GET",
            path,
            protocol: HTTP1,
            status: 200,
            grpc_status: None,
            upstream_ms: 0.5,
            bytes_in: None,
            bytes_out: Some(2),
            retries: 0,
            error: None,
        }
    }

    #[test]
    fn writes_every_queued_line_before_closing() {
        let shared = Arc::new(Shared::default());
        let log = AccessLog {
            shared: Arc::clone(&shared),
            writer: Mutex::new(None),
        };
        for i in 0..100 {
            log.record(&entry(&format!("/p{i}")));
        }
        shared.closed.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        write_batches(&shared, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 100);
        assert_eq!(
            lines[0],
            r#"{"ts_ms":1,"method":"GET","path":"/p0","protocol":"http/1.1","status":200,"upstream_ms":0.5,"bytes_out":2,"retries":0}"#
        );
        log.record(&entry("/after-close"));
        assert!(shared.lock().is_empty());
    }

    #[test]
    fn writes_what_serde_json_writes() {
        let paths = [
            "/",
            "/a b/\u{e9}t\u{e9}",
            "/q\"uote\\back",
            "/tab\there",
            "/\u{1}ctl",
            "",
        ];
        let floats = [0.0, 0.5, 1.0, 12.345678, 1e-7, 1e21, f64::NAN, f64::INFINITY];
        for (i, path) in paths.iter().enumerate() {
            for (j, upstream_ms) in floats.iter().enumerate() {
                let entry = Entry {
                    ts_ms: 1_765_000_000_000 + i as u64,
                    method: "PATCH",
                    path,
                    protocol: [HTTP1, H2, GRPC, WEBSOCKET][j % 4],
                    status: 503,
                    grpc_status: (j % 2 == 0).then_some(14),
                    upstream_ms: *upstream_ms,
                    bytes_in: (j % 3 == 0).then_some(u64::MAX),
                    bytes_out: (j % 3 == 1).then_some(0),
                    retries: j as u32,
                    error: (i % 2 == 0).then_some(*path),
                };
                let mut ours = Vec::new();
                entry.write_line(&mut ours);
                let mut theirs = serde_json::to_vec(&entry).unwrap();
                theirs.push(b'\n');
                assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
            }
        }
    }
}
