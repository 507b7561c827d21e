//! The penalty box for misbehaving peers: a peer whose shipping streams are
//! refused again and again (invalid messages, a region it may not speak
//! for, another cluster) is refused at once, without decoding, logging or
//! applying anything, for a while that doubles with each penalty.
//!
//! Pure: time is passed in. Peers are named by the caller — by their
//! certificate under mutual TLS (authenticated, so one peer cannot get
//! another penalised), else by address and claimed region.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// When a peer is penalised, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PenaltyRules {
    /// Refusals within [`PenaltyRules::window`] that put a peer in the box.
    pub after: u32,
    /// The window the refusals are counted in.
    pub window: Duration,
    /// The first penalty; each further one doubles it.
    pub initial: Duration,
    /// The longest penalty.
    pub max: Duration,
}

#[derive(Debug, Default)]
struct Record {
    /// Refusals since `since`.
    strikes: u32,
    since: Option<Instant>,
    /// Penalties in a row (no quiet `max` between them).
    penalties: u32,
    until: Option<Instant>,
}

/// Every peer's refusals and penalty (see the module docs).
#[derive(Debug)]
pub struct PenaltyBox {
    rules: PenaltyRules,
    peers: HashMap<String, Record>,
}

/// How many peers the box remembers at most; the oldest-quiet ones are
/// forgotten first, so a flood of names cannot grow it without bound.
const MAX_PEERS: usize = 4096;

impl PenaltyBox {
    /// An empty box.
    pub fn new(rules: PenaltyRules) -> Self {
        Self {
            rules,
            peers: HashMap::new(),
        }
    }

    /// How long `peer` stays refused from `now`, if it is in the box.
    pub fn penalty(&self, peer: &str, now: Instant) -> Option<Duration> {
        let until = self.peers.get(peer)?.until?;
        (until > now).then(|| until - now)
    }

    /// Counts one refusal of `peer`; returns the penalty it starts, if this
    /// refusal is the one too many.
    pub fn strike(&mut self, peer: &str, now: Instant) -> Option<Duration> {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(peer) {
            self.forget_quiet(now);
        }
        let rules = self.rules;
        let record = self.peers.entry(peer.to_owned()).or_default();
        if record
            .since
            .is_none_or(|s| now.duration_since(s) > rules.window)
        {
            record.strikes = 0;
            record.since = Some(now);
        }
        // A quiet spell as long as the longest penalty forgives the past.
        if record
            .until
            .is_some_and(|u| now.saturating_duration_since(u) > rules.max)
        {
            record.penalties = 0;
        }
        record.strikes += 1;
        if record.strikes < rules.after {
            return None;
        }
        let factor = 1u32 << record.penalties.min(16);
        let penalty = rules.initial.saturating_mul(factor).min(rules.max);
        record.penalties = record.penalties.saturating_add(1);
        record.strikes = 0;
        record.since = None;
        record.until = Some(now + penalty);
        Some(penalty)
    }

    /// Drops the peers with no recent refusal and no penalty running.
    fn forget_quiet(&mut self, now: Instant) {
        let window = self.rules.window.max(self.rules.max);
        self.peers.retain(|_, r| {
            r.until.is_some_and(|u| u > now)
                || r.since.is_some_and(|s| now.duration_since(s) <= window)
        });
        if self.peers.len() >= MAX_PEERS {
            self.peers.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> PenaltyRules {
        PenaltyRules {
            after: 3,
            window: Duration::from_secs(10),
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
        }
    }

    #[test]
    fn the_refusal_too_many_starts_a_penalty_that_doubles_up_to_the_max() {
        let mut b = PenaltyBox::new(rules());
        let t0 = Instant::now();
        assert_eq!(b.strike("x", t0), None);
        assert_eq!(b.strike("x", t0), None);
        assert_eq!(b.penalty("x", t0), None);
        assert_eq!(b.strike("x", t0), Some(Duration::from_secs(1)));
        assert_eq!(b.penalty("x", t0), Some(Duration::from_secs(1)));
        assert_eq!(b.penalty("other", t0), None, "only the offender");
        let mut t = t0 + Duration::from_secs(2);
        assert_eq!(b.penalty("x", t), None, "the penalty ends");
        let mut last = None;
        for _ in 0..5 {
            for _ in 0..3 {
                last = b.strike("x", t);
            }
            t += Duration::from_millis(100);
        }
        // 2 s, 4 s, 8 s, then capped at 8 s.
        assert_eq!(last, Some(Duration::from_secs(8)));
    }

    #[test]
    fn refusals_spread_wider_than_the_window_and_a_quiet_spell_are_forgiven() {
        let mut b = PenaltyBox::new(rules());
        let mut t = Instant::now();
        for _ in 0..10 {
            assert_eq!(b.strike("x", t), None);
            t += Duration::from_secs(6);
        }
        for _ in 0..3 {
            b.strike("x", t);
        }
        assert_eq!(b.penalty("x", t), Some(Duration::from_secs(1)));
        for _ in 0..3 {
            b.strike("x", t);
        }
        assert_eq!(b.penalty("x", t), Some(Duration::from_secs(2)));
        // Quiet for longer than the longest penalty: back to the first.
        t += Duration::from_secs(20);
        for _ in 0..3 {
            b.strike("x", t);
        }
        assert_eq!(b.penalty("x", t), Some(Duration::from_secs(1)));
    }

    #[test]
    fn a_flood_of_names_does_not_grow_the_box_without_bound() {
        let mut b = PenaltyBox::new(rules());
        let t = Instant::now();
        for i in 0..3 * MAX_PEERS {
            b.strike(&format!("peer-{i}"), t);
        }
        assert!(b.peers.len() <= MAX_PEERS, "{}", b.peers.len());
    }
}
