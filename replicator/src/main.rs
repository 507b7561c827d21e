//! `replicator`: the Tributary node binary.
//!
//! Exit codes scripts can rely on: 0 success; 2 the configuration is
//! unusable (or the command line is wrong, as clap reports it), or `run`
//! while the runtime is not built; 1 any other failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_replicator::config::NodeConfig;

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
    /// Reads and validates a node configuration, then prints what it means
    /// (every effective value, defaults included). Exits 2 listing every
    /// problem if the configuration is unusable.
    CheckConfig {
        /// The node's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Runs the regional node. Not built yet: validates the configuration
    /// and exits 2.
    Run {
        /// The node's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

/// The configuration is unusable, or the command cannot run.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo => demo(),
        Command::CheckConfig { config } => match load(&config) {
            Some(c) => {
                println!("{}: valid\n", config.display());
                print!("{}", c.explain());
                ExitCode::SUCCESS
            }
            None => ExitCode::from(EXIT_CONFIG),
        },
        Command::Run { config } => {
            if load(&config).is_some() {
                eprintln!("run: the node runtime is not built yet (see the Replicator issue)");
            }
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Loads `path`; on failure prints every problem to stderr.
fn load(path: &Path) -> Option<NodeConfig> {
    match NodeConfig::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("{}: invalid configuration\n{e}", path.display());
            None
        }
    }
}

fn demo() -> ExitCode {
    match tributary_replicator::demo::run(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`replicator demo | head`) is not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    }
}
