//! The circuit breaker: after `--breaker-failures` consecutive failures (connect errors, TLS errors, timeouts, 5xx
//! answers) the ambassador stops calling the upstream for `--breaker-cooldown` and answers 503 at once; then it
//! lets one trial request through, whose outcome closes the circuit or opens it for another cool-down.
//!
//! An upstream that is down makes every caller wait for a connect timeout or a 5xx, and each retry adds load to a
//! service that is already struggling. Failing fast gives the app a prompt answer it can act on, and gives the
//! upstream room to recover. The clock is passed in, so the state machine is unit-tested without waiting.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

/// What the breaker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Requests pass; `failures` consecutive ones have failed so far.
    Closed { failures: u32 },
    /// Requests are refused until `until`; the first one after it becomes the trial.
    Open { until: Instant },
    /// One trial request is in flight; the others are refused until it settles.
    Trial,
}

/// The breaker of one upstream; shared by every request.
#[derive(Debug)]
pub struct Breaker {
    /// Consecutive failures that open the circuit; 0 turns the breaker off.
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    /// 1 while the circuit is open or on trial, for the `circuit_open` metric.
    open: Gauge,
    /// Times the circuit opened.
    opened: Counter,
}

/// The breaker's answer to a new request.
#[derive(Debug)]
pub enum Admission<'a> {
    /// The request may go upstream; report its outcome on the ticket.
    Pass(Ticket<'a>),
    /// The circuit is open: answer 503 at once. The next trial is possible after `retry_in`.
    Refuse {
        /// Time left in the cool-down (zero while a trial is in flight).
        retry_in: Duration,
    },
}

/// A request's pass through the breaker. Dropping a trial ticket without an outcome (the client went away) lets
/// the next request be the trial instead.
#[derive(Debug)]
pub struct Ticket<'a> {
    breaker: Option<&'a Breaker>,
    trial: bool,
}

impl Breaker {
    /// A closed breaker; `threshold` 0 never opens. `open` and `opened` are its metrics.
    pub fn new(threshold: u32, cooldown: Duration, open: Gauge, opened: Counter) -> Self {
        Self {
            threshold,
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            open,
            opened,
        }
    }

    /// The consecutive failures that open the circuit.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value written whole; a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides whether a request arriving at `now` may go upstream.
    pub fn admit(&self, now: Instant) -> Admission<'_> {
        if self.threshold == 0 {
            return Admission::Pass(Ticket {
                breaker: None,
                trial: false,
            });
        }
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Admission::Pass(Ticket {
                breaker: Some(self),
                trial: false,
            }),
            State::Open { until } if now >= until => {
                *state = State::Trial;
                tracing::info!("circuit half-open: letting one trial request through");
                Admission::Pass(Ticket {
                    breaker: Some(self),
                    trial: true,
                })
            }
            State::Open { until } => Admission::Refuse { retry_in: until - now },
            State::Trial => Admission::Refuse {
                retry_in: Duration::ZERO,
            },
        }
    }

    fn settle(&self, trial: bool, success: bool, now: impl FnOnce() -> Instant) {
        let mut state = self.lock();
        match (*state, trial, success) {
            (State::Trial, true, true) => {
                *state = State::Closed { failures: 0 };
                self.open.set(0);
                tracing::info!("circuit closed: the trial request succeeded");
            }
            (State::Trial, true, false) => {
                *state = State::Open {
                    until: now() + self.cooldown,
                };
                tracing::warn!(
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "circuit open again: the trial request failed"
                );
            }
            (State::Closed { .. }, _, true) => *state = State::Closed { failures: 0 },
            (State::Closed { failures }, _, false) => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    *state = State::Open {
                        until: now() + self.cooldown,
                    };
                    self.open.set(1);
                    self.opened.inc();
                    tracing::warn!(
                        failures,
                        cooldown_ms = self.cooldown.as_millis() as u64,
                        "circuit open: answering 503 without calling the upstream"
                    );
                } else {
                    *state = State::Closed { failures };
                }
            }
            // Requests admitted before the circuit opened settle late; the trial alone decides from here.
            _ => {}
        }
    }
}

