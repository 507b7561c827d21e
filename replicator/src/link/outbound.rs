//! The sending side of one peer link, as a pure state machine.
//!
//! It decides what to read from the log and ship, keeps a window of batches
//! in flight, and turns the peer's acknowledgements into the durable
//! acknowledged vector. It does no I/O: the link task feeds it events
//! (connected, entries read, ack or progress received) and carries out what
//! it returns. Time comes in as Unix milliseconds, so tests control it.
//!
//! Invariants:
//! - `acked ≤ sent` pointwise while connected, and `acked` never decreases
//!   (it is persisted; a restart resumes from it) — except when a peer's
//!   welcome reports less than it acknowledged: it lost its data (a wiped
//!   node), and what it lost is sent again;
//! - batches leave in HLC order with, per origin, contiguous seqs starting
//!   right after `sent` — what the receiver's dense-seq check expects;
//! - an entry leaves only once its `deps` are covered by `sent` (the peer's
//!   own origin aside: the peer has its own entries), so the receiver never
//!   stops at a missing dependency because of what this link held back;
//! - at most `max_in_flight` batches are unacknowledged (flow control
//!   without stop-and-wait);
//! - an ack that does not cover its batch (the receiver stopped at a gap, a
//!   missing dependency or a clock-skew refusal) rewinds `sent` to what the
//!   peer has: go-back-N, duplicates being harmless at the receiver.
//!
//! What it does not send (each would arrive as a duplicate):
//! - **the peer's own entries**, unless its welcome says it may lack some
//!   (a wiped node bootstrapping: then it gets them back from here);
//! - **fresh relays the peer gets by another path.** A link relays other
//!   origins' entries, which a line topology needs; in a mesh the peer gets
//!   them from their origin too. When the peer's acks show it has entries
//!   of an origin that this link never sent, it has another path, and for
//!   [`OutboundLimits::relay_hold`] after that this link holds back that
//!   origin's entries that reached this node less than `relay_hold` ago
//!   (as [`Outbound::observe`] saw the head move), and what depends on
//!   them, until the peer's acks cover them. Older entries (a backlog) and
//!   everything after the hold expires are relayed as before, so a path
//!   that fails costs at most `relay_hold` of extra lag. Only this node's
//!   clock is read: other regions' clock skew does not matter;
//! - **with a peer that parks** (its welcome says so: it keeps entries that
//!   arrive ahead of their dependencies, reporting them as *held*), the
//!   origins it lists as **direct** — their own entries reach it over their
//!   own live link — backlog included. Its own entries then leave at once,
//!   even those depending on what it leaves out: the peer parks them until
//!   their dependencies arrive from their origin. `sent` never rewinds below
//!   the peer's held vector, and `acked` (persisted) stays its applied
//!   vector. A rewind (the peer refused an entry: a full park, a gap, clock
//!   skew) makes the link relay everything in causal order for
//!   [`STRICT_AFTER_REWIND`], so a stalled direct path cannot stall this
//!   link.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use tributary_engine::change::LogEntry;
use tributary_engine::clock::millis;
use tributary_engine::ids::{RegionId, Seq, VersionVector};

/// How long a link to a peer that parks relays everything, in causal
/// order, after the peer stopped short of a batch.
pub const STRICT_AFTER_REWIND: Duration = Duration::from_secs(1);

/// What a peer that parks reports beside its applied vector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holds {
    /// The applied vector plus the entries parked in its memory: it will
    /// apply them without a resend (not durable).
    pub held: VersionVector,
    /// Regions whose own entries reach it over their own live link, and
    /// keep coming.
    pub direct: Vec<RegionId>,
}

/// What a peer reported having, in an ack or a progress report.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// Its applied vector, durable.
    pub applied: &'a VersionVector,
    /// From a peer that parks: what it holds, and who reaches it directly.
    pub holds: Option<&'a Holds>,
}

impl<'a> From<&'a VersionVector> for Report<'a> {
    fn from(applied: &'a VersionVector) -> Self {
        Report {
            applied,
            holds: None,
        }
    }
}

/// Limits of one link's batching and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    /// Entries per batch.
    pub max_entries: usize,
    /// Encoded bytes per batch (at least one entry is always sent).
    pub max_bytes: usize,
    /// Batches sent and not yet acknowledged.
    pub max_in_flight: usize,
    /// How long a fresh relay is held back once the peer showed it gets the
    /// origin by another path (see the module docs); zero relays at once.
    pub relay_hold: Duration,
}

/// Names one batch on a link; increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub u64);

/// A batch to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<E = LogEntry> {
    /// Its id (echoed by the ack).
    pub id: BatchId,
    /// Entries in HLC order.
    pub entries: Vec<E>,
}

/// What the link needs to know of an entry to decide whether it leaves.
#[derive(Debug, Clone, Copy)]
pub struct EntryHead<'a> {
    /// The origin.
    pub origin: &'a RegionId,
    /// Its seq.
    pub seq: Seq,
    /// Its causal dependencies.
    pub deps: &'a VersionVector,
}

