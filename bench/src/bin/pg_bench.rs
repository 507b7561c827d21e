//! Tributary between two PostgreSQL clusters against PostgreSQL's own
//! logical replication (publication → subscription, one direction, which
//! cannot merge), the same workload in the same run, on the same two
//! servers (table `carts` replicated by Tributary, table `native` by a
//! subscription).
//!
//! - **lag**: one connection updates a row in cluster A at `--rate`
//!   statements/s for `--duration` s (`v = i`, `qty = qty + 1`); a poller
//!   reads B every `--poll-ms`; lag = commit acknowledged in A → `v ≥ i`
//!   seen in B, p50/p99/max;
//! - **throughput**: `--burst` single-row updates over 100 rows as fast as
//!   one connection commits them; throughput = updates / time from the first
//!   commit until B holds every row's final value.
//!
//! Needs release binaries next to this one
//! (`cargo build --release -p tributary-replicator -p tributary-tools`) and
//! PostgreSQL 15 with wal2json (`scripts/setup.sh`). Run:
//! `cargo run --release -p tributary-bench --bin pg_bench [-- --rate 100 --duration 10 --burst 5000]`

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;
use tributary_tests::cluster::Cluster;
use tributary_tests::postgres::{Postgres, connect};

#[derive(Parser, Debug)]
struct Args {
    /// Updates per second in the lag phase.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds of the lag phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Updates in the throughput phase.
    #[arg(long, default_value_t = 5000)]
    burst: u32,
    /// How often B is polled, ms.
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
}

const DDL: &str = "CREATE TABLE carts (pk text, sk text, qty integer, v integer, tags text[], note text, \
     PRIMARY KEY (pk, sk)); ALTER TABLE carts REPLICA IDENTITY FULL; \
     CREATE TABLE native (pk text, sk text, qty integer, v integer, PRIMARY KEY (pk, sk));";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

struct Figures {
    p50: f64,
    p99: f64,
    max: f64,
    per_s: f64,
}