impl Ticket<'_> {
    /// Reports the request's outcome at `now`: `success` is false for connect errors, timeouts and 5xx answers.
    pub fn record(self, success: bool, now: Instant) {
        self.record_with(success, || now);
    }

    /// Records the outcome, reading the clock only when the outcome needs the time (a failure that may open the
    /// circuit); a success in the closed state, nearly every request, needs none.
    pub fn record_now(self, success: bool) {
        self.record_with(success, Instant::now);
    }

    fn record_with(mut self, success: bool, now: impl FnOnce() -> Instant) {
        if let Some(breaker) = self.breaker.take() {
            breaker.settle(self.trial, success, now);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let (Some(breaker), true) = (self.breaker, self.trial) {
            let mut state = breaker.lock();
            if *state == State::Trial {
                // Abandoned trial: the cool-down is over, so the next request may try.
                *state = State::Open { until: Instant::now() };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32) -> Breaker {
        Breaker::new(threshold, Duration::from_secs(10), Gauge::default(), Counter::default())
    }

    fn pass(breaker: &Breaker, now: Instant) -> Ticket<'_> {
        match breaker.admit(now) {
            Admission::Pass(ticket) => ticket,
            Admission::Refuse { retry_in } => panic!("refused, retry in {retry_in:?}"),
        }
    }

    fn refused(breaker: &Breaker, now: Instant) -> Duration {
        match breaker.admit(now) {
            Admission::Pass(_) => panic!("passed"),
            Admission::Refuse { retry_in } => retry_in,
        }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3);
        let t0 = Instant::now();
        pass(&b, t0).record(false, t0);
        pass(&b, t0).record(false, t0);
        pass(&b, t0).record(true, t0);
        pass(&b, t0).record(false, t0);
        pass(&b, t0).record(false, t0);
        assert_eq!(b.open.get(), 0);
        pass(&b, t0).record(false, t0);
        assert_eq!(b.open.get(), 1);
        assert_eq!(b.opened.get(), 1);
        assert_eq!(refused(&b, t0 + Duration::from_secs(4)), Duration::from_secs(6));
    }

    #[test]
    fn half_opens_after_cooldown_with_one_trial_then_closes_on_success() {
        let b = breaker(1);
        let t0 = Instant::now();
        pass(&b, t0).record(false, t0);
        let later = t0 + Duration::from_secs(10);
        let trial = pass(&b, later);
        assert_eq!(refused(&b, later), Duration::ZERO, "only one trial at a time");
        trial.record(true, later);
        assert_eq!(b.open.get(), 0);
        pass(&b, later).record(true, later);
    }

    #[test]
    fn failed_trial_opens_for_another_cooldown() {
        let b = breaker(1);
        let t0 = Instant::now();
        pass(&b, t0).record(false, t0);
        let t1 = t0 + Duration::from_secs(11);
        pass(&b, t1).record(false, t1);
        assert_eq!(refused(&b, t1 + Duration::from_secs(1)), Duration::from_secs(9));
        assert_eq!(b.opened.get(), 1, "reopening after a trial is the same outage");
    }

    #[test]
    fn abandoned_trial_lets_the_next_request_try() {
        let b = breaker(1);
        let t0 = Instant::now();
        pass(&b, t0).record(false, t0);
        drop(pass(&b, t0 + Duration::from_secs(10)));
        pass(&b, Instant::now() + Duration::from_secs(10)).record(true, t0);
        assert_eq!(b.open.get(), 0);
    }

    #[test]
    fn threshold_zero_never_opens() {
        let b = breaker(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            pass(&b, t0).record(false, t0);
        }
        assert_eq!(b.open.get(), 0);
    }
}
