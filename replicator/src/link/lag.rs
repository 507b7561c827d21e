//! Lag arithmetic: what `replctl lag` and `/metrics` report per peer and
//! origin, computed from vectors, timestamps and a rate meter — no I/O.
//!
//! Definitions (per peer, per origin `o`):
//! - pending records = `head[o] − acked[o]` (never negative: `acked ≤ head`
//!   because a peer can only acknowledge what it was sent);
//! - age of the oldest pending entry = now − physical time of entry
//!   `acked[o] + 1` (0 when nothing is pending);
//! - time since last ack = now − when the peer last acknowledged anything.

use std::time::Duration;

use serde::Serialize;
use tributary_engine::ids::{Hlc, RegionId, Seq, VersionVector};

/// Lag toward one peer for one origin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OriginLag {
    /// The origin region.
    pub origin: RegionId,
    /// Entries of this origin the peer has not acknowledged.
    pub pending_records: u64,
    /// Age of the oldest of them, in seconds (0 when none).
    pub oldest_pending_seconds: f64,
}

/// Lag toward one peer (the JSON shape of `replctl lag --json`'s `peers`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerLag {
    /// The peer region.
    pub peer: RegionId,
    /// True while a stream to the peer is up.
    pub connected: bool,
    /// True while an operator paused the link.
    pub paused: bool,
    /// Entries of all origins the peer has not acknowledged.
    pub pending_records: u64,
    /// Age of the oldest unacknowledged entry of any origin, in seconds.
    pub oldest_pending_seconds: f64,
    /// Seconds since the peer last acknowledged anything (`None` if never).
    pub last_ack_seconds: Option<f64>,
    /// Acknowledged records per second, smoothed.
    pub throughput_records_per_second: f64,
    /// The same figures per origin (origins with nothing pending included).
    pub origins: Vec<OriginLag>,
}

/// What the lag computation needs to know of one peer link.
#[derive(Debug, Clone)]
pub struct LinkFacts<'a> {
    /// The peer.
    pub peer: &'a RegionId,
    /// Stream up?
    pub connected: bool,
    /// Paused by an operator?
    pub paused: bool,
    /// Its acknowledged vector.
    pub acked: &'a VersionVector,
    /// When it last acknowledged (Unix ms).
    pub last_ack_millis: Option<u64>,
    /// Its smoothed acknowledgement rate.
    pub throughput: f64,
}

fn seconds(ms: u64) -> f64 {
    Duration::from_millis(ms).as_secs_f64()
}

/// Computes a peer's lag. `hlc_of(origin, seq)` returns the HLC of a log
/// entry (`None` if it is not in the log, e.g. truncated).
pub fn peer_lag(
    head: &VersionVector,
    link: &LinkFacts<'_>,
    now_millis: u64,
    hlc_of: impl Fn(&RegionId, Seq) -> Option<Hlc>,
) -> PeerLag {
    let origins: Vec<OriginLag> = head
        .iter()
        .map(|(origin, h)| {
            let acked = link.acked.get(origin);
            let pending = h.0.saturating_sub(acked.0);
            let age = if pending == 0 {
                0.0
            } else {
                hlc_of(origin, acked.next())
                    .map_or(0.0, |hlc| seconds(now_millis.saturating_sub(hlc.millis())))
            };
            OriginLag {
                origin: origin.clone(),
                pending_records: pending,
                oldest_pending_seconds: age,
            }
        })
        .collect();
    PeerLag {
        peer: link.peer.clone(),
        connected: link.connected,
        paused: link.paused,
        pending_records: origins.iter().map(|o| o.pending_records).sum(),
        oldest_pending_seconds: origins
            .iter()
            .map(|o| o.oldest_pending_seconds)
            .fold(0.0, f64::max),
        last_ack_seconds: link
            .last_ack_millis
            .map(|t| seconds(now_millis.saturating_sub(t))),
        throughput_records_per_second: link.throughput,
        origins,
    }
}

/// An exponentially weighted rate of events per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
    last_millis: Option<u64>,
    half_life: Duration,
}

impl Rate {
    /// A meter whose memory halves every `half_life`.
    pub fn new(half_life: Duration) -> Self {
        Self {
            per_second: 0.0,
            last_millis: None,
            half_life,
        }
    }

    /// Records `count` events at `now_millis`.
    pub fn record(&mut self, now_millis: u64, count: u64) {
        let Some(last) = self.last_millis else {
            self.last_millis = Some(now_millis);
            return;
        };
        let dt = seconds(now_millis.saturating_sub(last)).max(0.001);
        let decay = 0.5f64.powf(dt / self.half_life.as_secs_f64().max(0.001));
        self.per_second = self.per_second * decay + (1.0 - decay) * (count as f64 / dt);
        self.last_millis = Some(now_millis);
    }

    /// The current rate (decayed to `now_millis` when idle).
    pub fn per_second(&self, now_millis: u64) -> f64 {
        match self.last_millis {
            Some(last) => {
                let idle = seconds(now_millis.saturating_sub(last));
                self.per_second * 0.5f64.powf(idle / self.half_life.as_secs_f64().max(0.001))
            }
            None => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).expect("region")
    }

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        pairs.iter().map(|(o, s)| (r(o), Seq(*s))).collect()
    }

    #[test]
    fn pending_and_ages_per_origin() {
        let head = vv(&[("a", 10), ("c", 4)]);
        let acked = vv(&[("a", 7), ("c", 4)]);
        let peer = r("b");
        let link = LinkFacts {
            peer: &peer,
            connected: true,
            paused: false,
            acked: &acked,
            last_ack_millis: Some(9_800),
            throughput: 12.5,
        };
        // Entry a:8 was written at t = 7 s.
        let lag = peer_lag(&head, &link, 10_000, |o, s| {
            (o == &r("a") && s == Seq(8)).then(|| Hlc::new(7_000, 3))
        });
        assert_eq!(lag.pending_records, 3);
        assert_eq!(lag.oldest_pending_seconds, 3.0);
        assert_eq!(lag.last_ack_seconds, Some(0.2));
        assert_eq!(lag.origins[1].pending_records, 0);
        assert_eq!(lag.origins[1].oldest_pending_seconds, 0.0);
        let json = serde_json::to_value(&lag).expect("serializes");
        assert_eq!(json["peer"], "b");
        assert_eq!(json["pending_records"], 3);
    }

    #[test]
    fn a_peer_ahead_of_head_never_shows_negative_lag() {
        let head = vv(&[("a", 3)]);
        let acked = vv(&[("a", 5)]);
        let peer = r("b");
        let link = LinkFacts {
            peer: &peer,
            connected: false,
            paused: false,
            acked: &acked,
            last_ack_millis: None,
            throughput: 0.0,
        };
        let lag = peer_lag(&head, &link, 1, |_, _| None);
        assert_eq!(lag.pending_records, 0);
        assert_eq!(lag.last_ack_seconds, None);
    }

    #[test]
    fn the_rate_follows_load_and_decays_when_idle() {
        let mut rate = Rate::new(Duration::from_secs(1));
        for t in 0..=50 {
            rate.record(t * 100, 100);
        }
        let busy = rate.per_second(5_000);
        assert!((busy - 1000.0).abs() < 50.0, "about 1000/s, got {busy}");
        let idle = rate.per_second(8_000);
        assert!(idle < busy / 7.0, "three half-lives later: {idle}");
    }
}