/// A form of log entry a link can ship (decoded, or as stored).
pub trait Shippable {
    /// The entry's head.
    fn head(&self) -> EntryHead<'_>;
}

impl Shippable for LogEntry {
    fn head(&self) -> EntryHead<'_> {
        EntryHead {
            origin: &self.origin,
            seq: self.seq,
            deps: &self.deps,
        }
    }
}

/// What to read from the log next: entries above `from`, up to `upto`
/// (never beyond the durable head), at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Read up to this vector.
    pub upto: VersionVector,
    /// Read above this vector.
    pub from: VersionVector,
    /// At most this many entries.
    pub limit: usize,
}

#[derive(Debug, Clone)]
struct InFlight {
    id: BatchId,
    /// `sent` right after this batch.
    upto: VersionVector,
}

/// When one origin's recent entries reached this node: `(seq, ms)` samples,
/// increasing, each meaning "entries up to `seq` were here at `ms`".
#[derive(Debug, Clone, Default)]
struct Arrivals {
    /// Entries up to here arrived long enough ago to be old.
    old_upto: Seq,
    samples: VecDeque<(Seq, u64)>,
}

impl Arrivals {
    fn old_upto(seq: Seq) -> Self {
        Arrivals {
            old_upto: seq,
            samples: VecDeque::new(),
        }
    }

    fn record(&mut self, head: Seq, now_millis: u64) {
        let newest = self.samples.back().map_or(self.old_upto, |(s, _)| *s);
        if head > newest {
            self.samples.push_back((head, now_millis));
        }
    }

    fn forget_before(&mut self, millis: u64) {
        while let Some(&(seq, at)) = self.samples.front()
            && at < millis
        {
            self.old_upto = seq;
            self.samples.pop_front();
        }
    }

    /// When entry `seq` arrived: `None` if it is old, `now_millis` if it
    /// was not seen yet.
    fn arrived(&self, seq: Seq, now_millis: u64) -> Option<u64> {
        if seq <= self.old_upto {
            return None;
        }
        Some(
            self.samples
                .iter()
                .find(|(s, _)| *s >= seq)
                .map_or(now_millis, |(_, at)| *at),
        )
    }
}

/// What an acknowledgement changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// Records newly acknowledged (for throughput figures).
    pub newly_acked: u64,
    /// The acknowledged vector to persist, when it moved.
    pub persist: Option<VersionVector>,
    /// True when the peer stopped short and sending restarts from what it
    /// holds.
    pub rewound: bool,
    /// True when the origins left out changed (a peer that parks reported
    /// other direct paths): what to send must be read again.
    pub relays_changed: bool,
}

/// The sender's state for one peer.
#[derive(Debug, Clone)]
pub struct Outbound {
    local: RegionId,
    peer: RegionId,
    limits: OutboundLimits,
    acked: VersionVector,
    sent: VersionVector,
    in_flight: VecDeque<InFlight>,
    next_id: u64,
    connected: bool,
    paused: bool,
    /// The peer's own entries up to here are sent: none when it has them
    /// all, all of them when it may have lost some (a wiped node).
    peer_own: Seq,
    /// Per third origin: when the peer last showed it has entries of it
    /// that this link did not send (Unix ms).
    other_path: BTreeMap<RegionId, u64>,
    /// Per third origin: when its entries reached this node, as far as the
    /// hold needs to know.
    arrivals: BTreeMap<RegionId, Arrivals>,
    /// Set when the last pack held entries back: nothing is read again
    /// before this time unless the peer's acks move.
    stalled_until: Option<u64>,
    /// The peer parks entries that arrive ahead of their dependencies.
    parks: bool,
    /// What the peer holds: `acked` plus what it reported parked.
    held: VersionVector,
    /// The origins the peer last reported reaching it directly.
    direct: BTreeSet<RegionId>,
    /// Until then (Unix ms) everything is relayed in causal order.
    strict_until: u64,
}

impl Outbound {
    /// The link from `local` to `peer`, resuming from the persisted
    /// acknowledged vector.
    pub fn new(
        local: RegionId,
        peer: RegionId,
        limits: OutboundLimits,
        acked: VersionVector,
    ) -> Self {
        Self {
            local,
            peer,
            limits,
            sent: acked.clone(),
            held: acked.clone(),
            acked,
            in_flight: VecDeque::new(),
            next_id: 1,
            connected: false,
            paused: false,
            peer_own: Seq::ZERO,
            other_path: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            stalled_until: None,
            parks: false,
            direct: BTreeSet::new(),
            strict_until: 0,
        }
    }

    /// The peer.
    pub fn peer(&self) -> &RegionId {
        &self.peer
    }

    /// What the peer has acknowledged (durably on its side).
    pub fn acked(&self) -> &VersionVector {
        &self.acked
    }

    /// What has been put on the wire.
    pub fn sent(&self) -> &VersionVector {
        &self.sent
    }

    /// What the peer holds: [`Outbound::acked`] plus what it reported
    /// parked (a peer that parks), which is not sent again.
    pub fn held(&self) -> &VersionVector {
        &self.held
    }

