//! The table image: per item, what the local DynamoDB table holds as of the
//! latest stream record the source ingested.
//!
//! The source writes an item's image in the same atomic commit as the
//! change its record produced (side state, see
//! [`tributary_engine::store::CommitBatch::side`]), so the image and the
//! merged state always agree on which local writes they include. The sink
//! writes the difference between the merged document and the image, which
//! is exactly what remote regions contributed and the table lacks.
//!
//! The marker attribute is kept apart from the attributes: only the sink
//! writes it, as a number whose magnitude grows with every sink write
//! (negative: the sink is about to delete the item). See [`is_sink_write`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tributary_engine::key::ItemKey;
use tributary_engine::value::AttrValue;

/// How many recent event ids an image remembers (duplicate detection for
/// at-least-once streams such as Kinesis).
pub const RECENT_EVENTS: usize = 16;

/// One item's image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableImage {
    /// The item's attributes as of the latest record (`None`: no item),
    /// without the key attributes and the marker.
    pub attrs: Option<BTreeMap<String, AttrValue>>,
    /// The marker attribute's value, when the item has one.
    pub marker: Option<AttrValue>,
    /// The event ids of the item's latest records, newest last.
    pub recent: Vec<String>,
}

impl TableImage {
    /// Remembers `event_id` (keeping the newest [`RECENT_EVENTS`]).
    pub fn remember(&mut self, event_id: Option<&str>) {
        if let Some(id) = event_id {
            self.recent.push(id.to_owned());
            let excess = self.recent.len().saturating_sub(RECENT_EVENTS);
            self.recent.drain(..excess);
        }
    }

    /// Whether a record with `event_id` was already ingested.
    pub fn has_seen(&self, event_id: Option<&str>) -> bool {
        event_id.is_some_and(|id| self.recent.iter().any(|r| r == id))
    }

    /// Encodes for the side state.
    pub fn encode(&self) -> Vec<u8> {
        // Our own types always serialize.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes a value written by [`TableImage::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// The side-state key of an item's image.
pub fn image_key(key: &ItemKey) -> Vec<u8> {
    let mut out = b"dynamodb-image/".to_vec();
    out.extend_from_slice(&key.encode());
    out
}

/// A marker value as a number (`None` when absent or not an integer N).
pub fn marker_number(v: Option<&AttrValue>) -> Option<i128> {
    match v {
        Some(AttrValue::N(n)) => n.to_i128(),
        _ => None,
    }
}

/// Whether a record with these marker values is the sink's own write:
/// an update whose marker grew in magnitude (the sink always writes a
/// token larger than the marker it found; an application that copies an
/// old marker back writes a smaller or equal one), or a delete of an item
/// whose marker is negative (the sink marks an item that way just before
/// deleting it).
pub fn is_sink_write(removed: bool, old: Option<&AttrValue>, new: Option<&AttrValue>) -> bool {
    let old = marker_number(old);
    if removed {
        return old.is_some_and(|m| m < 0);
    }
    match (old, marker_number(new)) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(o), Some(n)) => n.unsigned_abs() > o.unsigned_abs(),
    }
}

/// The next sink token after `current` (the image's marker), at least
/// `floor` (e.g. derived from the clock, so tokens also grow across items).
pub fn next_token(current: Option<&AttrValue>, floor: u64) -> u64 {
    let above = marker_number(current)
        .map(|m| u64::try_from(m.unsigned_abs()).unwrap_or(u64::MAX))
        .unwrap_or(0)
        .saturating_add(1);
    above.max(floor)
}

#[cfg(test)]
mod tests {
    use tributary_engine::value::Number;

    use super::*;

    fn n(v: i128) -> AttrValue {
        AttrValue::N(Number::from_i128(v))
    }

    #[test]
    fn sink_writes_grow_the_marker_and_copies_do_not() {
        assert!(is_sink_write(false, None, Some(&n(5))), "first sink write");
        assert!(
            is_sink_write(false, Some(&n(5)), Some(&n(9))),
            "later sink write"
        );
        assert!(
            is_sink_write(false, Some(&n(5)), Some(&n(-9))),
            "delete intent"
        );
        assert!(!is_sink_write(false, Some(&n(9)), Some(&n(9))), "untouched");
        assert!(
            !is_sink_write(false, Some(&n(9)), Some(&n(5))),
            "stale copy"
        );
        assert!(
            !is_sink_write(false, Some(&n(9)), None),
            "put without marker"
        );
        assert!(!is_sink_write(false, None, None), "no marker at all");
        assert!(is_sink_write(true, Some(&n(-9)), None), "the sink's delete");
        assert!(
            !is_sink_write(true, Some(&n(9)), None),
            "an application delete"
        );
        assert!(!is_sink_write(true, None, None), "an application delete");
    }

    #[test]
    fn tokens_exceed_the_current_marker_and_the_floor() {
        assert_eq!(next_token(None, 0), 1);
        assert_eq!(next_token(Some(&n(7)), 0), 8);
        assert_eq!(next_token(Some(&n(-7)), 3), 8);
        assert_eq!(next_token(Some(&n(7)), 100), 100);
    }

    #[test]
    fn images_remember_recent_events_and_round_trip() {
        let mut img = TableImage::default();
        for i in 0..20 {
            img.remember(Some(&format!("e{i}")));
        }
        assert_eq!(img.recent.len(), RECENT_EVENTS);
        assert!(img.has_seen(Some("e19")) && !img.has_seen(Some("e3")));
        assert!(!img.has_seen(None));
        img.marker = Some(n(42));
        img.attrs = Some(BTreeMap::from([("a".to_owned(), AttrValue::S("x".into()))]));
        assert_eq!(TableImage::decode(&img.encode()).expect("decodes"), img);
    }
}
