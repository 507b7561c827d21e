//! `replicator`: the Tributary node binary.

use clap::{Parser, Subcommand};

/// Tributary: CRDT-based cross-region replication.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Plays a three-region shopping-cart scenario with conflicting writes
    /// on the embedded engine (RocksDB in temporary directories) and shows
    /// what merging keeps that last-writer-wins would lose.
    Demo,
}

fn main() -> anyhow::Result<()> {
    let result = match Cli::parse().command {
        Command::Demo => tributary_replicator::demo::run(&mut std::io::stdout().lock()),
    };
    match result {
        // A closed stdout (`replicator demo | head`) is not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}
