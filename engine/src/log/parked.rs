//! Received entries that arrived before their causal past: parked in
//! memory until it is applied, instead of refused.
//!
//! A peer link that leaves out an origin the receiver gets from that origin
//! directly sends its own entries at once, even when they depend on entries
//! of that origin still on their way. Without parking, such an entry would
//! stop its batch (`MissingDeps`) and the sender would resend it a round
//! trip later; with parking, the receiver keeps it and applies it as soon as
//! its dependencies are applied.
//!
//! Per origin the parked entries form one run with contiguous seqs, right
//! above the applied vector: an entry of an origin whose next entry is
//! parked can only wait behind it. Nothing here is durable: the log
//! acknowledges parked entries as *held* (see [`super::Log::held`]), never
//! as applied, so losing them (a restart) costs a resend, never data.

use std::collections::{BTreeMap, VecDeque};

use crate::change::LogEntry;
use crate::ids::{RegionId, Seq, VersionVector};

/// What `entry` depends on beyond `applied` (its own origin aside: the
/// dense seq check covers that); empty when it may apply.
pub(super) fn missing_deps(entry: &LogEntry, applied: &VersionVector) -> VersionVector {
    entry
        .deps
        .iter()
        .filter(|(o, s)| *o != &entry.origin && *s > applied.get(o))
        .map(|(o, s)| (o.clone(), s))
        .collect()
}

/// The parked entries of a [`super::Log`].
#[derive(Debug, Default)]
pub(super) struct Parked {
    /// Per origin, a run of entries with contiguous seqs.
    runs: BTreeMap<RegionId, VecDeque<LogEntry>>,
    /// Entries in all runs.
    len: usize,
    /// At most this many entries (0: parking is off).
    max: usize,
    /// Bumped whenever parked entries are dropped rather than applied.
    epoch: u64,
    /// Entries taken out to be applied, ever.
    taken: u64,
}

impl Parked {
    pub(super) fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(super) fn taken(&self) -> u64 {
        self.taken
    }

    pub(super) fn has_room(&self) -> bool {
        self.len < self.max
    }

    /// The last parked seq of `origin`, if any is parked.
    pub(super) fn top(&self, origin: &RegionId) -> Option<Seq> {
        self.runs.get(origin).and_then(|r| r.back()).map(|e| e.seq)
    }

    /// Parks `entry`, which must directly follow its origin's run (or the
    /// applied vector when there is none).
    pub(super) fn push(&mut self, entry: LogEntry) {
        self.len += 1;
        self.runs
            .entry(entry.origin.clone())
            .or_default()
            .push_back(entry);
    }

    /// `applied` joined with the top of every run.
    pub(super) fn held(&self, applied: &VersionVector) -> VersionVector {
        let mut held = applied.clone();
        for (origin, run) in &self.runs {
            if let Some(last) = run.back()
                && last.seq > held.get(origin)
            {
                held.set(origin.clone(), last.seq);
            }
        }
        held
    }

    /// The first parked entry whose dependencies `applied` covers, taken
    /// out of its run (each run's first entry is the only candidate).
    pub(super) fn take_ready(&mut self, applied: &VersionVector) -> Option<LogEntry> {
        let origin = self.runs.iter().find_map(|(origin, run)| {
            let first = run.front()?;
            let ready =
                first.seq == applied.get(origin).next() && missing_deps(first, applied).is_empty();
            ready.then(|| origin.clone())
        })?;
        let run = self.runs.get_mut(&origin)?;
        let entry = run.pop_front();
        if run.is_empty() {
            self.runs.remove(&origin);
        }
        if entry.is_some() {
            self.len -= 1;
            self.taken += 1;
        }
        entry
    }

    /// The dependencies of `origin`'s first parked entry beyond `applied`.
    pub(super) fn missing(&self, origin: &RegionId, applied: &VersionVector) -> VersionVector {
        self.runs
            .get(origin)
            .and_then(|r| r.front())
            .map(|first| missing_deps(first, applied))
            .unwrap_or_default()
    }

    /// Drops what `applied` covers (a snapshot jumped over it).
    pub(super) fn forget_covered(&mut self, applied: &VersionVector) {
        let mut dropped = 0;
        self.runs.retain(|origin, run| {
            let have = applied.get(origin);
            while run.front().is_some_and(|e| e.seq <= have) {
                run.pop_front();
                dropped += 1;
            }
            !run.is_empty()
        });
        self.len -= dropped;
    }

    /// Drops everything (a commit failed after taking entries out): the
    /// epoch tells the holders of a `held` vector that it no longer holds.
    pub(super) fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
        self.epoch += 1;
    }
}