/// Runs both phases on `table`, written in A (`a`) and read in B (`b`).
async fn measure(args: &Args, a: &str, b: &str, table: &str) -> Result<Figures> {
    let writer = connect(a).await?;
    let reader = connect(b).await?;
    let row = |pk: &str| format!("INSERT INTO {table} (pk, sk, qty, v) VALUES ('{pk}', 's', 1, 0)");
    for k in 0..100 {
        writer.batch_execute(&row(&format!("k{k}"))).await?;
    }
    writer.batch_execute(&row("lag")).await?;
    // Wait until B has the rows (the initial copy of a subscription, the
    // first shipping of Tributary).
    let ready = Instant::now();
    loop {
        let n: i64 = reader
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        if n == 101 {
            break;
        }
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(60),
            "B has {n} of 101 rows"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let update = format!("UPDATE {table} SET v = $1, qty = qty + 1 WHERE pk = 'lag'");
    let seen = format!("SELECT v FROM {table} WHERE pk = 'lag'");
    let total = args.rate as u64 * args.duration;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let start = Instant::now();
    let mut acked: Vec<Instant> = Vec::new();
    let mut lags = Vec::new();
    let mut next_seen = 1usize;
    let mut i = 0u64;
    while (next_seen as u64) <= total {
        while i < total && start + interval * i as u32 <= Instant::now() {
            i += 1;
            writer
                .execute(update.as_str(), &[&(i as i32)])
                .await
                .context("update")?;
            acked.push(Instant::now());
        }
        let v: i32 = reader.query_one(seen.as_str(), &[]).await?.get(0);
        let now = Instant::now();
        while next_seen <= v as usize && next_seen <= acked.len() {
            lags.push(now.duration_since(acked[next_seen - 1]).as_secs_f64() * 1000.0);
            next_seen += 1;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(args.duration + 120),
            "B saw {v} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
    lags.sort_by(f64::total_cmp);
    // Throughput: a burst, then wait for B to hold every final value.
    let t = Instant::now();
    let burst = format!("UPDATE {table} SET v = $1 WHERE pk = $2");
    for n in 0..args.burst {
        let pk = format!("k{}", n % 100);
        writer
            .execute(burst.as_str(), &[&(n as i32 + 1_000_000), &pk])
            .await?;
    }
    // Each row's last update: the largest n < burst with n % 100 == k.
    let last: Vec<(String, i32)> = (0..100u32.min(args.burst))
        .map(|k| {
            let n = k + 100 * ((args.burst - 1 - k) / 100);
            (format!("k{k}"), n as i32 + 1_000_000)
        })
        .collect();
    loop {
        let rows = reader
            .query(
                &format!("SELECT pk, v FROM {table} WHERE pk LIKE 'k%'"),
                &[],
            )
            .await?;
        let done = last.iter().all(|(pk, v)| {
            rows.iter()
                .any(|r| r.get::<_, String>(0) == *pk && r.get::<_, i32>(1) == *v)
        });
        if done {
            break;
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(300),
            "burst not replicated"
        );
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
    Ok(Figures {
        p50: percentile(&lags, 0.5),
        p99: percentile(&lags, 0.99),
        max: lags.last().copied().unwrap_or(f64::NAN),
        per_s: f64::from(args.burst) / t.elapsed().as_secs_f64(),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let a = Postgres::start()?;
    let b = Postgres::start()?;
    for pg in [&a, &b] {
        pg.create_database("app")?;
        pg.psql("app", DDL)?;
    }
    // PostgreSQL's own: A publishes `native`, B subscribes.
    a.psql("app", "CREATE PUBLICATION bench FOR TABLE native")?;
    b.psql(
        "app",
        &format!(
            "CREATE SUBSCRIPTION bench CONNECTION '{}' PUBLICATION bench",
            a.dsn("app")
        ),
    )?;
    let native = measure(&args, &a.dsn("app"), &b.dsn("app"), "native").await?;
    // Tributary: a node beside each cluster, `carts` both ways.
    let dsns = [a.dsn("app"), b.dsn("app")];
    let regions = ["us-east-1", "eu-west-1"];
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::start_each(
            &regions,
            &[(0, 1)],
            |i| {
                let slot = format!("tributary_{}", regions[i].replace('-', "_"));
                format!(
                    "[[sources]]\nkind = \"postgres\"\ndsn = \"{d}\"\ntable = \"carts\"\nslot = \"{slot}\"\n\
                     poll_interval = \"10ms\"\n[[sinks]]\nkind = \"postgres\"\ndsn = \"{d}\"\ntable = \"carts\"\n",
                    d = dsns[i]
                )
            },
            |_, _, p| p,
        )
    })
    .await?;
    let tributary = measure(&args, &a.dsn("app"), &b.dsn("app"), "carts").await?;
    drop(cluster);
    println!(
        "PostgreSQL A → B, {} updates/s for {} s (lag), {} updates as fast as one connection commits (throughput)",
        args.rate, args.duration, args.burst
    );
    for (name, f) in [
        ("logical replication (native, one-way)", &native),
        ("Tributary (two-way, merging)", &tributary),
    ] {
        println!(
            "  {name:40} lag p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms   throughput {:.0} updates/s",
            f.p50, f.p99, f.max, f.per_s
        );
    }
    println!(
        "  Tributary / native: lag p50 {:.2}×, throughput {:.2}×",
        tributary.p50 / native.p50,
        tributary.per_s / native.per_s
    );
    println!(
        "{}",
        json!({
            "native": {"p50_ms": native.p50, "p99_ms": native.p99, "per_s": native.per_s},
            "tributary": {"p50_ms": tributary.p50, "p99_ms": tributary.p99, "per_s": tributary.per_s},
        })
    );
    Ok(())
}
