//! The serialized form of an [`ItemState`] (stored items and shipped deltas).
//!
//! The in-memory state names regions by string in every dot; serialized
//! naively, a region name such as `us-east-1` would repeat in every dot and
//! counter entry, and every sibling would carry a full 8–9 byte HLC. The
//! compact form keeps, per item, one table of the regions it mentions (dots
//! then refer to an index) and one base HLC (siblings store their distance
//! below it, usually 0 or a few bytes). Decoding validates every index, so a
//! malformed form is an error, never a panic.

use std::borrow::Cow;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::context::CausalContext;
use super::counter::CounterState;
use super::item::{AttrState, ItemState, Sibling};
use super::sorted::{SortedMap, SortedSet};
use crate::ids::{AttrName, Dot, Hlc, RegionId};
use crate::value::{AttrValue, Scalar};

/// A dot as (region index, counter).
type CDot = (u32, u64);

/// A register sibling: dot, distance below the base HLC, value.
type CSibling<'a> = (CDot, u64, Option<Cow<'a, AttrValue>>);

/// The compact form. Encoding borrows from the state (`Cow::Borrowed`, no
/// copies of values); decoding owns. Both give the same bytes.
#[derive(Serialize, Deserialize)]
struct Compact<'a> {
    regions: Vec<Cow<'a, RegionId>>,
    hlc_base: u64,
    vv: Vec<CDot>,
    cloud: Vec<CDot>,
    alive: Vec<CDot>,
    attrs: Vec<(Cow<'a, AttrName>, CAttr<'a>)>,
}

