//! `replctl`: the operators' command-line client of a node's admin API.
//!
//! This library is the part of `replctl` without I/O: the argument model
//! ([`cli`]), exit codes and error classification ([`exit`]), and, per
//! command, how the node's answers are checked and rendered ([`write`],
//! [`item`], [`lag`], [`offsets`], [`digest`], [`dead_letters`], with
//! [`render`] shared). The binary (`src/main.rs`) only connects, calls,
//! reads stdin and prints.
//!
//! Contract with operators' scripts: the command forms in [`cli`], the
//! exit codes in [`exit`], and the `--json` documents (one JSON document
//! per line on stdout; diagnostics only on stderr).

pub mod cli;
pub mod dead_letters;
pub mod digest;
pub mod exit;
pub mod item;
pub mod lag;
pub mod offsets;
pub mod render;
pub mod write;
