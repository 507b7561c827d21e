//! A digest of every item state in a store: equal on regions that have
//! converged, whatever order their changes arrived in.
//!
//! The digest covers items only (logs differ legitimately: truncation points,
//! relay order). It hashes, in key order, each item's canonical key bytes
//! and its canonical encoded state (the compact form is a pure function of
//! the state: regions and attributes are visited in a fixed order), each
//! length-prefixed so that no two different sequences hash alike.

use sha2::{Digest as _, Sha256};

use super::{LogStore, StoreError, encode_item_state};

/// The digest of a store's items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemsDigest {
    /// Item states hashed (deleted items with remembered context included).
    pub items: u64,
    /// Items that exist (not deleted).
    pub live_items: u64,
    /// SHA-256, hex.
    pub digest: String,
}

/// Hashes every item of `store`, `page` items at a time.
pub fn digest_items(store: &impl LogStore, page: usize) -> Result<ItemsDigest, StoreError> {
    let mut hasher = Sha256::new();
    let mut items = 0u64;
    let mut live_items = 0u64;
    let mut after = None;
    loop {
        let batch = store.scan_items(None, after.as_ref(), page.max(1))?;
        let Some((last, _)) = batch.last() else { break };
        let last = last.clone();
        for (key, state) in &batch {
            let k = key.encode();
            let v = encode_item_state(state)?;
            hasher.update((k.len() as u64).to_le_bytes());
            hasher.update(&k);
            hasher.update((v.len() as u64).to_le_bytes());
            hasher.update(&v);
            items += 1;
            live_items += u64::from(state.exists());
        }
        after = Some(last);
    }
    let digest = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(ItemsDigest {
        items,
        live_items,
        digest,
    })
}
