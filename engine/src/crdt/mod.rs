//! The CRDTs: causal contexts, the counter, and the item that combines a
//! store per attribute under one context. Pure data and functions.

mod context;
mod counter;
mod encoding;
mod item;

pub use context::CausalContext;
pub use counter::{CounterOverflow, CounterState};
pub use item::{AttrState, AttrView, ItemState, OpError, Prepared, Provenance, Sibling};
