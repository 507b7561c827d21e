//! Engine ingest throughput against raw RocksDB, in one run.
//!
//! Baseline: raw RocksDB `WriteBatch` puts of the same payload bytes under
//! the same keys, batches of the same size, each batch fsynced. Engine: the
//! same changes through [`Log::ingest`] on a [`RocksStore`] with `sync`
//! durability (each batch one atomic, fsynced WriteBatch: log entries +
//! merged items + applied vector + HLC mark), and again through
//! [`Log::ingest_pipelined`] (the same commits, each written on a second
//! thread while the next batch is built). Prints the rates, their ratios,
//! the peak RSS of each phase, and the stored bytes per item against the raw
//! payload (the CRDT metadata overhead). The baseline runs first and again
//! last; ratios are against the mean of the two. Every phase starts with a
//! `sync` of the file system, so none pays for the write-back of another.
//!
//! Floors: raw puts of exactly the bytes the engine wrote, in the engine's
//! two column families (`log`, `items`), and of smaller layouts' stand-in
//! bytes; what any engine on that layout could reach at best.
//!
//! Run: `cargo run --release -p tributary-bench --bin engine_ingest [-- --changes N]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tributary_bench::{ItemValues, item_values};
use tributary_engine::change::{Change, Op};
use tributary_engine::clock::SystemClock;
use tributary_engine::ids::{AttrName, RegionId, TableName};
use tributary_engine::key::ItemKey;
use tributary_engine::log::{Attached, Log, LogConfig};
use tributary_engine::schema::{MergePolicy, Schemas, TableSchema};
use tributary_engine::store::{Durability, LogStore, RocksOptions, RocksStore};
use tributary_engine::value::{AttrValue, Scalar};

/// The allocator the node runs with (`replicator/src/main.rs`), so the
/// engine is measured as deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Engine ingest benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Number of changes.
    #[arg(long, default_value_t = 1_000_000)]
    changes: u64,
    /// Changes per batch (one atomic, fsynced commit each).
    #[arg(long, default_value_t = 1_000)]
    batch: u64,
    /// Distinct items the changes go to (default: one item per change).
    #[arg(long)]
    keys: Option<u64>,
    /// Run only this phase and print its rate (to profile it, e.g.
    /// under `perf record`); no baseline, so no ratio.
    #[arg(long, value_enum)]
    only: Option<Only>,
}

/// A phase run alone (`--only`).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Only {
    /// The raw RocksDB baseline.
    Raw,
    /// [`Log::ingest`].
    Ingest,
    /// [`Log::ingest_pipelined`].
    Pipelined,
}

fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attribute name")
}

fn table() -> TableName {
    TableName::new("items").expect("valid table")
}

/// One change of about 200 bytes of payload; returns the change and its raw
/// payload (the same attribute names and values, concatenated).
fn change(i: u64, keys: u64) -> (Change, Vec<u8>) {
    let k = i % keys;
    let ItemValues { title, body, tags } = item_values(i, k);
    let key = ItemKey::new(table(), Scalar::S(format!("item-{k:012}")), None).expect("valid key");
    let mut raw = Vec::new();
    for (n, v) in [
        ("pk", key.partition().to_string()),
        ("title", title.clone()),
        ("body", body.clone()),
    ] {
        raw.extend_from_slice(n.as_bytes());
        raw.extend_from_slice(v.as_bytes());
    }
    raw.extend_from_slice(b"qty1tags");
    for t in &tags {
        raw.extend_from_slice(t.as_bytes());
    }
    let ops = vec![
        Op::Set {
            attr: attr("title"),
            value: AttrValue::S(title),
        },
        Op::Set {
            attr: attr("body"),
            value: AttrValue::S(body),
        },
        Op::Add {
            attr: attr("qty"),
            amount: 1,
        },
        Op::AddToSet {
            attr: attr("tags"),
            elements: tags.into_iter().map(Scalar::S).collect(),
        },
    ];
    (
        Change {
            key,
            ops,
            source_millis: None,
        },
        raw,
    )
}