#[derive(Serialize, Deserialize)]
enum CAttr<'a> {
    Lww(Vec<CSibling<'a>>),
    Multi(Vec<CSibling<'a>>),
    Set(Vec<(Cow<'a, Scalar>, Vec<CDot>)>),
    Counter([Vec<(u32, u128)>; 4]),
}

/// Builds the region table while encoding.
#[derive(Default)]
struct Regions<'a> {
    list: Vec<Cow<'a, RegionId>>,
}

impl<'a> Regions<'a> {
    /// The index of `r`; items mention a handful of regions, so a linear
    /// search beats a map.
    fn of(&mut self, r: &'a RegionId) -> u32 {
        let i = match self.list.iter().position(|x| x.as_ref() == r) {
            Some(i) => i,
            None => {
                self.list.push(Cow::Borrowed(r));
                self.list.len() - 1
            }
        };
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    fn dot(&mut self, d: &'a Dot) -> CDot {
        (self.of(&d.region), d.counter)
    }
}

fn max_hlc(state: &ItemState) -> u64 {
    state
        .attrs()
        .values()
        .flat_map(|a| match a {
            AttrState::Lww(m) | AttrState::Multi(m) => m.values().map(|s| s.hlc.0).max(),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

fn to_compact(state: &ItemState) -> Compact<'_> {
    let mut regions = Regions::default();
    let hlc_base = max_hlc(state);
    let ctx = state.context();
    let vv = ctx.vector().map(|(r, n)| (regions.of(r), n)).collect();
    let cloud = ctx.cloud().map(|d| regions.dot(d)).collect();
    let alive = state.alive().iter().map(|d| regions.dot(d)).collect();
    fn siblings<'a>(
        m: &'a SortedMap<Dot, Sibling>,
        regions: &mut Regions<'a>,
        hlc_base: u64,
    ) -> Vec<CSibling<'a>> {
        m.iter()
            .map(|(d, s)| {
                (
                    (regions.of(&d.region), d.counter),
                    hlc_base - s.hlc.0,
                    s.value.as_ref().map(Cow::Borrowed),
                )
            })
            .collect()
    }
    let mut attrs = Vec::with_capacity(state.attrs().len());
    for (name, a) in state.attrs() {
        let c = match a {
            AttrState::Lww(m) => CAttr::Lww(siblings(m, &mut regions, hlc_base)),
            AttrState::Multi(m) => CAttr::Multi(siblings(m, &mut regions, hlc_base)),
            AttrState::Set(m) => CAttr::Set(
                m.iter()
                    .map(|(e, dots)| {
                        (
                            Cow::Borrowed(e),
                            dots.iter()
                                .map(|d| (regions.of(&d.region), d.counter))
                                .collect(),
                        )
                    })
                    .collect(),
            ),
            AttrState::Counter(c) => {
                let [inc, dec, base_inc, base_dec] = c.parts();
                fn map<'a>(
                    m: &'a SortedMap<RegionId, u128>,
                    regions: &mut Regions<'a>,
                ) -> Vec<(u32, u128)> {
                    m.iter().map(|(r, v)| (regions.of(r), *v)).collect()
                }
                CAttr::Counter([
                    map(inc, &mut regions),
                    map(dec, &mut regions),
                    map(base_inc, &mut regions),
                    map(base_dec, &mut regions),
                ])
            }
        };
        attrs.push((Cow::Borrowed(name), c));
    }
    Compact {
        regions: regions.list,
        hlc_base,
        vv,
        cloud,
        alive,
        attrs,
    }
}

fn from_compact(c: Compact<'_>) -> Result<ItemState, String> {
    // Consumed, so that decoded values, names and elements move into the
    // state rather than being copied once more.
    let Compact {
        regions,
        hlc_base,
        vv,
        cloud,
        alive,
        attrs: compact_attrs,
    } = c;
    let regions: Vec<RegionId> = regions.into_iter().map(Cow::into_owned).collect();
    let region = |i: u32| -> Result<RegionId, String> {
        regions.get(i as usize).cloned().ok_or_else(|| {
            format!(
                "region index {i} beyond the item's {} regions",
                regions.len()
            )
        })
    };
    let dot = |(i, n): CDot| -> Result<Dot, String> { Ok(Dot::new(region(i)?, n)) };
    let hlc = |below: u64| -> Result<Hlc, String> {
        hlc_base
            .checked_sub(below)
            .map(Hlc)
            .ok_or_else(|| format!("sibling HLC {below} below base {hlc_base} underflows"))
    };
    let vv = vv
        .iter()
        .map(|(i, n)| Ok((region(*i)?, *n)))
        .collect::<Result<Vec<_>, String>>()?;
    let cloud = cloud
        .iter()
        .map(|d| dot(*d))
        .collect::<Result<Vec<_>, String>>()?;
    let ctx = CausalContext::from_parts(vv, cloud);
    let alive = alive
        .iter()
        .map(|d| dot(*d))
        .collect::<Result<SortedSet<_>, String>>()?;
    let siblings = |v: Vec<CSibling<'_>>| -> Result<SortedMap<Dot, Sibling>, String> {
        v.into_iter()
            .map(|(d, below, value)| {
                Ok((
                    dot(d)?,
                    Sibling {
                        hlc: hlc(below)?,
                        value: value.map(Cow::into_owned),
                    },
                ))
            })
            .collect()
    };
    let mut attrs = SortedMap::with_capacity(compact_attrs.len());
    for (name, a) in compact_attrs {
        let state = match a {
            CAttr::Lww(v) => AttrState::Lww(siblings(v)?),
            CAttr::Multi(v) => AttrState::Multi(siblings(v)?),
            CAttr::Set(v) => AttrState::Set(
                v.into_iter()
                    .map(|(e, dots)| {
                        Ok((
                            e.into_owned(),
                            dots.iter()
                                .map(|d| dot(*d))
                                .collect::<Result<SortedSet<_>, String>>()?,
                        ))
                    })
                    .collect::<Result<SortedMap<_, _>, String>>()?,
            ),
            CAttr::Counter(parts) => {
                let map = |m: &[(u32, u128)]| -> Result<SortedMap<RegionId, u128>, String> {
                    m.iter().map(|(i, v)| Ok((region(*i)?, *v))).collect()
                };
                AttrState::Counter(CounterState::from_parts([
                    map(&parts[0])?,
                    map(&parts[1])?,
                    map(&parts[2])?,
                    map(&parts[3])?,
                ]))
            }
        };
        attrs.insert(name.into_owned(), state);
    }
    Ok(ItemState::from_parts(ctx, alive, attrs))
}

// ---------------------------------------------------------------------------
// The direct writer: the same bytes as `postcard` gives for `Compact`, written
// straight from the state (no intermediate vectors, no copies of values).

/// Appends postcard's encoding of primitives, and of any `Serialize` value,
/// to a byte vector. What [`write_compact`] and the stores' log entry
/// encoder build on; the bytes are exactly postcard's, so the serde
/// decoders read them back.
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

/// A postcard output that appends to a borrowed vector.
struct Appender<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Appender<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

impl Writer<'_> {
    /// An unsigned integer (`u16` to `u128`, `usize` lengths): LEB128.
    pub(crate) fn varint(&mut self, mut n: u128) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    /// A `u64` (the common case, without 128-bit arithmetic).
    pub(crate) fn u64(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    /// A sequence or string length.
    pub(crate) fn length(&mut self, n: usize) {
        self.u64(n as u64);
    }

    /// A string.
    pub(crate) fn str(&mut self, s: &str) {
        self.length(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    /// Any value, through postcard's serializer.
    pub(crate) fn serde<T: Serialize + ?Sized>(&mut self, value: &T) -> postcard::Result<()> {
        postcard::serialize_with_flavor(value, Appender(self.0))
    }
}

/// The regions an item mentions, in order of first mention (the order
/// `to_compact` builds its table in). Items mention a handful: the first
/// few live inline.
struct RegionTable<'a> {
    inline: [Option<&'a RegionId>; 8],
    len: usize,
    spill: Vec<&'a RegionId>,
}

impl<'a> RegionTable<'a> {
    fn new() -> Self {
        RegionTable {
            inline: [None; 8],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn get(&self, i: usize) -> Option<&'a RegionId> {
        if i < self.inline.len() {
            self.inline[i]
        } else {
            self.spill.get(i - self.inline.len()).copied()
        }
    }

    /// The index of `r`, adding it when new.
    fn of(&mut self, r: &'a RegionId) -> u32 {
        let found = (0..self.len).find(|&i| self.get(i).is_some_and(|x| x.same(r) || x == r));
        let i = match found {
            Some(i) => i,
            None => {
                if self.len < self.inline.len() {
                    self.inline[self.len] = Some(r);
                } else {
                    self.spill.push(r);
                }
                self.len += 1;
                self.len - 1
            }
        };
        u32::try_from(i).unwrap_or(u32::MAX)
    }

    /// The index of `r`, which [`RegionTable::collect`] added (`u32::MAX`,
    /// which no decoder accepts, if it did not).
    fn index(&self, r: &RegionId) -> u32 {
        (0..self.len)
            .find(|&i| self.get(i).is_some_and(|x| x.same(r) || x == r))
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(u32::MAX)
    }

    /// Adds every region `state` mentions, in `to_compact`'s order.
    fn collect(&mut self, state: &'a ItemState) {
        let ctx = state.context();
        for (r, _) in ctx.vector() {
            self.of(r);
        }
        for d in ctx.cloud().chain(state.alive()) {
            self.of(&d.region);
        }
        for a in state.attrs().values() {
            match a {
                AttrState::Lww(m) | AttrState::Multi(m) => {
                    for d in m.keys() {
                        self.of(&d.region);
                    }
                }
                AttrState::Set(m) => {
                    for d in m.values().flatten() {
                        self.of(&d.region);
                    }
                }
                AttrState::Counter(c) => {
                    for part in c.parts() {
                        for r in part.keys() {
                            self.of(r);
                        }
                    }
                }
            }
        }
    }
}

/// Appends the compact form of `state` to `out`: the same bytes as
/// `postcard` gives for the state's `Serialize` impl, without building the
/// compact form first.
pub(crate) fn write_compact(state: &ItemState, out: &mut Vec<u8>) -> postcard::Result<()> {
    let mut regions = RegionTable::new();
    regions.collect(state);
    let regions = regions;
    let hlc_base = max_hlc(state);
    let mut w = Writer(out);
    w.length(regions.len);
    for i in 0..regions.len {
        if let Some(r) = regions.get(i) {
            w.str(r.as_str());
        }
    }
    w.u64(hlc_base);
    let dot = |w: &mut Writer<'_>, regions: &RegionTable<'_>, d: &Dot| {
        w.u64(u64::from(regions.index(&d.region)));
        w.u64(d.counter);
    };
    let ctx = state.context();
    w.length(ctx.vector().len());
    for (r, n) in ctx.vector() {
        w.u64(u64::from(regions.index(r)));
        w.u64(n);
    }
    w.length(ctx.cloud().len());
    for d in ctx.cloud() {
        dot(&mut w, &regions, d);
    }
    w.length(state.alive().len());
    for d in state.alive() {
        dot(&mut w, &regions, d);
    }
    w.length(state.attrs().len());
    for (name, a) in state.attrs() {
        w.str(name.as_str());
        match a {
            AttrState::Lww(m) | AttrState::Multi(m) => {
                // `CAttr`'s variant index.
                w.u64(if matches!(a, AttrState::Lww(_)) { 0 } else { 1 });
                w.length(m.len());
                for (d, s) in m {
                    dot(&mut w, &regions, d);
                    w.u64(hlc_base - s.hlc.0);
                    match &s.value {
                        None => w.0.push(0),
                        Some(v) => {
                            w.0.push(1);
                            w.serde(v)?;
                        }
                    }
                }
            }
            AttrState::Set(m) => {
                w.u64(2);
                w.length(m.len());
                for (e, dots) in m {
                    w.serde(e)?;
                    w.length(dots.len());
                    for d in dots {
                        dot(&mut w, &regions, d);
                    }
                }
            }
            AttrState::Counter(c) => {
                w.u64(3);
                for part in c.parts() {
                    w.length(part.len());
                    for (r, v) in part {
                        w.u64(u64::from(regions.index(r)));
                        w.varint(*v);
                    }
                }
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The direct reader: postcard's bytes for `Compact` decoded straight into the
// state (no intermediate vectors or copies of values, each region name
// allocated once), with postcard's checks: it accepts exactly what the serde
// path (`Deserialize`, through `Compact`) accepts and gives the same state,
// which a property test holds it to.

/// Reads postcard's encoding of primitives from the front of a byte slice:
/// the inverse of [`Writer`].
struct Reader<'a>(&'a [u8]);

/// The message of every read past the end.
const ENDS_EARLY: &str = "the value ends early";

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.0.split_first().ok_or(ENDS_EARLY)?;
        self.0 = rest;
        Ok(b)
    }

    /// An unsigned LEB128 integer of `bits` bits, read as postcard reads
    /// it: at most `⌈bits / 7⌉` bytes, the last holding only the bits left.
    fn varint(&mut self, bits: u32) -> Result<u128, String> {
        let max = bits.div_ceil(7);
        let mut out = 0u128;
        for i in 0..max {
            let b = self.byte()?;
            out |= u128::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i == max - 1 && u32::from(b) >= 1 << (bits % 7) {
                    break;
                }
                return Ok(out);
            }
        }
        Err(format!("a varint overflows {bits} bits"))
    }

    /// A `u32` (region indices, enum variants).
    fn u32(&mut self) -> Result<u32, String> {
        // In range: `varint` checked the width.
        self.varint(32).map(|n| n as u32)
    }

    /// A `u64`.
    fn u64(&mut self) -> Result<u64, String> {
        self.varint(64).map(|n| n as u64)
    }

    /// A sequence or string length.
    fn length(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "a length overflows usize".to_owned())
    }

    /// A capacity for `n` elements of at least one byte each: never more
    /// than the bytes left could hold, whatever a corrupt length says.
    fn capacity(&self, n: usize) -> usize {
        n.min(self.0.len())
    }

    /// A string, borrowed.
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.length()?;
        if n > self.0.len() {
            return Err(ENDS_EARLY.to_owned());
        }
        let (bytes, rest) = self.0.split_at(n);
        self.0 = rest;
        std::str::from_utf8(bytes).map_err(|_| "a string is not UTF-8".to_owned())
    }

    /// Any value, through postcard's deserializer.
    fn serde<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, String> {
        let (value, rest) = postcard::take_from_bytes(self.0).map_err(|e| e.to_string())?;
        self.0 = rest;
        Ok(value)
    }

    /// A region by its index into `regions`.
    fn region(&mut self, regions: &[RegionId]) -> Result<RegionId, String> {
        let i = self.u32()?;
        regions.get(i as usize).cloned().ok_or_else(|| {
            format!(
                "region index {i} beyond the item's {} regions",
                regions.len()
            )
        })
    }

    /// A dot: region index, counter.
    fn dot(&mut self, regions: &[RegionId]) -> Result<Dot, String> {
        let region = self.region(regions)?;
        Ok(Dot::new(region, self.u64()?))
    }

    /// A sequence of dots.
    fn dots<C: FromIterator<Dot>>(&mut self, regions: &[RegionId]) -> Result<C, String> {
        let n = self.length()?;
        (0..n).map(|_| self.dot(regions)).collect()
    }

    /// A register's siblings.
    fn siblings(
        &mut self,
        regions: &[RegionId],
        hlc_base: u64,
    ) -> Result<SortedMap<Dot, Sibling>, String> {
        let n = self.length()?;
        (0..n)
            .map(|_| {
                let dot = self.dot(regions)?;
                let below = self.u64()?;
                let hlc = hlc_base.checked_sub(below).map(Hlc).ok_or_else(|| {
                    format!("sibling HLC {below} below base {hlc_base} underflows")
                })?;
                let value = match self.byte()? {
                    0 => None,
                    1 => Some(self.serde::<AttrValue>()?),
                    b => return Err(format!("option tag {b} is neither 0 nor 1")),
                };
                Ok((dot, Sibling { hlc, value }))
            })
            .collect()
    }

    /// One of a counter's four per-region maps.
    fn counter_part(&mut self, regions: &[RegionId]) -> Result<SortedMap<RegionId, u128>, String> {
        let n = self.length()?;
        (0..n)
            .map(|_| Ok((self.region(regions)?, self.varint(128)?)))
            .collect()
    }
}

/// Decodes the compact form at the front of `bytes` (as [`write_compact`]
/// or postcard wrote it): the state and the bytes after it.
pub(crate) fn read_compact(bytes: &[u8]) -> Result<(ItemState, &[u8]), String> {
    read_compact_sharing(bytes, &[])
}

/// [`read_compact`], where a region named in `known` is that one (shared,
/// not allocated again: later comparisons with it are pointer tests).
pub(crate) fn read_compact_sharing<'b>(
    bytes: &'b [u8],
    known: &[RegionId],
) -> Result<(ItemState, &'b [u8]), String> {
    let mut r = Reader(bytes);
    let n = r.length()?;
    let mut regions = Vec::with_capacity(r.capacity(n));
    for _ in 0..n {
        let name = r.str()?;
        regions.push(match known.iter().find(|k| k.as_str() == name) {
            Some(k) => k.clone(),
            None => RegionId::from_borrowed(name).map_err(|e| e.to_string())?,
        });
    }
    let hlc_base = r.u64()?;
    let n = r.length()?;
    let mut vv = Vec::with_capacity(r.capacity(n));
    for _ in 0..n {
        let region = r.region(&regions)?;
        vv.push((region, r.u64()?));
    }
    let cloud: Vec<Dot> = r.dots(&regions)?;
    let ctx = CausalContext::from_parts(vv, cloud);
    let alive: SortedSet<Dot> = r.dots(&regions)?;
    let n = r.length()?;
    let mut attrs = SortedMap::with_capacity(r.capacity(n));
    for _ in 0..n {
        let name = AttrName::from_borrowed(r.str()?).map_err(|e| e.to_string())?;
        // `CAttr`'s variant index.
        let state = match r.u32()? {
            0 => AttrState::Lww(r.siblings(&regions, hlc_base)?),
            1 => AttrState::Multi(r.siblings(&regions, hlc_base)?),
            2 => {
                let n = r.length()?;
                AttrState::Set(
                    (0..n)
                        .map(|_| {
                            let element = r.serde::<Scalar>()?;
                            Ok((element, r.dots(&regions)?))
                        })
                        .collect::<Result<_, String>>()?,
                )
            }
            3 => AttrState::Counter(CounterState::from_parts([
                r.counter_part(&regions)?,
                r.counter_part(&regions)?,
                r.counter_part(&regions)?,
                r.counter_part(&regions)?,
            ])),
            v => return Err(format!("attribute kind {v} is unknown")),
        };
        attrs.insert(name, state);
    }
    Ok((ItemState::from_parts(ctx, alive, attrs), r.0))
}

impl Serialize for ItemState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        to_compact(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ItemState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_compact(Compact::deserialize(deserializer)?).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Op;
    use crate::ids::TableName;
    use crate::schema::{MergePolicy, TableSchema};

    fn a(s: &str) -> AttrName {
        AttrName::new(s).expect("attr")
    }

    fn sample() -> ItemState {
        let schema = TableSchema::new(TableName::new("t").expect("t"), a("pk"), None)
            .and_then(|s| s.with_policy(a("qty"), MergePolicy::Counter))
            .and_then(|s| s.with_policy(a("tags"), MergePolicy::Set))
            .and_then(|s| s.with_policy(a("note"), MergePolicy::Multi))
            .expect("schema");
        let ops = |r: &str| {
            vec![
                Op::Set {
                    attr: a("name"),
                    value: AttrValue::S(format!("from {r}")),
                },
                Op::Set {
                    attr: a("note"),
                    value: AttrValue::S(r.into()),
                },
                Op::Add {
                    attr: a("qty"),
                    amount: -3,
                },
                Op::AddToSet {
                    attr: a("tags"),
                    elements: vec![Scalar::S(r.into())],
                },
            ]
        };
        let base = ItemState::new();
        let x = base
            .prepare(
                &schema,
                &RegionId::new("us-east-1").expect("r"),
                Hlc::new(10, 1),
                &ops("x"),
            )
            .expect("ok");
        let y = base
            .prepare(
                &schema,
                &RegionId::new("eu-west-1").expect("r"),
                Hlc::new(12, 0),
                &ops("y"),
            )
            .expect("ok");
        let mut s = x.state;
        s.join(&y.delta);
        let z = s
            .prepare(
                &schema,
                &RegionId::new("us-east-1").expect("r"),
                Hlc::new(13, 0),
                &[Op::Remove { attr: a("qty") }],
            )
            .expect("ok");
        z.state
    }

    #[test]
    fn round_trips_and_names_each_region_once() {
        let s = sample();
        let bytes = postcard::to_allocvec(&s).expect("encode");
        let back: ItemState = postcard::from_bytes(&bytes).expect("decode");
        assert_eq!(back, s);
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(
            text.matches("us-east-1").count(),
            1,
            "region table holds each region once"
        );
    }

    #[test]
    fn a_bad_region_index_is_an_error_not_a_panic() {
        let state = sample();
        let mut c = to_compact(&state);
        c.alive.push((99, 1));
        let bytes = postcard::to_allocvec(&c).expect("encode");
        let err = postcard::from_bytes::<ItemState>(&bytes).expect_err("must refuse");
        assert!(!err.to_string().is_empty());
        let mut c = to_compact(&state);
        if let Some((_, CAttr::Lww(v))) =
            c.attrs.iter_mut().find(|(_, a)| matches!(a, CAttr::Lww(_)))
        {
            v[0].1 = u64::MAX;
        }
        let bytes = postcard::to_allocvec(&c).expect("encode");
        assert!(postcard::from_bytes::<ItemState>(&bytes).is_err());
    }
}
