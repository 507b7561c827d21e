//! `replicator`: the Tributary node binary.
//!
//! Exit codes scripts can rely on: 0 success; 2 the configuration is
//! unusable (or the command line is wrong, as clap reports it); 1 any other
//! failure (e.g. the data directory cannot be opened, the port is taken).
//!
//! Logs go to stderr; `RUST_LOG` filters them (`info` by default, e.g.
//! `RUST_LOG=debug` or `RUST_LOG=tributary_replicator=debug,warn`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tributary_replicator::config::NodeConfig;

/// mimalloc instead of the system allocator: the node allocates and frees
/// small objects (item states, entries, messages) on several threads at
/// high rates, where glibc's malloc spent a quarter of the node's CPU in
/// `cluster_bench` profiles (`_int_malloc`, `malloc_consolidate`,
/// `_int_free`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tributary: CRDT-based cross-region replication.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts three regions in this process (RocksDB in temporary
    /// directories, gRPC on loopback), plays a shopping-cart scenario with
    /// conflicting writes through the admin API, a partition and a heal,
    /// and shows what merging keeps that last-writer-wins would lose.
    Demo {
        /// Keep the three nodes running afterwards (until Ctrl-C) and print
        /// their `--node` URLs for replctl.
        #[arg(long)]
        serve: bool,
    },
    /// Reads and validates a node configuration, then prints what it means
    /// (every effective value, defaults included). Exits 2 listing every
    /// problem if the configuration is unusable.
    CheckConfig {
        /// The node's TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Runs the regional node until SIGTERM or SIGINT, then shuts down in
    /// order (streams closed, queued commits flushed and fsynced).
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
        Command::Demo { serve } => demo(serve),
        Command::CheckConfig { config } => match load(&config) {
            Some(c) => {
                println!("{}: valid\n", config.display());
                print!("{}", c.explain());
                ExitCode::SUCCESS
            }
            None => ExitCode::from(EXIT_CONFIG),
        },
        Command::Run { config } => match load(&config) {
            Some(c) => run(c),
            None => ExitCode::from(EXIT_CONFIG),
        },
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

fn demo(serve: bool) -> ExitCode {
    match tributary_replicator::demo::run(&mut std::io::stdout().lock(), serve) {
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

fn init_tracing() {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    let filter: Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| Targets::new().with_default(tracing::Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
}

fn run(config: NodeConfig) -> ExitCode {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async {
        let node = tributary_replicator::node::RunningNode::start(config).await?;
        println!("listening on {}", node.listen());
        if let Some(m) = node.metrics_listen() {
            println!("metrics on http://{m}/metrics");
        }
        wait_for_signal().await?;
        tracing::info!("shutting down");
        node.shutdown().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