/// Peak resident set size since the last reset, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Resets the kernel's peak-RSS mark (Linux `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Writes every dirty page out before a phase, so that none pays for the
/// write-back of the phases before it (with ext4's ordered data mode an
/// fsync can wait for other files' data).
fn quiesce() -> Result<()> {
    let status = std::process::Command::new("sync")
        .status()
        .context("run sync")?;
    anyhow::ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

struct Phase {
    elapsed: Duration,
    peak_rss_mib: f64,
}

fn raw_rocksdb(dir: &Path, args: &Args, keys: u64) -> Result<Phase> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, dir)?;
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    quiesce()?;
    reset_peak_rss();
    let mut elapsed = Duration::ZERO;
    let mut i = 0;
    while i < args.changes {
        // Test data is made outside the timed part, for both phases.
        let data: Vec<(Vec<u8>, Vec<u8>)> = (i..(i + args.batch).min(args.changes))
            .map(|j| {
                let (c, raw) = change(j, keys);
                (c.key.encode(), raw)
            })
            .collect();
        let start = Instant::now();
        let mut batch = rocksdb::WriteBatch::default();
        for (k, v) in &data {
            batch.put(k, v);
        }
        db.write_opt(batch, &wo)?;
        elapsed += start.elapsed();
        i += args.batch;
    }
    Ok(Phase {
        elapsed,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The storage layout a floor phase writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The engine's: each change's log entry, and its item's value as
    /// stored — for an item created by the change and not written since,
    /// a pointer at the entry (~20 bytes), else its state.
    Engine,
    /// Each change's log entry and its item's whole state: the engine's
    /// layout before items pointed at their entries. Only measured.
    ItemStateCopy,
    /// A new item's log entry is only its head (64 bytes: origin, seq,
    /// HLC, deps, key) and reads the delta from the item's state. Not
    /// built, only measured.
    LogPointsAtItem,
    /// No log entry per change: each batch writes one record listing its
    /// changes' keys and HLCs (the seqs implicit), and shipping would send
    /// the items' current states instead of deltas (another replication
    /// model). Not built, only measured: one put per change.
    BatchIndex,
}

/// Raw RocksDB puts of exactly the bytes the engine wrote (each change's
/// log entry and its item's final stored value, read back from the engine's
/// store and encoded outside the timed part): RocksDB's own cost for the
/// engine's data volume, i.e. the floor of any engine on this storage
/// layout; or of another `layout`, with its bytes or stand-ins of their
/// sizes.
fn raw_engine_bytes(dir: &Path, args: &Args, engine: &RocksStore, layout: Layout) -> Result<Phase> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // The engine's split: the log and the items in column families of
    // their own (in one, the two key ranges interleave in every flushed
    // file and compactions rewrite them).
    let db = rocksdb::DB::open_cf(&opts, dir, ["log", "items"])?;
    let (log_cf, items_cf) = (
        db.cf_handle("log").context("log cf")?,
        db.cf_handle("items").context("items cf")?,
    );
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    let origin = RegionId::new("bench-1")?;
    quiesce()?;
    reset_peak_rss();
    let mut elapsed = Duration::ZERO;
    let mut after = tributary_engine::ids::Seq::ZERO;
    loop {
        let entries = engine.entries(&origin, after, usize::try_from(args.batch)?)?;
        let Some(last) = entries.last() else { break };
        after = last.seq;
        let mut data = Vec::with_capacity(entries.len() * 2);
        let mut index = Vec::new();
        for e in &entries {
            let state = || -> Result<Vec<u8>> {
                let state = engine.item(&e.key)?.unwrap_or_default();
                Ok(tributary_engine::store::encode_item_state(&state)?)
            };
            if layout == Layout::BatchIndex {
                let key = e.key.encode();
                index.extend_from_slice(&(key.len() as u16).to_le_bytes());
                index.extend_from_slice(&key);
                index.extend_from_slice(&e.hlc.0.to_le_bytes());
                data.push((items_cf, key, state()?));
                continue;
            }
            let (log_key, log_value) = tributary_engine::store::encode_log_record(e)?;
            let (log_value, item_value) = match layout {
                Layout::Engine => {
                    let stored = engine.stored_item(&e.key)?.context("item of an entry")?;
                    (log_value, tributary_engine::store::encode_stored(&stored)?)
                }
                Layout::ItemStateCopy => (log_value, state()?),
                Layout::LogPointsAtItem => (vec![0x5a; 64], state()?),
                Layout::BatchIndex => unreachable!("handled above"),
            };
            data.push((log_cf, log_key, log_value));
            data.push((items_cf, e.key.encode(), item_value));
        }
        if !index.is_empty() {
            data.push((log_cf, after.0.to_be_bytes().to_vec(), index));
        }
        let start = Instant::now();
        let mut batch = rocksdb::WriteBatch::default();
        for (cf, k, v) in &data {
            batch.put_cf(*cf, k, v);
        }
        db.write_opt(batch, &wo)?;
        elapsed += start.elapsed();
    }
    Ok(Phase {
        elapsed,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// The engine's log on a fresh `store`, as the node opens it, once the
/// file system is quiet and the peak-RSS mark reset: a phase starts.
fn open_log<S: LogStore>(store: S) -> Result<Log<S, SystemClock>> {
    let schema = TableSchema::new(table(), attr("pk"), None)?
        .with_policy(attr("qty"), MergePolicy::Counter)?
        .with_policy(attr("tags"), MergePolicy::Set)?;
    let config = LogConfig {
        region: RegionId::new("bench-1")?,
        schemas: [schema].into_iter().collect::<Schemas>(),
        max_clock_skew: Duration::from_secs(30),
        item_cache_bytes: LogConfig::DEFAULT_ITEM_CACHE_BYTES,
    };
    let log = Log::open(store, config, SystemClock)?;
    quiesce()?;
    reset_peak_rss();
    Ok(log)
}

/// Batches per chunk of test data the pipelined phase makes ahead of its
/// timed part (its peak RSS includes them).
const PIPELINE_CHUNK: u64 = 100;

/// The same changes through [`Log::ingest_pipelined`]: each batch still
/// one atomic, fsynced commit, written on a second thread while the next
/// batch is built. The test data is made in chunks outside the timed part.
fn engine_pipelined(dir: &Path, args: &Args, keys: u64) -> Result<Phase> {
    let store = Arc::new(RocksStore::open(RocksOptions::new(dir, Durability::Sync))?);
    let mut log = open_log(store)?;
    let mut elapsed = Duration::ZERO;
    let mut i = 0;
    while i < args.changes {
        let end = (i + args.batch * PIPELINE_CHUNK).min(args.changes);
        let mut chunk = Vec::new();
        while i < end {
            let batch: Vec<Change> = (i..(i + args.batch).min(end))
                .map(|j| change(j, keys).0)
                .collect();
            chunk.push((batch, Attached::default()));
            i += args.batch;
        }
        let mut refused = None;
        let start = Instant::now();
        log.ingest_pipelined(chunk, |report| {
            if let Ok(report) = report {
                refused = refused
                    .take()
                    .or_else(|| report.outcomes.into_iter().find_map(Result::err));
            }
        })?;
        elapsed += start.elapsed();
        if let Some(err) = refused {
            anyhow::bail!("bench change refused: {err}");
        }
    }
    Ok(Phase {
        elapsed,
        peak_rss_mib: peak_rss_mib(),
    })
}

fn engine(dir: &Path, args: &Args, keys: u64) -> Result<(Phase, RocksStore)> {
    let store = RocksStore::open(RocksOptions::new(dir, Durability::Sync))?;
    let mut log = open_log(store)?;
    let mut elapsed = Duration::ZERO;
    let mut i = 0;
    while i < args.changes {
        let changes: Vec<Change> = (i..(i + args.batch).min(args.changes))
            .map(|j| change(j, keys).0)
            .collect();
        let start = Instant::now();
        let report = log.ingest(&changes, Vec::new())?;
        elapsed += start.elapsed();
        if let Some(err) = report.outcomes.iter().find_map(|o| o.as_ref().err()) {
            anyhow::bail!("bench change refused: {err}");
        }
        i += args.batch;
    }
    let phase = Phase {
        elapsed,
        peak_rss_mib: peak_rss_mib(),
    };
    Ok((phase, log.into_store()))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let keys = args.keys.unwrap_or(args.changes).max(1);
    let raw_dir = tempfile::tempdir()?;
    let eng_dir = tempfile::tempdir()?;
    let payload: u64 = (0..keys.min(args.changes))
        .map(|i| change(i, keys).1.len() as u64)
        .sum();
    let items = keys.min(args.changes);

    println!(
        "engine ingest: {} changes, batches of {}, {} items, ~{} payload bytes per item",
        args.changes,
        args.batch,
        items,
        payload / items
    );
    if let Some(only) = args.only {
        let phase = match only {
            Only::Raw => raw_rocksdb(raw_dir.path(), &args, keys)?,
            Only::Ingest => engine(eng_dir.path(), &args, keys)?.0,
            Only::Pipelined => engine_pipelined(eng_dir.path(), &args, keys)?,
        };
        println!(
            "{only:?} alone: {:.0} changes/s, peak RSS {:.1} MiB",
            args.changes as f64 / phase.elapsed.as_secs_f64(),
            phase.peak_rss_mib
        );
        return Ok(());
    }
    let raw = raw_rocksdb(raw_dir.path(), &args, keys).context("raw RocksDB baseline")?;
    // Pipelined first: its store is closed when it ends, while the other
    // engine phase's store stays open for the floors below, and its
    // background flushes and compactions would take CPU from a phase that
    // runs two threads.
    let pipe_dir = tempfile::tempdir()?;
    let pipelined =
        engine_pipelined(pipe_dir.path(), &args, keys).context("pipelined engine ingest")?;
    drop(pipe_dir);
    let (eng, store) = engine(eng_dir.path(), &args, keys).context("engine ingest")?;
    let floor_dir = tempfile::tempdir()?;
    let floor = raw_engine_bytes(floor_dir.path(), &args, &store, Layout::Engine)
        .context("raw puts of the engine's bytes")?;
    let mut smaller = Vec::new();
    for layout in [
        Layout::ItemStateCopy,
        Layout::LogPointsAtItem,
        Layout::BatchIndex,
    ] {
        let dir = tempfile::tempdir()?;
        let phase = raw_engine_bytes(dir.path(), &args, &store, layout)
            .with_context(|| format!("raw puts of the {layout:?} layout's bytes"))?;
        smaller.push((layout, phase));
    }

    // The baseline again, last: the machine's speed drifts, so the ratios
    // are against the mean of a run before and a run after the others.
    let last_dir = tempfile::tempdir()?;
    let raw_last = raw_rocksdb(last_dir.path(), &args, keys).context("raw RocksDB, again")?;
    let rate = |p: &Phase| args.changes as f64 / p.elapsed.as_secs_f64();
    let (first, last) = (rate(&raw), rate(&raw_last));
    let raw = Phase {
        elapsed: (raw.elapsed + raw_last.elapsed) / 2,
        // The last run's peak counts the engine's open store too.
        peak_rss_mib: raw.peak_rss_mib,
    };
    println!(
        "raw RocksDB WriteBatch puts : {:>10.0} changes/s  peak RSS {:>7.1} MiB  (first run {first:.0}/s, last {last:.0}/s)",
        rate(&raw),
        raw.peak_rss_mib,
    );
    println!(
        "engine Log::ingest          : {:>10.0} changes/s  peak RSS {:>7.1} MiB",
        rate(&eng),
        eng.peak_rss_mib
    );
    println!(
        "ratio engine / raw          : {:>10.2}x  (target >= 0.5x)",
        rate(&eng) / rate(&raw)
    );
    println!(
        "engine Log::ingest_pipelined: {:>10.0} changes/s  peak RSS {:>7.1} MiB  = {:.2}x raw (writes on a 2nd thread)",
        rate(&pipelined),
        pipelined.peak_rss_mib,
        rate(&pipelined) / rate(&raw)
    );
    println!(
        "raw puts of engine's bytes  : {:>10.0} changes/s  = {:.2}x raw (2 puts per change: log entry + item value)",
        rate(&floor),
        rate(&floor) / rate(&raw)
    );
    println!(
        "engine / engine-bytes floor : {:>10.2}x  (the engine's CPU work beside RocksDB's)",
        rate(&eng) / rate(&floor)
    );
    for (layout, phase) in &smaller {
        let what = match layout {
            Layout::ItemStateCopy => "log entry + item state: the engine before item pointers",
            Layout::LogPointsAtItem => "64-byte log entry + item state; not built",
            Layout::BatchIndex => "item state + a per-batch key list: state shipping; not built",
            Layout::Engine => "the engine's",
        };
        println!(
            "floor of layout {layout:?}: {:>10.0} changes/s  = {:.2}x raw ({what})",
            rate(phase),
            rate(phase) / rate(&raw)
        );
    }

    store.flush()?;
    if items != args.changes {
        // With repeated updates the items' content grows (set elements
        // accumulate), so a per-item payload ratio would compare different
        // data: the overhead figure is for one change per item.
        println!(
            "metadata overhead           : measured with one change per item (run without --keys)"
        );
        return Ok(());
    }
    let before = store.approximate_sizes()?;
    println!(
        "stored log + items          : {:>10.1} bytes/change ({:.1} log, {:.1} items; new items point at their entries)",
        (before.log + before.items) as f64 / args.changes as f64,
        before.log as f64 / args.changes as f64,
        before.items as f64 / args.changes as f64,
    );
    // As if every peer acknowledged everything: the log goes, and items
    // that pointed at their entries are rewritten with their states.
    let start = Instant::now();
    store.truncate(&store.applied()?)?;
    let truncation = start.elapsed();
    store.flush()?;
    store.compact()?;
    let sizes = store.approximate_sizes()?;
    println!(
        "truncate the whole log      : {:>10.0} entries/s ({:.2} s, items rewritten with their states)",
        args.changes as f64 / truncation.as_secs_f64(),
        truncation.as_secs_f64()
    );
    let per_item = sizes.items as f64 / items as f64;
    let raw_per_item = payload as f64 / items as f64;
    println!(
        "stored item state           : {:>10.1} bytes/item vs {:.1} raw payload bytes = {:.2}x (target <= 1.5x; after truncation)",
        per_item,
        raw_per_item,
        per_item / raw_per_item
    );
    let mut exact = 0usize;
    let mut after = None;
    loop {
        let page = store.scan_items(None, after.as_ref(), 10_000)?;
        exact += page
            .iter()
            .map(|(k, s)| tributary_engine::store::encoded_item_len(k, s))
            .sum::<usize>();
        match page.last() {
            Some((k, _)) => after = Some(k.clone()),
            None => break,
        }
    }
    println!(
        "encoded item values (exact) : {:>10.1} bytes/item = {:.2}x raw",
        exact as f64 / items as f64,
        exact as f64 / payload as f64
    );
    Ok(())
}
