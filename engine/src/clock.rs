//! Time: the [`Clock`] seam and the hybrid logical clock.
//!
//! Invariants of [`HybridClock`]: every timestamp it issues is greater than
//! every timestamp it issued or observed before — including before a restart,
//! provided the caller persists [`HybridClock::high_water`] with the writes
//! stamped by it and passes it back to [`HybridClock::new`]. A remote or
//! source timestamp more than `max_skew` ahead of the local physical clock is
//! never allowed to drag the clock forward: remote ones are refused
//! ([`ClockSkew`]), source ones are clamped, and both are counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ids::Hlc;

/// A source of physical time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// The current physical time.
    fn now_millis(&self) -> u64;
}

/// `d` in whole milliseconds, saturating at `u64::MAX`.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis)
    }
}

/// A clock the caller sets by hand (tests, simulation). Clones share time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `millis`.
    pub fn new(millis: u64) -> Self {
        Self(Arc::new(AtomicU64::new(millis)))
    }

    /// Sets the reading (it may go backwards, as real clocks do).
    pub fn set(&self, millis: u64) {
        self.0.store(millis, Ordering::SeqCst);
    }

    /// Moves the reading forward.
    pub fn advance(&self, by: Duration) {
        let ms = millis(by);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A remote timestamp was too far ahead of the local clock to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "remote timestamp {remote} is {ahead_ms} ms ahead of the local clock ({local_ms} ms), beyond max_clock_skew {max_skew_ms} ms; retry later or fix the peer's clock"
)]
pub struct ClockSkew {
    /// The refused timestamp.
    pub remote: Hlc,
    /// The local physical time.
    pub local_ms: u64,
    /// How far ahead it was.
    pub ahead_ms: u64,
    /// The configured bound.
    pub max_skew_ms: u64,
}

/// A hybrid logical clock over a physical [`Clock`].
#[derive(Debug)]
pub struct HybridClock<C> {
    clock: C,
    last: Hlc,
    max_skew_ms: u64,
    skew_events: u64,
}

impl<C: Clock> HybridClock<C> {
    /// A clock that will issue timestamps above `high_water` (the mark
    /// persisted before a restart; `Hlc::default()` for a new node).
    pub fn new(clock: C, high_water: Hlc, max_skew: Duration) -> Self {
        Self {
            clock,
            last: high_water,
            max_skew_ms: millis(max_skew),
            skew_events: 0,
        }
    }

    /// A fresh timestamp for a local event.
    pub fn now(&mut self) -> Hlc {
        let pt = self.clock.now_millis();
        self.advance_to(Hlc::new(pt, 0))
    }

    /// A fresh timestamp for a local event that a source says happened at
    /// `source_millis`: at least that time, at least the local clock, above
    /// everything issued. A source time beyond the skew bound is clamped to
    /// the bound and counted.
    pub fn stamp_source(&mut self, source_millis: u64) -> Hlc {
        let pt = self.clock.now_millis();
        let bound = pt.saturating_add(self.max_skew_ms);
        let source = if source_millis > bound {
            self.skew_events += 1;
            bound
        } else {
            source_millis
        };
        self.advance_to(Hlc::new(pt.max(source), 0))
    }

    /// Takes a remote timestamp into account (a delta or heartbeat from a
    /// peer), so that later local events order after it. Refused, without
    /// moving the clock, when it is beyond the skew bound.
    pub fn observe(&mut self, remote: Hlc) -> Result<(), ClockSkew> {
        let pt = self.clock.now_millis();
        if remote.millis() > pt.saturating_add(self.max_skew_ms) {
            self.skew_events += 1;
            return Err(ClockSkew {
                remote,
                local_ms: pt,
                ahead_ms: remote.millis() - pt,
                max_skew_ms: self.max_skew_ms,
            });
        }
        if remote > self.last {
            self.last = remote;
        }
        Ok(())
    }

    /// The greatest timestamp issued or observed: persist it with the
    /// writes it stamped.
    pub fn high_water(&self) -> Hlc {
        self.last
    }

    /// How many remote or source timestamps were refused or clamped for
    /// being beyond the skew bound.
    pub fn skew_events(&self) -> u64 {
        self.skew_events
    }

    /// The physical clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    fn advance_to(&mut self, candidate: Hlc) -> Hlc {
        let next = if candidate > self.last {
            candidate
        } else if self.last.logical() < u16::MAX {
            Hlc(self.last.0 + 1)
        } else {
            // Logical counter exhausted within one millisecond: borrow the
            // next millisecond rather than wrap.
            Hlc::new(self.last.millis() + 1, 0)
        };
        self.last = next;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_secs(10);

    #[test]
    fn never_goes_backwards_even_when_the_wall_clock_does() {
        let wall = ManualClock::new(1_000);
        let mut c = HybridClock::new(wall.clone(), Hlc::default(), SKEW);
        let a = c.now();
        wall.set(500);
        let b = c.now();
        assert!(b > a, "{b:?} must follow {a:?}");
        wall.set(2_000);
        assert_eq!(c.now(), Hlc::new(2_000, 0));
    }

    #[test]
    fn resumes_above_the_persisted_high_water_mark() {
        let wall = ManualClock::new(1_000);
        let mut c = HybridClock::new(wall.clone(), Hlc::default(), SKEW);
        for _ in 0..5 {
            c.now();
        }
        let mark = c.high_water();
        // Restart with a wall clock that went back an hour.
        wall.set(0);
        let mut restarted = HybridClock::new(wall, mark, SKEW);
        assert!(restarted.now() > mark);
    }

    #[test]
    fn refuses_remote_timestamps_beyond_the_skew_bound() {
        let wall = ManualClock::new(100_000);
        let mut c = HybridClock::new(wall, Hlc::default(), SKEW);
        let far = Hlc::new(100_000 + 60_000, 0);
        let err = c.observe(far).expect_err("beyond skew");
        assert_eq!(err.ahead_ms, 60_000);
        assert_eq!(c.skew_events(), 1);
        assert!(c.now() < far, "a refused timestamp must not drag the clock");
        let near = Hlc::new(105_000, 3);
        c.observe(near).expect("within skew");
        assert!(c.now() > near);
    }

    #[test]
    fn clamps_source_timestamps_beyond_the_skew_bound() {
        let wall = ManualClock::new(100_000);
        let mut c = HybridClock::new(wall, Hlc::default(), SKEW);
        let past = c.stamp_source(50_000);
        assert_eq!(past.millis(), 100_000);
        let clamped = c.stamp_source(10_000_000);
        assert_eq!(clamped.millis(), 110_000);
        assert_eq!(c.skew_events(), 1);
    }

    #[test]
    fn logical_overflow_borrows_the_next_millisecond() {
        let wall = ManualClock::new(7);
        let mut c = HybridClock::new(wall, Hlc::new(7, u16::MAX - 1), SKEW);
        assert_eq!(c.now(), Hlc::new(7, u16::MAX));
        assert_eq!(c.now(), Hlc::new(8, 0));
    }
}
