//! Lag and throughput arithmetic of the cluster benchmark: plain functions
//! over recorded acknowledgements and observed applied vectors, no I/O.
//!
//! Times are [`Micros`] since the benchmark started, taken on one monotonic
//! clock in the benchmark process. An observation says "when the answer to
//! an `Offsets` poll arrived, the receiver had applied this origin up to
//! this seq"; a write is visible at the receiver from the first such
//! observation that covers its seq. Invariant kept: observations are
//! treated as monotone (a running maximum), so a stale answer can never
//! make a write look visible later than an earlier answer showed it.

/// Microseconds since the benchmark's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Micros(pub u64);

impl Micros {
    /// The same time in seconds.
    pub fn secs(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// `self - earlier`, zero if `earlier` is later.
    pub fn since(self, earlier: Micros) -> Micros {
        Micros(self.0.saturating_sub(earlier.0))
    }
}

/// A sequence number of one origin region's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Seq(pub u64);

/// One acknowledged local write: its seq at the origin, and when the
/// writer received the acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The seq the origin gave the change.
    pub seq: Seq,
    /// When the `Write` response arrived.
    pub at: Micros,
}

/// A receiver's applied seq of one origin, as one poll saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// When the poll's answer arrived.
    pub at: Micros,
    /// The receiver's applied seq of the origin.
    pub applied: Seq,
}

/// Visibility lags of one origin → receiver pair over a time window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairLags {
    /// One lag per acknowledged write of the window that became visible.
    pub lags: Vec<Micros>,
    /// Writes the receiver showed before their ack arrived (counted as 0).
    pub before_ack: usize,
    /// Writes of the window never seen at the receiver; `lags` holds a
    /// lower bound for each (the last observation's time − the ack).
    pub unseen: usize,
}

/// Makes `obs` monotone in `applied` (running maximum), in time order.
pub fn monotone(mut obs: Vec<Observed>) -> Vec<Observed> {
    obs.sort_by_key(|o| o.at);
    let mut high = Seq(0);
    for o in &mut obs {
        high = high.max(o.applied);
        o.applied = high;
    }
    obs
}

/// For each ack with `from <= at < to`: the time from the ack to the first
/// observation covering its seq (a write never covered counts as unseen,
/// with the last observation's time as its lower bound). `obs` must be
/// [`monotone`].
pub fn visibility_lags(acks: &[Ack], obs: &[Observed], from: Micros, to: Micros) -> PairLags {
    let mut out = PairLags::default();
    let last = obs.last().map_or(Micros(0), |o| o.at);
    for ack in acks.iter().filter(|a| a.at >= from && a.at < to) {
        let i = obs.partition_point(|o| o.applied < ack.seq);
        match obs.get(i) {
            None => {
                out.unseen += 1;
                out.lags.push(last.since(ack.at));
            }
            Some(o) => {
                if o.at < ack.at {
                    out.before_ack += 1;
                }
                out.lags.push(o.at.since(ack.at));
            }
        }
    }
    out
}

/// The applied seq last observed at or before `t` (0 before the first).
/// `obs` must be [`monotone`].
pub fn applied_at(obs: &[Observed], t: Micros) -> Seq {
    let i = obs.partition_point(|o| o.at <= t);
    i.checked_sub(1)
        .and_then(|i| obs.get(i))
        .map_or(Seq(0), |o| o.applied)
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted values; `None` when
/// empty.
pub fn percentile(sorted: &[Micros], p: f64) -> Option<Micros> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// p50, p99 and max of some lags, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LagSummary {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// How many lags.
    pub count: usize,
}

/// Summarises lags (sorts them); `None` when there are none.
pub fn summarize(lags: &mut [Micros]) -> Option<LagSummary> {
    lags.sort_unstable();
    let ms = |m: Micros| m.0 as f64 / 1000.0;
    Some(LagSummary {
        p50_ms: ms(percentile(lags, 50.0)?),
        p99_ms: ms(percentile(lags, 99.0)?),
        max_ms: ms(*lags.last()?),
        count: lags.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(pairs: &[(u64, u64)]) -> Vec<Observed> {
        monotone(
            pairs
                .iter()
                .map(|&(at, applied)| Observed {
                    at: Micros(at),
                    applied: Seq(applied),
                })
                .collect(),
        )
    }

    fn ack(seq: u64, at: u64) -> Ack {
        Ack {
            seq: Seq(seq),
            at: Micros(at),
        }
    }

    #[test]
    fn a_write_is_visible_at_the_first_observation_covering_it() {
        let o = obs(&[(100, 0), (200, 2), (300, 5)]);
        let l = visibility_lags(
            &[ack(1, 150), ack(3, 160), ack(5, 170)],
            &o,
            Micros(0),
            Micros(1000),
        );
        assert_eq!(l.lags, vec![Micros(50), Micros(140), Micros(130)]);
        assert_eq!((l.before_ack, l.unseen), (0, 0));
    }

    #[test]
    fn only_the_window_counts_and_unseen_writes_are_reported() {
        let o = obs(&[(100, 1)]);
        let l = visibility_lags(
            &[ack(1, 10), ack(2, 50), ack(3, 500)],
            &o,
            Micros(20),
            Micros(400),
        );
        assert_eq!(l.unseen, 1, "seq 2 is in the window and never seen");
        assert_eq!(
            l.lags,
            vec![Micros(50)],
            "its lower bound: last observation - ack"
        );
    }

    #[test]
    fn seen_before_the_ack_counts_as_zero_lag() {
        let l = visibility_lags(&[ack(1, 150)], &obs(&[(100, 1)]), Micros(0), Micros(1000));
        assert_eq!(l.lags, vec![Micros(0)]);
        assert_eq!(l.before_ack, 1);
    }

    #[test]
    fn a_stale_observation_never_moves_visibility_later() {
        let o = obs(&[(100, 5), (200, 3), (300, 6)]);
        assert_eq!(o[1].applied, Seq(5));
        assert_eq!(applied_at(&o, Micros(250)), Seq(5));
        assert_eq!(applied_at(&o, Micros(50)), Seq(0));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<Micros> = (1..=100).rev().map(|i| Micros(i * 1000)).collect();
        let s = summarize(&mut v).expect("non-empty");
        assert_eq!(
            (s.p50_ms, s.p99_ms, s.max_ms, s.count),
            (50.0, 99.0, 100.0, 100)
        );
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[Micros(7)], 99.0), Some(Micros(7)));
    }
}
