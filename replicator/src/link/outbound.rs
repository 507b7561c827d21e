//! The sending side of one peer link, as a pure state machine.
//!
//! It decides what to read from the log and ship, keeps a window of batches
//! in flight, and turns the peer's acknowledgements into the durable
//! acknowledged vector. It does no I/O: the link task feeds it events
//! (connected, entries read, ack received) and carries out what it returns.
//!
//! Invariants:
//! - `acked ≤ sent` pointwise while connected, and `acked` never decreases
//!   (it is persisted; a restart resumes from it);
//! - batches leave in HLC order with, per origin, contiguous seqs starting
//!   right after `sent` — what the receiver's dense-seq check expects;
//! - at most `max_in_flight` batches are unacknowledged (flow control
//!   without stop-and-wait);
//! - an ack that does not cover its batch (the receiver stopped at a gap, a
//!   missing dependency or a clock-skew refusal) rewinds `sent` to what the
//!   peer has: go-back-N, duplicates being harmless at the receiver.

use std::collections::VecDeque;

use tributary_engine::change::LogEntry;
use tributary_engine::ids::{RegionId, Seq, VersionVector};

/// Limits of one link's batching and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    /// Entries per batch.
    pub max_entries: usize,
    /// Encoded bytes per batch (at least one entry is always sent).
    pub max_bytes: usize,
    /// Batches sent and not yet acknowledged.
    pub max_in_flight: usize,
}

/// Names one batch on a link; increasing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchId(pub u64);

/// A batch to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Its id (echoed by the ack).
    pub id: BatchId,
    /// Entries in HLC order.
    pub entries: Vec<LogEntry>,
}

#[derive(Debug, Clone)]
struct InFlight {
    id: BatchId,
    /// `sent` right after this batch.
    upto: VersionVector,
}

/// What an acknowledgement changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AckOutcome {
    /// Records newly acknowledged (for throughput figures).
    pub newly_acked: u64,
    /// The acknowledged vector to persist, when it moved.
    pub persist: Option<VersionVector>,
    /// True when the peer stopped short and sending restarts from `acked`.
    pub rewound: bool,
}

/// The sender's state for one peer.
#[derive(Debug, Clone)]
pub struct Outbound {
    peer: RegionId,
    limits: OutboundLimits,
    acked: VersionVector,
    sent: VersionVector,
    in_flight: VecDeque<InFlight>,
    next_id: u64,
    connected: bool,
    paused: bool,
}

impl Outbound {
    /// A link that resumes from the persisted acknowledged vector.
    pub fn new(peer: RegionId, limits: OutboundLimits, acked: VersionVector) -> Self {
        Self {
            peer,
            limits,
            sent: acked.clone(),
            acked,
            in_flight: VecDeque::new(),
            next_id: 1,
            connected: false,
            paused: false,
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

    /// A stream is up and the peer said what it has (its applied vector,
    /// durable on its side). Sending restarts from there; returns the
    /// acknowledged vector to persist if the handshake moved it.
    pub fn on_connected(&mut self, peer_applied: &VersionVector) -> Option<VersionVector> {
        self.connected = true;
        self.in_flight.clear();
        let before = self.acked.clone();
        self.acked.join(peer_applied);
        self.sent = self.acked.clone();
        (self.acked != before).then(|| self.acked.clone())
    }

    /// The stream went down: whatever was in flight will be resent.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        self.in_flight.clear();
        self.sent = self.acked.clone();
    }

    /// Stops or restarts shipping (operator `pause` / `resume`); batches in
    /// flight still get their acks.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// What to read next from the log, given its head: entries above the
    /// returned vector, at most the returned count. `None` when the link is
    /// down or paused, the window is full, or the peer is up to date.
    pub fn want(&self, head: &VersionVector) -> Option<(VersionVector, usize)> {
        let room = self.connected
            && !self.paused
            && self.in_flight.len() < self.limits.max_in_flight
            && !head.dominated_by(&self.sent);
        room.then(|| (self.sent.clone(), self.limits.max_entries))
    }

    /// Packs entries read above [`Outbound::want`]'s vector (in HLC order)
    /// into the next batch: a prefix within the count and byte limits,
    /// always at least one entry. `size_of` gives an entry's encoded size.
    /// Entries the peer is already sent are skipped.
    pub fn pack(
        &mut self,
        entries: Vec<LogEntry>,
        size_of: impl Fn(&LogEntry) -> usize,
    ) -> Option<Batch> {
        let (id, entries) = self.pack_with(entries, |e| (&e.origin, e.seq), size_of)?;
        Some(Batch { id, entries })
    }

    /// [`Outbound::pack`] over any form of the entries (e.g. already
    /// encoded for the wire, so each is encoded once): `id_of` gives an
    /// entry's origin and seq. Returns the batch's id and its entries.
    pub fn pack_with<E>(
        &mut self,
        entries: Vec<E>,
        id_of: impl Fn(&E) -> (&RegionId, Seq),
        size_of: impl Fn(&E) -> usize,
    ) -> Option<(BatchId, Vec<E>)> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        let mut sent = self.sent.clone();
        for e in entries {
            let (origin, seq) = id_of(&e);
            if seq <= sent.get(origin) {
                continue;
            }
            if seq != sent.get(origin).next() {
                // Not contiguous with what was sent: the log was read from
                // a stale vector. Stop here; the rest is read again.
                break;
            }
            let size = size_of(&e);
            if !batch.is_empty()
                && (batch.len() >= self.limits.max_entries || bytes + size > self.limits.max_bytes)
            {
                break;
            }
            bytes += size;
            sent.set(origin.clone(), seq);
            batch.push(e);
        }
        if batch.is_empty() {
            return None;
        }
        let id = BatchId(self.next_id);
        self.next_id += 1;
        self.sent = sent.clone();
        self.in_flight.push_back(InFlight { id, upto: sent });
        Some((id, batch))
    }

