//! The CRDTs: causal contexts, the counter, and the item that combines a
//! store per attribute under one context. Pure data and functions.

mod context;
mod counter;
mod encoding;
mod fresh;
mod item;
mod sorted;

pub use context::CausalContext;
pub use counter::{CounterOverflow, CounterState};
pub(crate) use encoding::{Writer, read_compact, read_compact_sharing, write_compact};
pub(crate) use fresh::encode_fresh;
pub use item::{AttrState, AttrView, ItemState, OpError, Prepared, Provenance, Sibling};
pub use sorted::{SortedMap, SortedSet};