    /// True when `origin`'s entries are left out: the peer parks, and
    /// reported that `origin`'s own link reaches it (see the module docs).
    pub fn leaves_out(&self, origin: &RegionId, now_millis: u64) -> bool {
        self.parking(now_millis)
            && origin != &self.local
            && origin != &self.peer
            && self.direct.contains(origin)
    }

    /// True when the peer parks and this link is not relaying strictly
    /// after a rewind: entries may leave ahead of their dependencies.
    fn parking(&self, now_millis: u64) -> bool {
        self.parks && now_millis >= self.strict_until
    }

    /// Batches awaiting their ack.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// True while a stream to the peer is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// True while an operator paused the link.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// When entries held back may leave (Unix ms), if any are: the link
    /// task wakes then, unless an ack comes first.
    pub fn wake_at(&self) -> Option<u64> {
        self.stalled_until
    }

    /// A stream is up and the peer said what it has (its applied vector,
    /// durable on its side), whether it holds all of its own region's
    /// entries and whether it parks; `head` is this node's. Sending
    /// restarts from there; returns the acknowledged vector to persist if
    /// the handshake moved it.
    pub fn on_connected(
        &mut self,
        peer_applied: &VersionVector,
        head: &VersionVector,
        peer_own_complete: bool,
        peer_parks: bool,
    ) -> Option<VersionVector> {
        self.connected = true;
        self.in_flight.clear();
        self.other_path.clear();
        self.stalled_until = None;
        self.parks = peer_parks;
        self.direct.clear();
        self.strict_until = 0;
        // What is here already is a backlog: never held.
        self.arrivals = head
            .iter()
            .map(|(origin, seq)| (origin.clone(), Arrivals::old_upto(seq)))
            .collect();
        self.peer_own = if peer_own_complete {
            Seq::ZERO
        } else {
            Seq(u64::MAX)
        };
        // The welcome is what the peer has, durably: normally at least what
        // it acknowledged before, but less if it lost its disk — then what
        // it lost is sent again (joining would leave it without it).
        let before = std::mem::replace(&mut self.acked, peer_applied.clone());
        self.sent = self.acked.clone();
        self.held = self.acked.clone();
        (self.acked != before).then(|| self.acked.clone())
    }