    /// The peer acknowledged batch `id` with its applied vector.
    pub fn on_ack(&mut self, id: BatchId, applied: &VersionVector) -> AckOutcome {
        let before = self.acked.clone();
        self.acked.join(applied);
        let newly_acked = self.acked.records_ahead_of(&before);
        // What the peer has — also from other peers (relaying) — needs no
        // sending: without this, every entry reached a peer once per path
        // (two thirds of what receivers got were duplicates).
        self.sent.join(&self.acked);
        let covered = self
            .in_flight
            .iter()
            .find(|b| b.id == id)
            .is_none_or(|b| b.upto.dominated_by(applied));
        let rewound = !covered;
        if rewound {
            self.in_flight.clear();
            self.sent = self.acked.clone();
        } else {
            while self
                .in_flight
                .front()
                .is_some_and(|b| b.id <= id || b.upto.dominated_by(&self.acked))
            {
                self.in_flight.pop_front();
            }
        }
        AckOutcome {
            newly_acked,
            persist: (self.acked != before).then(|| self.acked.clone()),
            rewound,
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

    fn r(s: &str) -> RegionId {
        RegionId::new(s).expect("region")
    }

    fn e(origin: &str, seq: u64, hlc: u64) -> LogEntry {
        LogEntry {
            origin: r(origin),
            seq: Seq(seq),
            hlc: Hlc::new(hlc, 0),
            deps: VersionVector::new(),
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
        }
    }

    #[test]
    fn ships_nothing_until_connected_then_resumes_from_what_the_peer_has() {
        let mut o = Outbound::new(r("b"), limits(), vv(&[("a", 1)]));
        let head = vv(&[("a", 3)]);
        assert_eq!(o.want(&head), None, "no stream, nothing to read");
        let persist = o.on_connected(&vv(&[("a", 2), ("b", 7)]));
        assert_eq!(
            persist,
            Some(vv(&[("a", 2), ("b", 7)])),
            "the handshake is an ack"
        );
        assert_eq!(o.want(&head), Some((vv(&[("a", 2), ("b", 7)]), 2)));
    }

    #[test]
    fn what_the_peer_got_from_others_is_not_sent_again() {
        let mut o = Outbound::new(r("b"), limits(), VersionVector::new());
        o.on_connected(&VersionVector::new());
        let read = |from: u64| (from..=6).map(|s| e("c", s, s)).collect::<Vec<_>>();
        let b1 = o.pack(read(1), |_| 10).expect("batch");
        // The peer acks batch 1 with entries up to 5 it got from another
        // peer meanwhile: only 6 remains to send.
        o.on_ack(b1.id, &vv(&[("c", 5)]));
        assert_eq!(o.sent(), &vv(&[("c", 5)]));
        assert_eq!(o.want(&vv(&[("c", 6)])), Some((vv(&[("c", 5)]), 2)));
        let b2 = o.pack(read(6), |_| 10).expect("batch");
        assert_eq!(b2.entries.iter().map(|e| e.seq.0).collect::<Vec<_>>(), [6]);
        o.on_ack(b2.id, &vv(&[("c", 6)]));
        assert_eq!(o.want(&vv(&[("c", 6)])), None, "up to date");
    }

    #[test]
    fn batches_respect_count_bytes_and_the_window() {
        let mut o = Outbound::new(r("b"), limits(), VersionVector::new());
        o.on_connected(&VersionVector::new());
        let head = vv(&[("a", 5)]);
        let read = || (1..=5).map(|s| e("a", s, s)).collect::<Vec<_>>();
        let b1 = o.pack(read(), |_| 10).expect("batch");
        assert_eq!(b1.entries.len(), 2, "count limit");
        let b2 = o.pack(read(), |_| 600).expect("batch");
        assert_eq!(b2.entries.len(), 1, "byte limit, but never empty");
        assert_eq!(o.want(&head), None, "window of 2 is full");
        let out = o.on_ack(b1.id, &vv(&[("a", 2)]));
        assert_eq!((out.newly_acked, out.rewound), (2, false));
        assert_eq!(out.persist, Some(vv(&[("a", 2)])));
        assert_eq!(o.in_flight(), 1);
        assert_eq!(o.want(&head), Some((vv(&[("a", 3)]), 2)));
    }

    #[test]
    fn an_ack_that_stops_short_rewinds_to_what_the_peer_has() {
        let mut o = Outbound::new(r("b"), limits(), VersionVector::new());
        o.on_connected(&VersionVector::new());
        let b1 = o
            .pack(vec![e("a", 1, 1), e("c", 1, 2)], |_| 1)
            .expect("batch");
        // The peer applied a:1 but refused c:1 (say, a missing dependency).
        let out = o.on_ack(b1.id, &vv(&[("a", 1)]));
        assert!(out.rewound);
        assert_eq!(o.sent(), &vv(&[("a", 1)]));
        assert_eq!(o.in_flight(), 0);
        let again = o.pack(vec![e("c", 1, 2)], |_| 1).expect("resend");
        assert_eq!(again.entries[0].origin, r("c"));
    }

    #[test]
    fn a_stale_read_is_cut_at_the_first_gap_and_duplicates_are_skipped() {
        let mut o = Outbound::new(r("b"), limits(), vv(&[("a", 1)]));
        o.on_connected(&VersionVector::new());
        let b = o
            .pack(vec![e("a", 1, 1), e("a", 2, 2), e("a", 4, 4)], |_| 1)
            .expect("batch");
        assert_eq!(
            b.entries.iter().map(|e| e.seq.0).collect::<Vec<_>>(),
            vec![2]
        );
    }

    #[test]
    fn acks_never_move_backwards_and_disconnect_resends_in_flight() {
        let mut o = Outbound::new(r("b"), limits(), VersionVector::new());
        o.on_connected(&VersionVector::new());
        let b1 = o
            .pack(vec![e("a", 1, 1), e("a", 2, 2)], |_| 1)
            .expect("batch");
        o.on_ack(b1.id, &vv(&[("a", 2)]));
        let out = o.on_ack(b1.id, &vv(&[("a", 1)]));
        assert_eq!(out.persist, None, "an old ack changes nothing");
        assert_eq!(o.acked(), &vv(&[("a", 2)]));
        o.pack(vec![e("a", 3, 3)], |_| 1).expect("batch");
        o.on_disconnected();
        assert_eq!(o.sent(), &vv(&[("a", 2)]), "unacked entries will be resent");
        o.set_paused(true);
        o.on_connected(&VersionVector::new());
        assert_eq!(o.want(&vv(&[("a", 3)])), None, "paused");
        o.set_paused(false);
        assert!(o.want(&vv(&[("a", 3)])).is_some());
    }
}
