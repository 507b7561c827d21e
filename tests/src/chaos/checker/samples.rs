//! The checks on what the samplers saw during the run: offsets that went
//! backwards or ahead of a peer, acknowledged writes their origin did not
//! cover, negative lag, applied vectors that differ after the heal, and
//! each acknowledged write's visibility latency in every region.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use super::Verdict;
use crate::chaos::history::History;
use crate::chaos::observe::{LagSample, OffsetsSample};

/// The last `applied` each region reported must be the same everywhere
/// (zero entries ignored).
pub(super) fn check_final_applied(regions: &[String], samples: &[OffsetsSample], v: &mut Verdict) {
    let grouped = by_region(samples);
    let last = |r: &str| -> Option<BTreeMap<&String, u64>> {
        let s = grouped.get(r)?.iter().max_by_key(|s| s.ended)?;
        Some(
            s.applied
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(o, n)| (o, *n))
                .collect(),
        )
    };
    let Some(first) = regions.first() else {
        return;
    };
    let Some(reference) = last(first) else {
        return;
    };
    for r in &regions[1..] {
        match last(r) {
            Some(applied) if applied == reference => {}
            Some(applied) => v.divergent.push(
                None,
                Some(r),
                format!("last applied {applied:?}, but {first} has {reference:?}"),
            ),
            None => {}
        }
    }
}

fn by_region(samples: &[OffsetsSample]) -> BTreeMap<&str, Vec<&OffsetsSample>> {
    let mut map: BTreeMap<&str, Vec<&OffsetsSample>> = BTreeMap::new();
    for s in samples {
        map.entry(s.region.as_str()).or_default().push(s);
    }
    for list in map.values_mut() {
        list.sort_by_key(|s| (s.started, s.ended));
    }
    map
}

fn backwards(
    what: &str,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    s1: &OffsetsSample,
    s2: &OffsetsSample,
    v: &mut Verdict,
) {
    for (origin, &seq) in before {
        let now = after.get(origin).copied().unwrap_or(0);
        if now < seq {
            v.offsets.push(
                None,
                Some(&s2.region),
                format!(
                    "{what}[{origin}] went back from {seq} (at {:.3}s) to {now} (at {:.3}s)",
                    s1.ended.as_secs_f64(),
                    s2.ended.as_secs_f64()
                ),
            );
        }
    }
}

pub(super) fn check_offsets(history: &History, samples: &[OffsetsSample], v: &mut Verdict) {
    let regions = by_region(samples);
    for list in regions.values() {
        for pair in list.windows(2) {
            let (s1, s2) = (pair[0], pair[1]);
            backwards("applied", &s1.applied, &s2.applied, s1, s2, v);
            backwards("log_start", &s1.log_start, &s2.log_start, s1, s2, v);
            for (peer, acked) in &s1.acked {
                let empty = BTreeMap::new();
                let later = s2.acked.get(peer).unwrap_or(&empty);
                backwards(&format!("acked[{peer}]"), acked, later, s1, s2, v);
            }
        }
    }
    // A peer acknowledges only what it applied durably: its own later
    // samples must show at least that much.
    for s in samples {
        for (peer, acked) in &s.acked {
            let Some(later) = regions
                .get(peer.as_str())
                .and_then(|l| l.iter().find(|p| p.started >= s.ended))
            else {
                continue;
            };
            for (origin, &seq) in acked {
                let applied = later.applied.get(origin).copied().unwrap_or(0);
                if applied < seq {
                    v.offsets.push(
                        None,
                        Some(&s.region),
                        format!(
                            "acked[{peer}][{origin}] = {seq} at {:.3}s but {peer} applied only {applied} at {:.3}s",
                            s.ended.as_secs_f64(),
                            later.started.as_secs_f64()
                        ),
                    );
                }
            }
        }
    }
    // An acknowledged write is durable at its origin: any sample started
    // after the acknowledgement covers it.
    for op in &history.ops {
        let (Some((origin, seq)), Some(done)) = (op.acked(), op.completed) else {
            continue;
        };
        let Some(later) = regions
            .get(origin)
            .and_then(|l| l.iter().find(|s| s.started >= done))
        else {
            continue;
        };
        let applied = later.applied.get(origin).copied().unwrap_or(0);
        if applied < seq {
            v.lost.push(
                Some(op.index),
                Some(origin),
                format!(
                    "acknowledged as {origin}:{seq} at {:.3}s, but applied[{origin}] was {applied} at {:.3}s",
                    done.as_secs_f64(),
                    later.started.as_secs_f64()
                ),
            );
        }
    }
}

fn negative_numbers(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Number(n) if n.as_f64().is_some_and(|x| x < 0.0) => {
            out.push(format!("{path} = {n}"));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                negative_numbers(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                negative_numbers(item, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

pub(super) fn check_lag(samples: &[LagSample], v: &mut Verdict) {
    for s in samples {
        let mut found = Vec::new();
        negative_numbers(&s.doc, "lag", &mut found);
        for f in found {
            v.negative_lag.push(
                None,
                Some(&s.region),
                format!("{f} at {:.3}s", s.at.as_secs_f64()),
            );
        }
    }
}

/// Per region and origin: sample end times and the running maximum of
/// `applied[origin]` (monotone even if the samples were not).
struct Coverage {
    ended: Vec<Duration>,
    running_max: BTreeMap<String, Vec<u64>>,
}

impl Coverage {
    fn new(samples: &[&OffsetsSample]) -> Self {
        let mut list = samples.to_vec();
        list.sort_by_key(|s| s.ended);
        let origins: BTreeSet<&String> = list.iter().flat_map(|s| s.applied.keys()).collect();
        let running_max = origins
            .into_iter()
            .map(|o| {
                let mut max = 0;
                let seqs = list
                    .iter()
                    .map(|s| {
                        max = max.max(s.applied.get(o).copied().unwrap_or(0));
                        max
                    })
                    .collect();
                (o.clone(), seqs)
            })
            .collect();
        Self {
            ended: list.iter().map(|s| s.ended).collect(),
            running_max,
        }
    }

    /// When a sample first showed `origin:seq` applied.
    fn first_covering(&self, origin: &str, seq: u64) -> Option<Duration> {
        let maxes = self.running_max.get(origin)?;
        let i = maxes.partition_point(|&m| m < seq);
        self.ended.get(i).copied()
    }
}

pub(super) fn visibility(
    history: &History,
    regions: &[String],
    samples: &[OffsetsSample],
) -> (Vec<Duration>, usize) {
    let grouped = by_region(samples);
    let coverage: Vec<Coverage> = regions
        .iter()
        .map(|r| Coverage::new(grouped.get(r.as_str()).map_or(&[][..], Vec::as_slice)))
        .collect();
    let mut latencies = Vec::new();
    let mut never = 0;
    for op in &history.ops {
        let (Some((origin, seq)), Some(done)) = (op.acked(), op.completed) else {
            continue;
        };
        let seen: Option<Vec<Duration>> = coverage
            .iter()
            .map(|c| c.first_covering(origin, seq))
            .collect();
        match seen.and_then(|s| s.into_iter().max()) {
            Some(at) => latencies.push(at.saturating_sub(done)),
            None => never += 1,
        }
    }
    (latencies, never)
}
