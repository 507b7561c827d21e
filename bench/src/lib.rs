//! Tributary benchmarks (see the binaries under `src/bin/`).

/// The attribute values of the benchmarks' ~200-byte items.
#[derive(Debug, Clone)]
pub struct ItemValues {
    /// A ~57-byte title naming the item and the change.
    pub title: String,
    /// A 96-byte body.
    pub body: String,
    /// Two tags (a set attribute).
    pub tags: [String; 2],
}

/// The values change `i` writes to item `k` (`engine_ingest`'s changes;
/// `codec_bench` encodes the same).
pub fn item_values(i: u64, k: u64) -> ItemValues {
    ItemValues {
        title: format!("title {k:012} {:>40}", i),
        body: format!("{:0>96}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        tags: [format!("tag-{:04}", i % 97), format!("tag-{:04}", i % 89)],
    }
}
