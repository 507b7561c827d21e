//! Reconnect pacing of a peer link: exponential backoff with full jitter,
//! and a circuit breaker. Pure: the caller passes the time and the random
//! draw, so tests pin both.
//!
//! Full jitter (delay uniform in `[0, min(max, initial·2^attempt)]`)
//! spreads the reconnects of many links after a shared outage; the cap
//! (≈2 s by default) bounds how long a healed partition waits.
//!
//! The breaker opens after `threshold` consecutive failures; while open, no
//! attempt is made until `open_for` has passed, then one trial (half-open)
//! either closes it or opens it again. Operators see its state in
//! `replctl status` and the metrics.

use std::time::Duration;

use tributary_engine::clock::millis;

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays start at `initial` and double up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling of the next delay (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay, given a uniform draw `unit` in `[0, 1)`; each call
    /// doubles the ceiling until `max`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// A success: the next failure starts again from `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The state of a [`CircuitBreaker`], as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Attempts go ahead.
    Closed,
    /// Attempts are refused until the given time (ms).
    Open {
        /// When a trial is allowed again.
        until_millis: u64,
    },
    /// One trial attempt is under way.
    HalfOpen,
}

impl CircuitState {
    /// `closed`, `open` or `half_open`.
    pub fn name(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open { .. } => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// A circuit breaker over consecutive failures.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    open_for: Duration,
    failures: u32,
    state: CircuitState,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            failures: 0,
            state: CircuitState::Closed,
        }
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// How long to wait before an attempt is allowed at `now_millis`
    /// (zero: go ahead; an open breaker whose time is up turns half-open).
    pub fn wait(&mut self, now_millis: u64) -> Duration {
        match self.state {
            CircuitState::Open { until_millis } if now_millis < until_millis => {
                Duration::from_millis(until_millis - now_millis)
            }
            CircuitState::Open { .. } => {
                self.state = CircuitState::HalfOpen;
                Duration::ZERO
            }
            _ => Duration::ZERO,
        }
    }

    /// The attempt succeeded: close.
    pub fn on_success(&mut self) {
        self.failures = 0;
        self.state = CircuitState::Closed;
    }

    /// The attempt failed at `now_millis`; returns true if this opened the
    /// breaker.
    pub fn on_failure(&mut self, now_millis: u64) -> bool {
        self.failures = self.failures.saturating_add(1);
        let open = self.state == CircuitState::HalfOpen || self.failures >= self.threshold;
        let was_open = matches!(self.state, CircuitState::Open { .. });
        if open {
            let until_millis = now_millis.saturating_add(millis(self.open_for));
            self.state = CircuitState::Open { until_millis };
        }
        open && !was_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_full_jitter() {
        let mut b = Backoff::new(ms(50), ms(2000));
        let ceilings: Vec<Duration> = (0..8)
            .map(|_| {
                let c = b.ceiling();
                assert_eq!(b.clone().next_delay(1.0), c, "a draw of 1 is the ceiling");
                assert_eq!(
                    b.clone().next_delay(0.0),
                    Duration::ZERO,
                    "full jitter starts at 0"
                );
                b.next_delay(0.5);
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            [
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(2000)
            ]
        );
        b.reset();
        assert_eq!(b.ceiling(), ms(50));
    }

    #[test]
    fn backoff_survives_many_attempts() {
        let mut b = Backoff::new(ms(50), ms(2000));
        for _ in 0..1000 {
            assert!(b.next_delay(1.0) <= ms(2000));
        }
    }

    #[test]
    fn breaker_opens_after_threshold_then_half_opens() {
        let mut c = CircuitBreaker::new(3, ms(1000));
        assert!(!c.on_failure(0));
        assert!(!c.on_failure(10));
        assert_eq!(c.wait(10), Duration::ZERO);
        assert!(c.on_failure(20), "third failure opens");
        assert_eq!(c.state().name(), "open");
        assert_eq!(c.wait(520), ms(500));
        assert_eq!(c.wait(1020), Duration::ZERO);
        assert_eq!(c.state(), CircuitState::HalfOpen);
        assert!(c.on_failure(1030), "a failed trial opens again");
        assert_eq!(c.wait(1030), ms(1000));
        assert_eq!(c.wait(2030), Duration::ZERO);
        c.on_success();
        assert_eq!(c.state(), CircuitState::Closed);
        assert_eq!(c.failures(), 0);
    }
}
