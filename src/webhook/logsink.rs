//! The webhook's log lines, written to stderr in batches.
//!
//! One log line per review, each its own `write(2)` to stderr, cost as much CPU as a quarter of the review itself
//! (`make bench`: ≈ 10 µs of ≈ 80). Like nginx's `access_log … buffer= flush=`, lines are collected in memory and
//! written together: as soon as [`FLUSH_AT`] bytes are waiting, and otherwise at most `every` after a line was
//! logged (100 ms in the webhook). Every line is written, in order: [`LogSink::flush`] runs when the server stops
//! and from the panic hook, so nothing is lost but to SIGKILL, and then at most `every`'s worth.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::Duration,
};

use tracing_subscriber::fmt::MakeWriter;

/// Bytes waiting that trigger a write at once.
pub const FLUSH_AT: usize = 32 * 1024;

/// Where lines wait, shared by the loggers and the flusher thread.
struct Shared {
    pending: Mutex<Vec<u8>>,
    /// Signalled when the first line of a batch arrives, so that an idle flusher sleeps without polling.
    arrived: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A logger that panicked mid-line leaves at worst a partial line: keep logging.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes out what is waiting. The output is locked before the batch is taken, so batches never reorder.
    fn write_out(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let batch = std::mem::take(&mut *self.lock());
        if !batch.is_empty() {
            // stderr gone (the runtime closed the pipe): nothing useful can be done with a log line.
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
    }
}

/// A `MakeWriter` for tracing-subscriber that batches lines; cheap to clone.
#[derive(Clone)]
pub struct LogSink(Arc<Shared>);

impl LogSink {
    /// Batches lines for `out`, writing each batch at most `every` after its first line.
    pub fn new(out: Box<dyn Write + Send>, every: Duration) -> LogSink {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            arrived: Condvar::new(),
            out: Mutex::new(out),
        });
        let flusher = shared.clone();
        std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                {
                    let mut pending = flusher.lock();
                    while pending.is_empty() {
                        pending = flusher.arrived.wait(pending).unwrap_or_else(|e| e.into_inner());
                    }
                }
                std::thread::sleep(every);
                flusher.write_out();
            })
            .expect("the log flusher thread starts");
        LogSink(shared)
    }

    /// Writes out every line logged so far.
    pub fn flush(&self) {
        self.0.write_out();
    }
}

/// One log line on its way into the batch.
pub struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.0.lock();
        if pending.is_empty() {
            self.0.arrived.notify_one();
        }
        pending.extend_from_slice(line);
        let full = pending.len() >= FLUSH_AT;
        drop(pending);
        if full {
            self.0.write_out();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn log(sink: &LogSink, line: &str) {
        sink.make_writer().write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn lines_appear_in_order_after_the_interval_without_a_flush() {
        let out = Captured::default();
        let sink = LogSink::new(Box::new(out.clone()), Duration::from_millis(20));
        log(&sink, "one\n");
        log(&sink, "two\n");
        let started = Instant::now();
        while out.text().is_empty() {
            assert!(started.elapsed() < Duration::from_secs(10), "lines never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.text(), "one\ntwo\n");
        log(&sink, "three\n");
        while out.text().len() < "one\ntwo\nthree\n".len() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a later batch never written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.text(), "one\ntwo\nthree\n");
    }

    #[test]
    fn flush_writes_everything_at_once() {
        let out = Captured::default();
        let sink = LogSink::new(Box::new(out.clone()), Duration::from_secs(3600));
        log(&sink, "a\n");
        assert_eq!(out.text(), "");
        sink.flush();
        assert_eq!(out.text(), "a\n");
    }

    #[test]
    fn a_full_batch_is_written_without_waiting() {
        let out = Captured::default();
        let sink = LogSink::new(Box::new(out.clone()), Duration::from_secs(3600));
        let line = "x".repeat(99) + "\n";
        for _ in 0..(FLUSH_AT / line.len() + 1) {
            log(&sink, &line);
        }
        let text = out.text();
        assert!(text.len() >= FLUSH_AT && text.len() % line.len() == 0, "{}", text.len());
    }
}
