//! Driving an upstream connection and what is read from it from one task, without waking that task for the wakes
//! the two sides give each other while it polls them ([`Wakers`]). Kept apart from `upstream`, which dials, pools
//! and hands out the connections this drives.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// How many times one pass of [`Wakers::drive`] may poll both sides again before it leaves the rest to the scheduler.
const ROUNDS: usize = 8;

/// The wakers an upstream connection and what is read from it (the answer to a request, the response body) are
/// polled with. Each side wakes the other as part of every exchange: handing hyper a request wakes the connection,
/// the connection wakes the request with its answer, reading the body wakes the connection to send more. The task
/// that polls both is the one woken, while it is still polling, so each such wake cost a whole extra poll of the
/// client connection's task (its HTTP/1.1 server, the handler, the body) after it had already seen the change: about
/// 1.4 extra polls per request. While [`Wakers::drive`] polls the two sides, a wake only marks the side woken, and
/// the pass polls that side again itself; a wake at any other time wakes the task as before.
pub(super) struct Wakers {
    shared: Arc<Shared>,
    /// The connection's waker.
    conn: Waker,
    /// The waker of what is read from the connection.
    read: Waker,
}

struct Shared {
    /// The waker of the task that polls the connection now.
    task: Mutex<Option<Waker>>,
    /// A pass of [`Wakers::drive`] is polling; wakes are only marked.
    polling: AtomicBool,
    conn_woken: AtomicBool,
    read_woken: AtomicBool,
}

/// One side's waker.
struct Side {
    shared: Arc<Shared>,
    conn: bool,
}

impl Wake for Side {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let shared = &self.shared;
        let woken = if self.conn {
            &shared.conn_woken
        } else {
            &shared.read_woken
        };
        // Sequentially consistent with `drive`'s own two steps: either it sees the mark, or this sees that it is no
        // longer polling and wakes the task.
        woken.store(true, Ordering::SeqCst);
        if shared.polling.load(Ordering::SeqCst) {
            return;
        }
        let task = shared.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl Wakers {
    pub(super) fn new() -> Self {
        let shared = Arc::new(Shared {
            task: Mutex::new(None),
            polling: AtomicBool::new(false),
            conn_woken: AtomicBool::new(false),
            read_woken: AtomicBool::new(false),
        });
        let side = |conn| {
            Waker::from(Arc::new(Side {
                shared: Arc::clone(&shared),
                conn,
            }))
        };
        Self {
            conn: side(true),
            read: side(false),
            shared,
        }
    }

    /// Makes `task` the one woken from now on.
    fn register(&self, task: &Waker) {
        let mut current = self.shared.task.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !current.as_ref().is_some_and(|current| current.will_wake(task)) {
            *current = Some(task.clone());
        }
    }

    /// Runs `f`, which wakes a side that is polled right after in the same pass (handing the connection a request):
    /// its wake is only marked, as during [`Wakers::drive`], which clears it when it polls that side.
    pub(super) fn quietly<T>(&self, f: impl FnOnce() -> T) -> T {
        self.shared.polling.store(true, Ordering::SeqCst);
        let out = f();
        self.shared.polling.store(false, Ordering::SeqCst);
        out
    }

    /// Polls the connection alone.
    pub(super) fn poll_conn<C: Future<Output = hyper::Result<()>> + ?Sized>(
        &self,
        cx: &Context<'_>,
        conn: &mut Pin<Box<C>>,
    ) -> Poll<hyper::Result<()>> {
        self.register(cx.waker());
        conn.as_mut().poll(&mut Context::from_waker(&self.conn))
    }

    /// Polls `read` and the connection until `read` is ready or neither side woke the other; `Ready(None)` when the
    /// connection has ended and `read` could not finish.
    pub(super) fn drive<T, C: Future<Output = hyper::Result<()>> + ?Sized>(
        &self,
        cx: &Context<'_>,
        conn: &mut Pin<Box<C>>,
        done: &mut bool,
        mut read: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<Option<T>> {
        self.register(cx.waker());
        let shared = &*self.shared;
        let mut read_cx = Context::from_waker(&self.read);
        let mut conn_cx = Context::from_waker(&self.conn);
        shared.polling.store(true, Ordering::SeqCst);
        let mut rounds = 0;
        let outcome = loop {
            shared.read_woken.store(false, Ordering::SeqCst);
            if let Poll::Ready(out) = read(&mut read_cx) {
                break Poll::Ready(Some(out));
            }
            if *done {
                break Poll::Ready(None);
            }
            shared.conn_woken.store(false, Ordering::SeqCst);
            if let Poll::Ready(result) = conn.as_mut().poll(&mut conn_cx) {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream connection ended");
                }
                *done = true;
                // The connection has ended, which settles anything it held.
                shared.read_woken.store(false, Ordering::SeqCst);
                break Poll::Ready(match read(&mut read_cx) {
                    Poll::Ready(out) => Some(out),
                    Poll::Pending => None,
                });
            }
            let woken = shared.read_woken.load(Ordering::SeqCst) || shared.conn_woken.load(Ordering::SeqCst);
            rounds += 1;
            if !woken || rounds == ROUNDS {
                break Poll::Pending;
            }
        };
        shared.polling.store(false, Ordering::SeqCst);
        // A wake marked after the last look (from another thread, or past the last round) still wakes the task.
        if outcome.is_pending()
            && (shared.read_woken.load(Ordering::SeqCst) || shared.conn_woken.load(Ordering::SeqCst))
        {
            cx.waker().wake_by_ref();
        }
        outcome
    }
}
