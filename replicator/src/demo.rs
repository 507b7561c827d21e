//! The embedded demo: three regions, each an engine [`Log`] on its own
//! RocksDB directory, make conflicting writes to a shopping cart during a
//! partition, then exchange their logs and converge. Beside each merged item
//! it prints what DynamoDB Global Tables' whole-item last-writer-wins would
//! have kept, and what that loses.
//!
//! Log entries travel between the regions in-process here; the gRPC
//! shipping between separate nodes arrives with the replicator issue.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use tributary_engine::change::{Change, Op};
use tributary_engine::clock::SystemClock;
use tributary_engine::crdt::AttrView;
use tributary_engine::ids::{AttrName, RegionId, TableName};
use tributary_engine::key::ItemKey;
use tributary_engine::log::{Log, LogConfig};
use tributary_engine::schema::{MergePolicy, Schemas, TableSchema};
use tributary_engine::store::{Durability, RocksOptions, RocksStore};
use tributary_engine::value::{AttrValue, Scalar};

type Region = Log<RocksStore, SystemClock>;

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-south-1"];

fn name(s: &str) -> Result<AttrName> {
    AttrName::new(s).with_context(|| format!("attribute name {s}"))
}

fn schema() -> Result<TableSchema> {
    let table = TableName::new("carts")?;
    Ok(TableSchema::new(table, name("user")?, Some(name("line")?))?
        .with_policy(name("qty")?, MergePolicy::Counter)?
        .with_policy(name("tags")?, MergePolicy::Set)?)
}

fn key(line: &str) -> Result<ItemKey> {
    Ok(ItemKey::new(
        TableName::new("carts")?,
        Scalar::S("alice".into()),
        Some(Scalar::S(line.into())),
    )?)
}

fn set(attr: &str, v: &str) -> Result<Op> {
    Ok(Op::Set {
        attr: name(attr)?,
        value: AttrValue::S(v.into()),
    })
}

fn add(attr: &str, amount: i128) -> Result<Op> {
    Ok(Op::Add {
        attr: name(attr)?,
        amount,
    })
}

fn tag(op: fn(AttrName, Vec<Scalar>) -> Op, t: &str) -> Result<Op> {
    Ok(op(name("tags")?, vec![Scalar::S(t.into())]))
}

fn add_tag(attr: AttrName, elements: Vec<Scalar>) -> Op {
    Op::AddToSet { attr, elements }
}

fn remove_tag(attr: AttrName, elements: Vec<Scalar>) -> Op {
    Op::RemoveFromSet { attr, elements }
}

/// What one region's application writes to one cart line.
struct LocalWrite {
    region: usize,
    line: &'static str,
    ops: Vec<Op>,
}

fn write(regions: &mut [Region], w: &LocalWrite) -> Result<()> {
    let change = Change {
        key: key(w.line)?,
        ops: w.ops.clone(),
        source_millis: None,
    };
    let report = regions[w.region].ingest(&[change], Vec::new())?;
    for outcome in report.outcomes {
        outcome.context("demo write refused")?;
    }
    Ok(())
}

/// Ships everything `from` has that `to` lacks, in HLC (hence causal)
/// order, as a peer link would.
fn ship(regions: &mut [Region], from: usize, to: usize) -> Result<usize> {
    let have = regions[to].applied().clone();
    let entries = regions[from].entries_above(&have, usize::MAX)?;
    let report = regions[to].apply_remote(&entries)?;
    Ok(report.applied)
}

fn heal(regions: &mut [Region]) -> Result<usize> {
    let mut total = 0;
    loop {
        let mut moved = 0;
        for from in 0..regions.len() {
            for to in 0..regions.len() {
                if from != to {
                    moved += ship(regions, from, to)?;
                }
            }
        }
        if moved == 0 {
            return Ok(total);
        }
        total += moved;
    }
}

/// The visible attributes of an item, as plain JSON text.
fn render(region: &Region, line: &str) -> Result<BTreeMap<String, String>> {
    let state = region.item(&key(line)?)?.unwrap_or_default();
    let mut out = BTreeMap::new();
    match state.view() {
        None => {
            out.insert("(item)".into(), "deleted".into());
        }
        Some(attrs) => {
            for (attr, view) in attrs {
                let text = match view {
                    AttrView::Value { value, .. } => value.to_plain_json().to_string(),
                    AttrView::Siblings(s) => {
                        let v: Vec<_> = s.iter().map(|(v, _)| v.to_plain_json()).collect();
                        format!("siblings {}", serde_json::Value::Array(v))
                    }
                };
                out.insert(attr.as_str().to_owned(), text);
            }
        }
    }
    Ok(out)
}

