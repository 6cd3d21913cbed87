//! The timer hyper's HTTP/1.1 server bounds the wait for each request head with (slowloris protection, and the idle
//! time of a kept-alive connection). hyper asks for a new sleep for every request and drops it once the head is in;
//! with hyper_util's `TokioTimer` each one is a tokio timer registered in the runtime's timer wheel at its first
//! poll and taken out again when dropped. [`ReusingTimer`] keeps the tokio timers hyper drops, still registered, and
//! hands them out again: the next deadline is later, and moving a registered timer later is one atomic update.
//! The bound itself is the same.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// Timers kept for reuse; more than the connections waiting for a head at once is never needed.
const KEEP: usize = 256;

type Kept = Pin<Box<tokio::time::Sleep>>;

/// A [`Timer`] on tokio's clock that reuses the tokio timers of the sleeps hyper drops.
#[derive(Debug, Clone, Default)]
pub struct ReusingTimer {
    free: Arc<Mutex<Vec<Kept>>>,
}

impl ReusingTimer {
    fn take(&self) -> Option<Kept> {
        self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop()
    }
}

/// One sleep; its tokio timer goes back to the timer's free list when dropped before its deadline.
struct ReusedSleep {
    inner: Option<Kept>,
    free: Arc<Mutex<Vec<Kept>>>,
}

impl Timer for ReusingTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let deadline = tokio::time::Instant::from_std(deadline);
        let inner = match self.take() {
            Some(mut kept) => {
                kept.as_mut().reset(deadline);
                kept
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        Box::pin(ReusedSleep {
            inner: Some(inner),
            free: Arc::clone(&self.free),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<ReusedSleep>() {
            Some(mut reused) => {
                if let Some(inner) = reused.inner.as_mut() {
                    inner.as_mut().reset(tokio::time::Instant::from_std(new_deadline));
                }
            }
            None => *sleep = self.sleep_until(new_deadline),
        }
    }

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl Future for ReusedSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // `ReusedSleep` is `Unpin` (the tokio timer is boxed).
        match self.get_mut().inner.as_mut() {
            Some(inner) => inner.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl Sleep for ReusedSleep {}

impl Drop for ReusedSleep {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else { return };
        // A timer that fired has left the wheel; a new one costs the same as re-arming it.
        if inner.is_elapsed() {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if free.len() < KEEP {
            free.push(inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_reused_timer_fires_at_its_new_deadline_and_not_at_the_old_one() {
        let timer = ReusingTimer::default();
        let mut first = timer.sleep(Duration::from_secs(5));
        // Registered, then dropped before its deadline: kept.
        assert!(futures_poll(&mut first).is_pending());
        drop(first);
        assert_eq!(timer.free.lock().unwrap().len(), 1);
        let mut second = timer.sleep(Duration::from_secs(30));
        assert_eq!(timer.free.lock().unwrap().len(), 0);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            futures_poll(&mut second).is_pending(),
            "the first deadline must not fire it"
        );
        tokio::time::advance(Duration::from_secs(21)).await;
        assert!(futures_poll(&mut second).is_ready());
        drop(second);
        // Elapsed: not kept.
        assert_eq!(timer.free.lock().unwrap().len(), 0);
        // A reset moves the deadline of a sleep in use.
        let mut third = timer.sleep(Duration::from_secs(1));
        timer.reset(&mut third, timer.now() + Duration::from_secs(60));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(futures_poll(&mut third).is_pending());
        third.await;
    }

    fn futures_poll(sleep: &mut Pin<Box<dyn Sleep>>) -> Poll<()> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        sleep.as_mut().poll(&mut cx)
    }
}
