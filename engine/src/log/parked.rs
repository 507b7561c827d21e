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

/// How much a [`super::Log`] parks at most (see [`super::Log::park_up_to`]).
/// An entry parks only while both bounds leave room for it: one that alone
/// weighs more than `bytes` never parks (its batch stops, as without
/// parking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParkLimit {
    /// Entries parked at most.
    pub entries: usize,
    /// Their [`LogEntry::memory_estimate`]s add up to at most this.
    pub bytes: usize,
}

impl ParkLimit {
    /// No parking (the default).
    pub const OFF: Self = Self {
        entries: 0,
        bytes: 0,
    };

    /// At most `entries` entries, whatever they weigh.
    pub const fn entries(entries: usize) -> Self {
        Self {
            entries,
            bytes: usize::MAX,
        }
    }

    /// Whether anything can park under this limit.
    pub const fn parks(&self) -> bool {
        self.entries > 0 && self.bytes > 0
    }
}

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
    /// Per origin, a run of entries with contiguous seqs, each with its
    /// weight ([`LogEntry::memory_estimate`]).
    runs: BTreeMap<RegionId, VecDeque<(LogEntry, usize)>>,
    /// Entries in all runs.
    len: usize,
    /// Their weights, summed.
    bytes: usize,
    /// The bounds of `len` and `bytes`.
    max: ParkLimit,
    /// Bumped whenever parked entries are dropped rather than applied.
    epoch: u64,
    /// Entries taken out to be applied, ever.
    taken: u64,
}

impl Parked {
    pub(super) fn set_max(&mut self, max: ParkLimit) {
        self.max = max;
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
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

    /// Whether `entry` may park (it returns its weight, to give to
    /// [`Parked::push`]).
    pub(super) fn room_for(&self, entry: &LogEntry) -> Option<usize> {
        if self.len >= self.max.entries {
            return None;
        }
        let weight = entry.memory_estimate();
        (weight <= self.max.bytes.saturating_sub(self.bytes)).then_some(weight)
    }

    /// The last parked seq of `origin`, if any is parked.
    pub(super) fn top(&self, origin: &RegionId) -> Option<Seq> {
        self.runs
            .get(origin)
            .and_then(|r| r.back())
            .map(|(e, _)| e.seq)
    }

    /// Parks `entry` of `weight` (from [`Parked::room_for`]), which must
    /// directly follow its origin's run (or the applied vector when there
    /// is none).
    pub(super) fn push(&mut self, entry: LogEntry, weight: usize) {
        self.len += 1;
        self.bytes += weight;
        self.runs
            .entry(entry.origin.clone())
            .or_default()
            .push_back((entry, weight));
    }

    /// `applied` joined with the top of every run.
    pub(super) fn held(&self, applied: &VersionVector) -> VersionVector {
        let mut held = applied.clone();
        for (origin, run) in &self.runs {
            if let Some((last, _)) = run.back()
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
            let (first, _) = run.front()?;
            let ready =
                first.seq == applied.get(origin).next() && missing_deps(first, applied).is_empty();
            ready.then(|| origin.clone())
        })?;
        let run = self.runs.get_mut(&origin)?;
        let (entry, weight) = run.pop_front()?;
        if run.is_empty() {
            self.runs.remove(&origin);
        }
        self.len -= 1;
        self.bytes -= weight;
        self.taken += 1;
        Some(entry)
    }

    /// The dependencies of `origin`'s first parked entry beyond `applied`.
    pub(super) fn missing(&self, origin: &RegionId, applied: &VersionVector) -> VersionVector {
        self.runs
            .get(origin)
            .and_then(|r| r.front())
            .map(|(first, _)| missing_deps(first, applied))
            .unwrap_or_default()
    }

    /// Drops what `applied` covers (a snapshot jumped over it).
    pub(super) fn forget_covered(&mut self, applied: &VersionVector) {
        let (mut dropped, mut weight) = (0, 0);
        self.runs.retain(|origin, run| {
            let have = applied.get(origin);
            while let Some((_, w)) = run.pop_front_if(|(e, _)| e.seq <= have) {
                dropped += 1;
                weight += w;
            }
            !run.is_empty()
        });
        self.len -= dropped;
        self.bytes -= weight;
    }

    /// Drops everything (a commit failed after taking entries out): the
    /// epoch tells the holders of a `held` vector that it no longer holds.
    pub(super) fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
        self.bytes = 0;
        self.epoch += 1;
    }
}
