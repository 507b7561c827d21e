//! Item-state codec speed: the stores' hand-written encoder and decoder
//! against postcard's serde path for the same bytes, in one run.
//!
//! Every stored item and log entry, and every delta a peer receives, goes
//! through this codec. Two populations of states are measured:
//! - **deltas**: one change of `engine_ingest`'s ~200-byte items (two
//!   registers, a counter, a two-element set), as links ship them;
//! - **hot items**: one item changed 30 times from three regions (every
//!   change a new title, a counter step and a new tag), as the log stores it.
//!
//! Each path decodes (and encodes) the whole population several times,
//! the paths interleaved; the median pass is reported, with the ratio of
//! the direct path's time to serde's (below 1 is faster). The serde decode
//! reads the bare payload while the direct one also checks the envelope's
//! length and checksum, so the ratio understates the difference.
//!
//! Run: `cargo run --release -p tributary-bench --bin codec_bench [-- --states N]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use tributary_bench::{ItemValues, item_values};
use tributary_engine::change::Op;
use tributary_engine::crdt::ItemState;
use tributary_engine::ids::{AttrName, Hlc, RegionId, TableName};
use tributary_engine::schema::{MergePolicy, TableSchema};
use tributary_engine::store::{decode_item_state, decode_item_state_sharing, encode_item_state};
use tributary_engine::value::{AttrValue, Scalar};

/// The allocator the node runs with, so allocation costs are as deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Codec benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// States per population.
    #[arg(long, default_value_t = 100_000)]
    states: usize,
    /// Passes per path (the median is reported).
    #[arg(long, default_value_t = 5)]
    passes: usize,
}

fn attr(s: &str) -> Result<AttrName> {
    Ok(AttrName::new(s)?)
}

fn schema() -> Result<TableSchema> {
    Ok(
        TableSchema::new(TableName::new("items")?, attr("pk")?, None)?
            .with_policy(attr("qty")?, MergePolicy::Counter)?
            .with_policy(attr("tags")?, MergePolicy::Set)?,
    )
}

/// `engine_ingest`'s change `i` (to item `i`), as ops.
fn ops(i: u64) -> Result<Vec<Op>> {
    let ItemValues { title, body, tags } = item_values(i, i);
    Ok(vec![
        Op::Set {
            attr: attr("title")?,
            value: AttrValue::S(title),
        },
        Op::Set {
            attr: attr("body")?,
            value: AttrValue::S(body),
        },
        Op::Add {
            attr: attr("qty")?,
            amount: 1,
        },
        Op::AddToSet {
            attr: attr("tags")?,
            elements: tags.into_iter().map(Scalar::S).collect(),
        },
    ])
}

fn deltas(n: usize) -> Result<Vec<ItemState>> {
    let schema = schema()?;
    let origin = RegionId::new("us-east-1")?;
    (0..n as u64)
        .map(|i| {
            let p = ItemState::new()
                .prepare(
                    &schema,
                    &origin,
                    Hlc::new(1_700_000_000_000 + i, 0),
                    &ops(i)?,
                )
                .context("prepare")?;
            Ok(p.delta)
        })
        .collect()
}

fn hot_items(n: usize) -> Result<Vec<ItemState>> {
    let schema = schema()?;
    let regions = ["us-east-1", "eu-west-1", "ap-south-1"]
        .map(RegionId::new)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    (0..n as u64)
        .map(|i| {
            let mut state = ItemState::new();
            for step in 0..30u64 {
                let origin = &regions[(step % 3) as usize];
                let hlc = Hlc::new(1_700_000_000_000 + i * 100 + step, 0);
                let p = state
                    .prepare(&schema, origin, hlc, &ops(i * 30 + step)?)
                    .context("prepare")?;
                state = p.state;
            }
            Ok(state)
        })
        .collect()
}

/// How long `f` takes.
fn time(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

/// Per-state figures of one population.
struct Figures {
    bytes: usize,
    serde_decode: Duration,
    direct_decode: Duration,
    shared_decode: Duration,
    serde_encode: Duration,
    direct_encode: Duration,
}

fn measure(states: &[ItemState], passes: usize) -> Result<Figures> {
    let payloads: Vec<Vec<u8>> = states
        .iter()
        .map(postcard::to_allocvec)
        .collect::<Result<_, _>>()?;
    let sealed: Vec<Vec<u8>> = states
        .iter()
        .map(encode_item_state)
        .collect::<Result<_, _>>()?;
    for (s, bytes) in states.iter().zip(&sealed) {
        anyhow::ensure!(&decode_item_state(bytes)? == s, "direct decode differs");
    }
    let (mut serde_decode, mut direct_decode) = (Vec::new(), Vec::new());
    let mut shared_decode = Vec::new();
    let known: Vec<RegionId> = ["us-east-1", "eu-west-1", "ap-south-1"]
        .map(RegionId::new)
        .into_iter()
        .collect::<Result<_, _>>()?;
    let (mut serde_encode, mut direct_encode) = (Vec::new(), Vec::new());
    // Interleaved, one pass of each at a time, so that machine noise falls
    // on both paths alike.
    for _ in 0..passes {
        serde_decode.push(time(|| {
            for p in &payloads {
                black_box(postcard::from_bytes::<ItemState>(p)?);
            }
            Ok(())
        })?);
        direct_decode.push(time(|| {
            for b in &sealed {
                black_box(decode_item_state(b)?);
            }
            Ok(())
        })?);
        shared_decode.push(time(|| {
            for b in &sealed {
                black_box(decode_item_state_sharing(b, &known)?);
            }
            Ok(())
        })?);
        serde_encode.push(time(|| {
            for s in states {
                black_box(postcard::to_allocvec(s)?);
            }
            Ok(())
        })?);
        direct_encode.push(time(|| {
            for s in states {
                black_box(encode_item_state(s)?);
            }
            Ok(())
        })?);
    }
    let per_state = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2] / u32::try_from(states.len()).unwrap_or(u32::MAX)
    };
    Ok(Figures {
        bytes: payloads.iter().map(Vec::len).sum::<usize>() / states.len().max(1),
        serde_decode: per_state(serde_decode),
        direct_decode: per_state(direct_decode),
        shared_decode: per_state(shared_decode),
        serde_encode: per_state(serde_encode),
        direct_encode: per_state(direct_encode),
    })
}

fn report(name: &str, f: &Figures) {
    let ns = |d: Duration| d.as_nanos() as f64;
    println!("{name} (~{} bytes each):", f.bytes);
    println!(
        "  decode: serde {:>7.0} ns  direct {:>7.0} ns  ratio {:.2}",
        ns(f.serde_decode),
        ns(f.direct_decode),
        ns(f.direct_decode) / ns(f.serde_decode)
    );
    println!(
        "  decode sharing known regions: {:>7.0} ns  ratio {:.2}",
        ns(f.shared_decode),
        ns(f.shared_decode) / ns(f.serde_decode)
    );
    println!(
        "  encode: serde {:>7.0} ns  direct {:>7.0} ns  ratio {:.2}",
        ns(f.serde_encode),
        ns(f.direct_encode),
        ns(f.direct_encode) / ns(f.serde_encode)
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let passes = args.passes.max(1);
    println!(
        "item-state codec: {} states per population, median of {passes} interleaved passes",
        args.states
    );
    report("deltas", &measure(&deltas(args.states)?, passes)?);
    report(
        "hot items",
        &measure(&hot_items((args.states / 10).max(1))?, passes)?,
    );
    Ok(())
}
