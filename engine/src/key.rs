//! Item keys: `(table, partition key value, optional sort key value)` with a
//! canonical byte encoding used as the storage key.
//!
//! Invariants: key values obey DynamoDB's limits (partition key 1–2048 bytes,
//! sort key 1–1024 bytes, type S, N or B), and `ItemKey::decode(k.encode())`
//! returns `k`. Keys of one table share the encoding's prefix, so a prefix
//! scan visits one table.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{IdError, TableName};
use crate::value::Scalar;

/// Largest partition key value, in bytes (DynamoDB's limit).
pub const MAX_PARTITION_KEY_BYTES: usize = 2048;
/// Largest sort key value, in bytes (DynamoDB's limit).
pub const MAX_SORT_KEY_BYTES: usize = 1024;

/// Why a key was refused or could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key value is empty or too long.
    #[error("{which} key value must be 1 to {max} bytes, got {len}")]
    Length {
        /// "partition" or "sort".
        which: &'static str,
        /// The limit.
        max: usize,
        /// The value's length.
        len: usize,
    },
    /// Stored key bytes do not decode.
    #[error("malformed item key bytes: {0}")]
    Malformed(String),
    /// The table name inside stored key bytes is invalid.
    #[error("malformed item key table: {0}")]
    Table(#[from] IdError),
}

/// The address of one item.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ItemKey {
    table: TableName,
    partition: Scalar,
    sort: Option<Scalar>,
}

fn scalar_len(s: &Scalar) -> usize {
    match s {
        Scalar::S(v) => v.len(),
        Scalar::N(n) => n.as_str().len(),
        Scalar::B(b) => b.len(),
    }
}

fn check(which: &'static str, max: usize, s: &Scalar) -> Result<(), KeyError> {
    let len = scalar_len(s);
    if len == 0 || len > max {
        return Err(KeyError::Length { which, max, len });
    }
    Ok(())
}

impl ItemKey {
    /// Validates and builds a key.
    pub fn new(
        table: TableName,
        partition: Scalar,
        sort: Option<Scalar>,
    ) -> Result<Self, KeyError> {
        check("partition", MAX_PARTITION_KEY_BYTES, &partition)?;
        if let Some(s) = &sort {
            check("sort", MAX_SORT_KEY_BYTES, s)?;
        }
        Ok(Self {
            table,
            partition,
            sort,
        })
    }

    /// Roughly how many bytes the key occupies in memory, allocations
    /// included (see [`crate::crdt::ItemState::memory_estimate`]).
    pub(crate) fn memory_estimate(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.table.as_str().len()
            + scalar_len(&self.partition)
            + self.sort.as_ref().map_or(0, scalar_len)
    }

    /// The table.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The partition key value.
    pub fn partition(&self) -> &Scalar {
        &self.partition
    }

    /// The sort key value, if any.
    pub fn sort(&self) -> Option<&Scalar> {
        self.sort.as_ref()
    }

    /// The encoding prefix shared by every key of `table`.
    pub fn table_prefix(table: &TableName) -> Vec<u8> {
        let mut out = Vec::with_capacity(table.as_str().len() + 1);
        // Table names are at most 255 bytes.
        out.push(table.as_str().len() as u8);
        out.extend_from_slice(table.as_str().as_bytes());
        out
    }

    /// Canonical bytes: `len(table) table tag len(pk) pk [tag len(sk) sk]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends [`ItemKey::encode`]'s bytes to `out`.
    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        let table = self.table.as_str();
        out.reserve(1 + table.len() + 3 + scalar_len(&self.partition));
        // Table names are at most 255 bytes.
        out.push(table.len() as u8);
        out.extend_from_slice(table.as_bytes());
        encode_scalar(out, &self.partition);
        if let Some(s) = &self.sort {
            encode_scalar(out, s);
        }
    }

    /// Inverse of [`ItemKey::encode`]; refuses anything `encode` cannot produce.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let mut rest = bytes;
        let tlen = *take(&mut rest, 1)?
            .first()
            .ok_or_else(|| malformed("empty"))? as usize;
        let table = std::str::from_utf8(take(&mut rest, tlen)?)
            .map_err(|_| malformed("table name is not UTF-8"))?;
        let table = TableName::new(table)?;
        let partition = decode_scalar(&mut rest)?;
        let sort = if rest.is_empty() {
            None
        } else {
            Some(decode_scalar(&mut rest)?)
        };
        if !rest.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        ItemKey::new(table, partition, sort)
    }
}

fn malformed(what: &str) -> KeyError {
    KeyError::Malformed(what.to_owned())
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], KeyError> {
    if rest.len() < n {
        return Err(malformed("truncated"));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn encode_scalar(out: &mut Vec<u8>, s: &Scalar) {
    let (tag, bytes): (u8, &[u8]) = match s {
        Scalar::S(v) => (b'S', v.as_bytes()),
        Scalar::N(n) => (b'N', n.as_str().as_bytes()),
        Scalar::B(b) => (b'B', b),
    };
    out.push(tag);
    // Key values are at most 2048 bytes: two bytes of length suffice.
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn decode_scalar(rest: &mut &[u8]) -> Result<Scalar, KeyError> {
    let tag = take(rest, 1)?[0];
    let len_bytes = take(rest, 2)?;
    let len = u16::from_be_bytes([len_bytes[0], len_bytes[1]]) as usize;
    let body = take(rest, len)?;
    let utf8 = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| malformed("key string is not UTF-8"))
    };
    match tag {
        b'S' => Ok(Scalar::S(utf8(body)?)),
        b'N' => {
            let n = utf8(body)?
                .parse()
                .map_err(|e| KeyError::Malformed(format!("key number: {e}")))?;
            Ok(Scalar::N(n))
        }
        b'B' => Ok(Scalar::B(body.to_vec())),
        _ => Err(malformed("unknown key value tag")),
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.table, self.partition)?;
        if let Some(s) = &self.sort {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ItemKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> TableName {
        TableName::new("carts").expect("valid")
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let k = ItemKey::new(
            t(),
            Scalar::S("u1".into()),
            Some(Scalar::N("-12.5".parse().expect("number"))),
        )
        .expect("valid key");
        assert_eq!(ItemKey::decode(&k.encode()).expect("decodes"), k);
        let k2 = ItemKey::new(t(), Scalar::B(vec![0, 1, 2]), None).expect("valid key");
        assert_eq!(ItemKey::decode(&k2.encode()).expect("decodes"), k2);
        assert!(k.encode().starts_with(&ItemKey::table_prefix(&t())));
        let mut bad = k.encode();
        bad.push(7);
        assert!(ItemKey::decode(&bad).is_err());
        assert!(ItemKey::decode(&[]).is_err());
        assert!(ItemKey::decode(&[200, 1]).is_err());
    }

    #[test]
    fn key_limits_follow_dynamodb() {
        assert!(matches!(
            ItemKey::new(t(), Scalar::S(String::new()), None),
            Err(KeyError::Length {
                which: "partition",
                ..
            })
        ));
        assert!(ItemKey::new(t(), Scalar::S("x".repeat(2048)), None).is_ok());
        assert!(ItemKey::new(t(), Scalar::S("x".repeat(2049)), None).is_err());
        assert!(matches!(
            ItemKey::new(t(), Scalar::S("a".into()), Some(Scalar::B(vec![0; 1025]))),
            Err(KeyError::Length { which: "sort", .. })
        ));
    }
}