/// Plays the scenario and prints it to `out`.
pub fn run(out: &mut impl Write) -> Result<()> {
    let dirs: Vec<tempfile::TempDir> = REGIONS
        .iter()
        .map(|_| tempfile::tempdir())
        .collect::<std::io::Result<_>>()?;
    let schemas: Schemas = [schema()?].into_iter().collect();
    let mut regions: Vec<Region> = Vec::new();
    for (r, dir) in REGIONS.iter().zip(&dirs) {
        let store = RocksStore::open(RocksOptions::new(dir.path(), Durability::Sync))?;
        let config = LogConfig {
            region: RegionId::new(*r)?,
            schemas: schemas.clone(),
            max_clock_skew: Duration::from_secs(30),
        };
        regions.push(Log::open(store, config, SystemClock)?);
    }

    writeln!(
        out,
        "Tributary engine demo: three regions, one shopping cart (table carts, user alice)"
    )?;
    writeln!(
        out,
        "policies: qty = counter, tags = add-wins set, everything else last-writer-wins per attribute\n"
    )?;

    // Before the partition: us-east-1 creates two cart lines; all regions get them.
    write(
        &mut regions,
        &LocalWrite {
            region: 0,
            line: "espresso",
            ops: vec![
                set("name", "Espresso beans")?,
                add("qty", 1)?,
                tag(add_tag, "gift")?,
            ],
        },
    )?;
    write(
        &mut regions,
        &LocalWrite {
            region: 0,
            line: "filters",
            ops: vec![set("name", "Paper filters")?, add("qty", 2)?],
        },
    )?;
    heal(&mut regions)?;
    writeln!(
        out,
        "1. us-east-1 adds two cart lines; every region has them."
    )?;

    // The partition: every region writes on its own.
    let partition_writes = [
        LocalWrite {
            region: 0,
            line: "espresso",
            ops: vec![add("qty", 2)?, set("name", "Espresso beans 1kg")?],
        },
        LocalWrite {
            region: 1,
            line: "espresso",
            ops: vec![
                add("qty", 3)?,
                tag(add_tag, "express")?,
                set("price", "12.50")?,
            ],
        },
        LocalWrite {
            region: 2,
            line: "espresso",
            ops: vec![add("qty", 1)?, tag(remove_tag, "gift")?],
        },
        LocalWrite {
            region: 0,
            line: "filters",
            ops: vec![Op::Delete],
        },
        LocalWrite {
            region: 1,
            line: "filters",
            ops: vec![add("qty", 5)?],
        },
    ];
    writeln!(out, "2. Partition. Concurrently:")?;
    writeln!(
        out,
        "   us-east-1:  espresso qty +2, name := \"Espresso beans 1kg\";  filters DELETED"
    )?;
    writeln!(
        out,
        "   eu-west-1:  espresso qty +3, tags += express, price := \"12.50\";  filters qty +5"
    )?;
    writeln!(out, "   ap-south-1: espresso qty +1, tags -= gift")?;
    // What whole-item last-writer-wins keeps: the image of the region that
    // wrote last (here the order of the writes above; ties do not arise).
    let mut lww_image: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for w in &partition_writes {
        write(&mut regions, w)?;
        lww_image.insert(w.line, render(&regions[w.region], w.line)?);
    }

    let shipped = heal(&mut regions)?;
    writeln!(
        out,
        "   (whole-item last-writer-wins keeps the image of the region that wrote the line last)"
    )?;
    writeln!(
        out,
        "3. Heal: the regions exchange {shipped} log entries (duplicates are no-ops).\n"
    )?;

    for line in ["espresso", "filters"] {
        let merged: Vec<BTreeMap<String, String>> = regions
            .iter()
            .map(|r| render(r, line))
            .collect::<Result<_>>()?;
        let identical = merged.windows(2).all(|w| w[0] == w[1]);
        anyhow::ensure!(identical, "regions did not converge on {line}: {merged:?}");
        writeln!(
            out,
            "cart line {line:?}: all three regions identical: {}",
            if identical { "yes" } else { "NO" }
        )?;
        let lww = lww_image.get(line).cloned().unwrap_or_default();
        let attrs: std::collections::BTreeSet<&String> =
            merged[0].keys().chain(lww.keys()).collect();
        writeln!(
            out,
            "  {:<8} {:<34} {:<34}",
            "attr", "Tributary (merged)", "whole-item LWW would keep"
        )?;
        for a in attrs {
            let m = merged[0].get(a).map_or("-", String::as_str);
            let l = lww.get(a).map_or("-", String::as_str);
            let mark = if m == l { "" } else { "  <- differs" };
            writeln!(out, "  {a:<8} {m:<34} {l:<34}{mark}")?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Merged: every increment counts (espresso qty 1+2+3+1 = 7), the concurrent"
    )?;
    writeln!(
        out,
        "tag add survives the other region's remove, different attributes written in"
    )?;
    writeln!(
        out,
        "different regions all survive, and the update that raced the delete of"
    )?;
    writeln!(
        out,
        "\"filters\" keeps that line alive with only the increment the delete did not see."
    )?;
    for r in &regions {
        writeln!(
            out,
            "{:<11} applied vector {:?}",
            r.region().as_str(),
            r.applied()
        )?;
    }
    Ok(())
}
