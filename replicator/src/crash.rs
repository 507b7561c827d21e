//! Crash points, for the tests of crash safety: with
//! `TRIBUTARY_CRASH_AT=NAME` in its environment, the process aborts (as
//! `kill -9` would: no shutdown, no flush) the first time it passes the
//! point `NAME`. The tests use it to stop a node at an exact moment (for
//! instance between the sink's database commit and its checkpoint) instead
//! of hoping a kill lands there. Unset — always, in production — a point
//! costs one comparison.
//!
//! The points: `postgres-source-after-commit` (a transaction is durable in
//! the log; the slot is not yet advanced), `postgres-sink-after-commit`
//! (the sink's write is committed in PostgreSQL; the sink's cursor is not
//! yet saved).

use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const ENV: &str = "TRIBUTARY_CRASH_AT";

/// Aborts the process if `name` is the configured crash point.
pub fn point(name: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    if AT.get_or_init(|| std::env::var(ENV).ok()).as_deref() == Some(name) {
        eprintln!("{ENV}={name}: aborting at the crash point");
        std::process::abort();
    }
}