    /// The stream went down: whatever was in flight will be resent, and
    /// what the peer held may be gone.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.in_flight.clear();
        self.stalled_until = None;
        self.sent = self.acked.clone();
        self.held = self.acked.clone();
    }

    /// Stops or restarts shipping (operator `pause` / `resume`); batches in
    /// flight still get their acks.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// What to read next from the log, given its durable head. `None` when
    /// the link is down or paused, the window is full, entries are held
    /// back until [`Outbound::wake_at`], or the peer is up to date.
    pub fn want(&self, head: &VersionVector, now_millis: u64) -> Option<Read> {
        let room = self.connected
            && !self.paused
            && self.in_flight.len() < self.limits.max_in_flight
            && self.stalled_until.is_none_or(|until| now_millis >= until);
        if !room {
            return None;
        }
        let mut upto = head.clone();
        if upto.get(&self.peer) > self.peer_own {
            upto.set(self.peer.clone(), self.peer_own);
        }
        for origin in &self.direct {
            if self.leaves_out(origin, now_millis) && upto.get(origin) > self.sent.get(origin) {
                upto.set(origin.clone(), self.sent.get(origin));
            }
        }
        (!upto.dominated_by(&self.sent)).then(|| Read {
            upto,
            from: self.sent.clone(),
            limit: self.limits.max_entries,
        })
    }

    fn hold_millis(&self) -> u64 {
        millis(self.limits.relay_hold)
    }

    /// Records when the head moved (call it whenever the head is read):
    /// the hold counts a relay's age from here.
    pub fn observe(&mut self, head: &VersionVector, now_millis: u64) {
        if self.limits.relay_hold.is_zero() {
            return;
        }
        let hold = self.hold_millis();
        for (origin, seq) in head.iter() {
            if origin != &self.local && origin != &self.peer {
                let arrivals = self.arrivals.entry(origin.clone()).or_default();
                arrivals.record(seq, now_millis);
                arrivals.forget_before(now_millis.saturating_sub(hold));
            }
        }
    }

    /// Until when the relay `(origin, seq)` is held back, if it is (not
    /// to a peer that parks: leaving out does better there).
    fn hold(&self, origin: &RegionId, seq: Seq, now_millis: u64) -> Option<u64> {
        if origin == &self.local
            || origin == &self.peer
            || self.limits.relay_hold.is_zero()
            || self.parks
        {
            return None;
        }
        let hold = self.hold_millis();
        let path_seen = *self.other_path.get(origin)?;
        let arrived = match self.arrivals.get(origin) {
            Some(arrivals) => arrivals.arrived(seq, now_millis)?,
            None => now_millis,
        };
        let until = path_seen.min(arrived).saturating_add(hold);
        (now_millis < until).then_some(until)
    }

    /// Packs entries read for [`Outbound::want`] (in HLC order) into the
    /// next batch, within the count and byte limits (always at least one
    /// entry); `size_of` gives an entry's encoded size. Entries the peer
    /// was sent are skipped, and so are the origins left out; entries held
    /// back (see the module docs) stay, and so does the rest of their
    /// origin. `None` when nothing may leave.
    pub fn pack<E: Shippable>(
        &mut self,
        entries: Vec<E>,
        now_millis: u64,
        size_of: impl Fn(&E) -> usize,
    ) -> Option<Batch<E>> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut sent = self.sent.clone();
        // Origins whose next entry stays behind: their later ones must too.
        let mut stuck: BTreeSet<RegionId> = BTreeSet::new();
        let mut held_until: Option<u64> = None;
        let mut full = false;
        let parking = self.parking(now_millis);
        for e in entries {
            let h = e.head();
            let next = sent.get(h.origin).next();
            if h.seq < next || stuck.contains(h.origin) || self.leaves_out(h.origin, now_millis) {
                continue;
            }
            let deps_covered = parking
                || h.deps
                    .iter()
                    .all(|(o, s)| o == &self.peer || s <= sent.get(o));
            if h.seq != next || !deps_covered {
                // Not contiguous with what was sent (the log was read from
                // a stale vector), or depending on what stays behind.
                stuck.insert(h.origin.clone());
                continue;
            }
            if let Some(until) = self.hold(h.origin, h.seq, now_millis) {
                held_until = Some(held_until.map_or(until, |u| u.min(until)));
                stuck.insert(h.origin.clone());
                continue;
            }
            let size = size_of(&e);
            if !batch.is_empty()
                && (batch.len() >= self.limits.max_entries || bytes + size > self.limits.max_bytes)
            {
                full = true;
                break;
            }
            bytes += size;
            sent.set(h.origin.clone(), h.seq);
            batch.push(e);
        }
        // Wait (for an ack, or the hold to end) only when everything that
        // may leave did: a batch cut by its limits is followed at once.
        self.stalled_until = if full { None } else { held_until };
        if batch.is_empty() {
            return None;
        }
        let id = BatchId(self.next_id);
        self.next_id += 1;
        self.sent = sent.clone();
        self.in_flight.push_back(InFlight { id, upto: sent });
        Some(Batch { id, entries: batch })
    }

    /// Joins what the peer reported having into `acked` (and what it
    /// holds into `held` and `sent`), noting origins it got by another
    /// path. Returns the outcome's figures; rewinding is the caller's.
    fn learn(&mut self, report: Report<'_>, now_millis: u64) -> AckOutcome {
        let applied = report.applied;
        for (origin, seq) in applied.iter() {
            if origin != &self.local && origin != &self.peer && seq > self.sent.get(origin) {
                self.other_path.insert(origin.clone(), now_millis);
            }
        }
        let before = self.acked.clone();
        let held_before = self.held.clone();
        self.acked.join(applied);
        self.held.join(&self.acked);
        let mut relays_changed = false;
        if let Some(holds) = report.holds {
            self.held.join(&holds.held);
            let direct: BTreeSet<RegionId> = holds.direct.iter().cloned().collect();
            relays_changed = self.parks && direct != self.direct;
            self.direct = direct;
        }
        let newly_acked = self.acked.records_ahead_of(&before);
        // What the peer has — also from other peers (relaying) — needs no
        // sending: without this, every entry reached a peer once per path
        // (two thirds of what receivers got were duplicates).
        self.sent.join(&self.held);
        let moved = self.acked != before;
        if moved || self.held != held_before {
            // Held entries may be covered now, or their dependencies.
            self.stalled_until = None;
        }
        AckOutcome {
            newly_acked,
            persist: moved.then(|| self.acked.clone()),
            rewound: false,
            relays_changed,
        }
    }

    /// The peer acknowledged batch `id` with its applied vector (and, if
    /// it parks, what it holds).
    pub fn on_ack<'a>(
        &mut self,
        id: BatchId,
        report: impl Into<Report<'a>>,
        now_millis: u64,
    ) -> AckOutcome {
        let mut outcome = self.learn(report.into(), now_millis);
        let covered = self
            .in_flight
            .iter()
            .find(|b| b.id == id)
            .is_none_or(|b| b.upto.dominated_by(&self.held));
        outcome.rewound = !covered;
        if outcome.rewound {
            self.in_flight.clear();
            self.stalled_until = None;
            self.sent = self.held.clone();
            if self.parks {
                self.strict_until = now_millis.saturating_add(millis(STRICT_AFTER_REWIND));
            }
        } else {
            self.retire(Some(id));
        }
        outcome
    }

    /// The peer reported its applied vector between acks (it moved by
    /// other peers' batches or local writes): never a rewind.
    pub fn on_progress<'a>(
        &mut self,
        report: impl Into<Report<'a>>,
        now_millis: u64,
    ) -> AckOutcome {
        let outcome = self.learn(report.into(), now_millis);
        self.retire(None);
        outcome
    }

    /// Drops batches in flight that are acknowledged: up to `id`, or
    /// covered by `held`.
    fn retire(&mut self, id: Option<BatchId>) {
        while self
            .in_flight
            .front()
            .is_some_and(|b| id.is_some_and(|id| b.id <= id) || b.upto.dominated_by(&self.held))
        {
            self.in_flight.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use tributary_engine::crdt::ItemState;
    use tributary_engine::ids::{Hlc, Seq, TableName};
    use tributary_engine::key::ItemKey;
    use tributary_engine::value::Scalar;

    use super::*;

    /// "Now", in ms: entries stamped before it are old.
    const NOW: u64 = 1_000_000;
    const HOLD: u64 = 100;

    fn r(s: &str) -> RegionId {
        RegionId::new(s).expect("region")
    }

    fn e(origin: &str, seq: u64, hlc: u64) -> LogEntry {
        e_deps(origin, seq, hlc, &[])
    }

    fn e_deps(origin: &str, seq: u64, hlc: u64, deps: &[(&str, u64)]) -> LogEntry {
        LogEntry {
            origin: r(origin),
            seq: Seq(seq),
            hlc: Hlc::new(hlc, 0),
            deps: vv(deps),
            key: ItemKey::new(TableName::new("t").expect("t"), Scalar::S("k".into()), None)
                .expect("key"),
            delta: ItemState::new(),
        }
    }

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        pairs.iter().map(|(o, s)| (r(o), Seq(*s))).collect()
    }

    fn limits() -> OutboundLimits {
        OutboundLimits {
            max_entries: 2,
            max_bytes: 1000,
            max_in_flight: 2,
            relay_hold: Duration::from_millis(HOLD),
        }
    }

    /// The link from `a` to `b`.
    fn link(acked: VersionVector) -> Outbound {
        Outbound::new(r("a"), r("b"), limits(), acked)
    }

    /// Packs `entries` at `now`, each entry one byte.
    fn pack(o: &mut Outbound, entries: Vec<LogEntry>, now: u64) -> Option<Batch> {
        o.pack(entries, now, |_| 1)
    }

    fn seqs<E: Shippable>(batch: &Batch<E>) -> Vec<(String, u64)> {
        batch
            .entries
            .iter()
            .map(|e| (e.head().origin.to_string(), e.head().seq.0))
            .collect()
    }

    fn read(from: VersionVector, upto: VersionVector) -> Option<Read> {
        Some(Read {
            upto,
            from,
            limit: 2,
        })
    }

    #[test]
    fn ships_nothing_until_connected_then_resumes_from_what_the_peer_has() {
        let mut o = link(vv(&[("a", 1)]));
        let head = vv(&[("a", 3)]);
        assert_eq!(o.want(&head, NOW), None, "no stream, nothing to read");
        let persist = o.on_connected(&vv(&[("a", 2), ("b", 7)]), &head, true, false);
        assert_eq!(
            persist,
            Some(vv(&[("a", 2), ("b", 7)])),
            "the handshake is an ack"
        );
        assert_eq!(o.want(&head, NOW), read(vv(&[("a", 2), ("b", 7)]), head));
    }

    #[test]
    fn what_the_peer_got_from_others_is_not_sent_again() {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        let read = |from: u64| (from..=6).map(|s| e("a", s, s)).collect::<Vec<_>>();
        let b1 = o.pack(read(1), NOW, |_| 10).expect("batch");
        // The peer acks batch 1 with this node's entries up to 5, which it
        // got relayed by another peer meanwhile: only 6 remains to send.
        o.on_ack(b1.id, &vv(&[("a", 5)]), NOW);
        assert_eq!(o.sent(), &vv(&[("a", 5)]));
        let head = vv(&[("a", 6)]);
        assert_eq!(o.want(&head, NOW).map(|r| r.from), Some(vv(&[("a", 5)])));
        let b2 = o.pack(read(6), NOW, |_| 10).expect("batch");
        assert_eq!(seqs(&b2), [("a".to_owned(), 6)]);
        o.on_ack(b2.id, &vv(&[("a", 6)]), NOW);
        assert_eq!(o.want(&head, NOW), None, "up to date");
    }

    #[test]
    fn batches_respect_count_bytes_and_the_window() {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        let head = vv(&[("a", 5)]);
        let entries = || (1..=5).map(|s| e("a", s, s)).collect::<Vec<_>>();
        let b1 = o.pack(entries(), NOW, |_| 10).expect("batch");
        assert_eq!(b1.entries.len(), 2, "count limit");
        let b2 = o.pack(entries(), NOW, |_| 600).expect("batch");
        assert_eq!(b2.entries.len(), 1, "byte limit, but never empty");
        assert_eq!(o.want(&head, NOW), None, "window of 2 is full");
        let out = o.on_ack(b1.id, &vv(&[("a", 2)]), NOW);
        assert_eq!((out.newly_acked, out.rewound), (2, false));
        assert_eq!(out.persist, Some(vv(&[("a", 2)])));
        assert_eq!(o.in_flight(), 1);
        assert_eq!(o.want(&head, NOW), read(vv(&[("a", 3)]), head));
    }

    #[test]
    fn an_ack_that_stops_short_rewinds_to_what_the_peer_has() {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        let b1 = pack(&mut o, vec![e("a", 1, 1), e("c", 1, 2)], NOW).expect("batch");
        // The peer applied a:1 but refused c:1 (say, a missing dependency).
        let out = o.on_ack(b1.id, &vv(&[("a", 1)]), NOW);
        assert!(out.rewound);
        assert_eq!(o.sent(), &vv(&[("a", 1)]));
        assert_eq!(o.in_flight(), 0);
        let again = pack(&mut o, vec![e("c", 1, 2)], NOW).expect("resend");
        assert_eq!(seqs(&again), [("c".to_owned(), 1)]);
    }

    #[test]
    fn a_stale_read_stops_its_origin_at_the_first_gap_and_duplicates_are_skipped() {
        let mut o = link(vv(&[("a", 1)]));
        o.on_connected(&vv(&[("a", 1)]), &VersionVector::new(), true, false);
        let b = pack(
            &mut o,
            vec![e("a", 1, 1), e("a", 2, 2), e("a", 4, 4), e("c", 1, 5)],
            NOW,
        )
        .expect("batch");
        assert_eq!(seqs(&b), [("a".to_owned(), 2), ("c".to_owned(), 1)]);
        assert_eq!(o.wake_at(), None, "a gap is read again, not waited for");
    }

    #[test]
    fn acks_never_move_backwards_and_disconnect_resends_in_flight() {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        let b1 = pack(&mut o, vec![e("a", 1, 1), e("a", 2, 2)], NOW).expect("batch");
        o.on_ack(b1.id, &vv(&[("a", 2)]), NOW);
        let out = o.on_ack(b1.id, &vv(&[("a", 1)]), NOW);
        assert_eq!(out.persist, None, "an old ack changes nothing");
        assert_eq!(o.acked(), &vv(&[("a", 2)]));
        pack(&mut o, vec![e("a", 3, 3)], NOW).expect("batch");
        o.on_disconnected();
        assert_eq!(o.sent(), &vv(&[("a", 2)]), "unacked entries will be resent");
        o.set_paused(true);
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        assert_eq!(o.want(&vv(&[("a", 3)]), NOW), None, "paused");
        o.set_paused(false);
        assert!(o.want(&vv(&[("a", 3)]), NOW).is_some());
    }

    #[test]
    fn a_peer_that_lost_its_data_is_sent_it_again() {
        let mut o = link(vv(&[("a", 9), ("c", 4)]));
        let persist = o.on_connected(&vv(&[("c", 1)]), &vv(&[("a", 9), ("c", 4)]), false, false);
        assert_eq!(persist, Some(vv(&[("c", 1)])), "the welcome is what it has");
        let want = o.want(&vv(&[("a", 9), ("c", 4)]), NOW).expect("resend");
        assert_eq!(want.from, vv(&[("c", 1)]));
    }

    #[test]
    fn the_peers_own_entries_go_back_only_to_a_peer_that_may_lack_them() {
        // A peer that has all its own entries gets none of them back,
        // however many this node holds.
        let mut o = link(VersionVector::new());
        o.on_connected(&vv(&[("b", 5)]), &vv(&[("b", 3)]), true, false);
        let head = vv(&[("a", 1), ("b", 9)]);
        assert_eq!(o.want(&head, NOW).map(|r| r.upto), Some(vv(&[("a", 1)])));
        assert_eq!(o.want(&vv(&[("b", 9)]), NOW), None);
        // A wiped peer bootstrapping gets back what this node has.
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &vv(&[("b", 3)]), false, false);
        let want = o
            .want(&vv(&[("b", 3)]), NOW)
            .expect("its lost entries go back");
        assert_eq!(
            (want.from, want.upto),
            (VersionVector::new(), vv(&[("b", 3)]))
        );
    }

    /// A link whose peer showed, at `NOW`, that it gets `c` directly: its
    /// ack of a batch of `a:1` says it has `c:1..2` too.
    fn peer_gets_c_directly() -> Outbound {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        let b = pack(&mut o, vec![e("a", 1, 1)], NOW).expect("batch");
        o.on_ack(b.id, &vv(&[("a", 1), ("c", 2)]), NOW);
        o
    }

    #[test]
    fn relays_leave_at_once_while_the_peer_shows_no_other_path() {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        o.observe(&vv(&[("a", 1), ("c", 1)]), NOW);
        let b = pack(
            &mut o,
            vec![e("c", 1, 1), e_deps("a", 1, 2, &[("c", 1)])],
            NOW,
        )
        .expect("batch");
        assert_eq!(seqs(&b), [("c".to_owned(), 1), ("a".to_owned(), 1)]);
        // Its ack shows nothing beyond what was sent: still no other path.
        o.on_ack(b.id, &vv(&[("a", 1), ("c", 1)]), NOW);
        o.observe(&vv(&[("a", 1), ("c", 2)]), NOW);
        let b = pack(&mut o, vec![e("c", 2, 3)], NOW).expect("relayed");
        assert_eq!(seqs(&b), [("c".to_owned(), 2)]);
    }

    #[test]
    fn a_fresh_relay_the_peer_gets_directly_waits_and_so_do_its_dependents() {
        let mut o = peer_gets_c_directly();
        let head = vv(&[("a", 2), ("c", 3), ("d", 1)]);
        o.observe(&head, NOW);
        let fresh = || vec![e("c", 3, 3), e_deps("a", 2, 4, &[("c", 3)]), e("d", 1, 4)];
        // c:3 is held, a:2 depends on it; d is another origin with no
        // path shown: it leaves.
        let b = pack(&mut o, fresh(), NOW).expect("batch");
        assert_eq!(seqs(&b), [("d".to_owned(), 1)]);
        assert_eq!(o.wake_at(), Some(NOW + HOLD), "until c:3 is old");
        assert_eq!(o.want(&head, NOW + 1), None, "no reading while held");
        // The peer's progress shows it got c:3 from c: a:2 may leave, and
        // c:3 never does.
        let out = o.on_progress(&vv(&[("a", 1), ("c", 3), ("d", 1)]), NOW + 1);
        assert!(!out.rewound);
        assert_eq!(o.wake_at(), None);
        let want = o.want(&head, NOW + 1).expect("readable again");
        assert_eq!(want.from, vv(&[("a", 1), ("c", 3), ("d", 1)]));
        let b = pack(&mut o, fresh(), NOW + 1).expect("batch");
        assert_eq!(seqs(&b), [("a".to_owned(), 2)]);
    }

    #[test]
    fn a_held_relay_leaves_when_it_is_old_or_the_other_path_goes_quiet() {
        // Here for `relay_hold` already: relayed at once.
        let mut o = peer_gets_c_directly();
        o.observe(&vv(&[("c", 3)]), NOW - HOLD);
        let b = pack(&mut o, vec![e("c", 3, 3)], NOW).expect("an old entry is relayed");
        assert_eq!(seqs(&b), [("c".to_owned(), 3)]);
        // Fresh, but the peer showed no news of c for `relay_hold`: the
        // other path may be down; relay.
        let mut o = peer_gets_c_directly();
        let later = NOW + HOLD;
        o.observe(&vv(&[("c", 3)]), later - 1);
        assert!(pack(&mut o, vec![e("c", 3, 3)], later - 1).is_none());
        let b = pack(&mut o, vec![e("c", 3, 3)], later).expect("the other path went quiet");
        assert_eq!(seqs(&b), [("c".to_owned(), 3)]);
    }

    #[test]
    fn what_was_here_on_connect_is_a_backlog_and_never_held() {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &vv(&[("c", 5)]), true, false);
        o.observe(&vv(&[("c", 5)]), NOW);
        let b = pack(&mut o, vec![e("c", 1, 1)], NOW).expect("batch");
        o.on_ack(b.id, &vv(&[("c", 3)]), NOW);
        // The peer has another path now, but c:4..5 were here before.
        let b =
            pack(&mut o, vec![e("c", 4, 4), e("c", 5, 5)], NOW).expect("the backlog is relayed");
        assert_eq!(b.entries.len(), 2);
        // c:6 arrives after: held.
        o.observe(&vv(&[("c", 6)]), NOW);
        assert!(pack(&mut o, vec![e("c", 6, 6)], NOW).is_none());
    }

    #[test]
    fn arrivals_age_out_and_unseen_entries_count_as_just_arrived() {
        let mut a = Arrivals::old_upto(Seq(2));
        a.record(Seq(5), 100);
        a.record(Seq(5), 150);
        a.record(Seq(9), 200);
        assert_eq!(a.arrived(Seq(2), 300), None, "old");
        assert_eq!(a.arrived(Seq(3), 300), Some(100));
        assert_eq!(a.arrived(Seq(6), 300), Some(200));
        assert_eq!(a.arrived(Seq(10), 300), Some(300), "not seen yet");
        a.forget_before(150);
        assert_eq!(a.arrived(Seq(5), 300), None, "aged out");
        assert_eq!(a.arrived(Seq(6), 300), Some(200));
    }

    #[test]
    fn progress_acknowledges_and_retires_but_never_rewinds() {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        pack(&mut o, vec![e("a", 1, 1)], NOW).expect("batch");
        let out = o.on_progress(&vv(&[("b", 4)]), NOW);
        assert_eq!((out.newly_acked, out.rewound), (4, false));
        assert_eq!(o.in_flight(), 1, "a:1 is not covered yet");
        o.on_progress(&vv(&[("a", 1), ("b", 4)]), NOW);
        assert_eq!(o.in_flight(), 0, "covered: retired before its ack");
        assert_eq!(o.sent(), &vv(&[("a", 1), ("b", 4)]));
    }

    #[test]
    fn a_batch_cut_by_its_limits_does_not_wait_for_held_entries() {
        let mut o = peer_gets_c_directly();
        o.observe(&vv(&[("a", 4), ("c", 3)]), NOW);
        let b = pack(
            &mut o,
            vec![e("c", 3, 3), e("a", 2, 4), e("a", 3, 5), e("a", 4, 6)],
            NOW,
        )
        .expect("batch");
        assert_eq!(b.entries.len(), 2);
        assert_eq!(o.wake_at(), None, "a:4 is read at once");
    }

    /// A link from `a` to `b`, which parks, reports `c` as direct and has
    /// nothing yet.
    fn to_a_peer_that_parks() -> Outbound {
        let mut o = link(VersionVector::new());
        o.on_connected(&VersionVector::new(), &VersionVector::new(), true, true);
        let holds = Holds {
            held: VersionVector::new(),
            direct: vec![r("c")],
        };
        let report = Report {
            applied: &VersionVector::new(),
            holds: Some(&holds),
        };
        o.on_progress(report, NOW);
        o
    }

    #[test]
    fn to_a_peer_that_parks_its_direct_origins_are_left_out_and_own_entries_leave_at_once() {
        let mut o = to_a_peer_that_parks();
        assert!(o.leaves_out(&r("c"), NOW));
        assert!(!o.leaves_out(&r("a"), NOW), "never this node's own");
        let head = vv(&[("a", 1), ("c", 3)]);
        let want = o.want(&head, NOW).expect("a:1 to send");
        assert_eq!(want.upto, vv(&[("a", 1)]), "c is not even read");
        // Read anyway (a stale read): c's entries are skipped, and a:1
        // leaves although it depends on c:3, which this link never sent.
        let b = pack(
            &mut o,
            vec![e("c", 1, 1), e("c", 2, 2), e_deps("a", 1, 3, &[("c", 2)])],
            NOW,
        )
        .expect("batch");
        assert_eq!(seqs(&b), [("a".to_owned(), 1)]);
        // Without parking, a:1 waits for c's entries, which are relayed.
        let mut strict = link(VersionVector::new());
        strict.on_connected(&VersionVector::new(), &VersionVector::new(), true, false);
        let b = pack(&mut strict, vec![e_deps("a", 1, 3, &[("c", 2)])], NOW);
        assert!(b.is_none(), "a:1 cannot leave before c:1..2");
    }

    #[test]
    fn what_the_peer_holds_is_not_resent_and_a_rewind_stops_there() {
        let mut o = to_a_peer_that_parks();
        let b1 = pack(&mut o, vec![e_deps("a", 1, 1, &[("c", 2)])], NOW).expect("b1");
        let b2 = pack(&mut o, vec![e_deps("a", 2, 2, &[("c", 2)])], NOW).expect("b2");
        // b1 is parked there: held, not applied. It retires, and nothing
        // is persisted.
        let holds = Holds {
            held: vv(&[("a", 1)]),
            direct: vec![r("c")],
        };
        let report = Report {
            applied: &VersionVector::new(),
            holds: Some(&holds),
        };
        let out = o.on_ack(b1.id, report, NOW);
        assert_eq!((out.rewound, out.persist), (false, None));
        assert_eq!(o.in_flight(), 1);
        assert_eq!(o.held(), &vv(&[("a", 1)]));
        assert_eq!(o.acked(), &VersionVector::new(), "held is not acknowledged");
        // b2 is refused (the peer's park is full): the link resends from
        // what it holds, and relays everything in causal order for a while.
        let out = o.on_ack(b2.id, report, NOW);
        assert!(out.rewound);
        assert_eq!(o.sent(), &vv(&[("a", 1)]));
        assert!(!o.leaves_out(&r("c"), NOW + 1));
        let strict_ms = u64::try_from(STRICT_AFTER_REWIND.as_millis()).expect("ms");
        let head = vv(&[("a", 2), ("c", 2)]);
        assert_eq!(o.want(&head, NOW + 1).map(|w| w.upto), Some(head.clone()));
        let b = pack(
            &mut o,
            vec![e("c", 1, 1), e("c", 2, 2), e_deps("a", 2, 3, &[("c", 2)])],
            NOW + 1,
        )
        .expect("batch");
        assert_eq!(b.entries.len(), 2, "c:1..2 first, within the count limit");
        assert!(
            o.leaves_out(&r("c"), NOW + strict_ms),
            "then left out again"
        );
    }

    #[test]
    fn an_origin_the_peer_no_longer_reports_direct_is_relayed_from_what_it_holds() {
        let mut o = to_a_peer_that_parks();
        let holds = Holds {
            held: vv(&[("c", 4)]),
            direct: Vec::new(),
        };
        let applied = vv(&[("c", 2)]);
        let out = o.on_progress(
            Report {
                applied: &applied,
                holds: Some(&holds),
            },
            NOW,
        );
        assert!(out.relays_changed, "the link must read again");
        assert!(!o.leaves_out(&r("c"), NOW));
        let want = o.want(&vv(&[("c", 6)]), NOW).expect("c to relay");
        assert_eq!(want.from, vv(&[("c", 4)]), "c:3..4 are held there");
        // A reconnect forgets what the peer held: it may have restarted.
        o.on_disconnected();
        o.on_connected(&applied, &VersionVector::new(), true, true);
        assert_eq!(o.held(), &applied);
        assert!(!o.leaves_out(&r("c"), NOW), "no report yet on this stream");
    }
}
