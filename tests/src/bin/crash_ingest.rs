//! Child process of the crash test (`tests/crash_recovery.rs`): ingests
//! batches into a RocksDB-backed log with `sync` durability, forever, and
//! prints `ack FIRST LAST` once each batch is durable. The parent kills it
//! with SIGKILL at random moments and checks the store.
//!
//! Every change `seq` touches key `k{seq % KEYS}`: counter `n` += 1, set
//! `ids` += `e{seq}`, and `batch_end` := the last seq of its batch, so the
//! parent can prove that no half batch is visible.

use std::io::Write;

use anyhow::{Context, Result};
use tributary_tests::crash::{batch_len, change_for, open_log, region};

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: crash_ingest DATA_DIR")?;
    let mut log = open_log(std::path::Path::new(&dir))?;
    let mut out = std::io::stdout().lock();
    loop {
        let first = log.applied().get(&region()).0 + 1;
        let last = first + batch_len(first) - 1;
        let changes: Vec<_> = (first..=last)
            .map(|seq| change_for(seq, last))
            .collect::<Result<_>>()?;
        let report = log.ingest(&changes, Vec::new())?;
        anyhow::ensure!(
            report.durable,
            "sync durability must make every ingest durable"
        );
        for outcome in report.outcomes {
            outcome.context("crash workload change refused")?;
        }
        writeln!(out, "ack {first} {last}")?;
        out.flush()?;
    }
}
