//! The DynamoDB sidecar against moto's server, with the emulator's own
//! latencies and a raw SDK reader measured in the same run.
//!
//! - **end-to-end lag**: two release nodes (us-east-1, eu-west-1), each
//!   following its table's DynamoDB stream and writing merged results back.
//!   The application updates items in us-east-1 at a fixed rate (open
//!   loop); a checker polls eu-west-1's table (`GetItem`, every
//!   `--check-ms`) until the value is there. Lag = write acknowledged →
//!   value seen in eu-west-1's table, p50/p99/max. Beside it, the p50 of the
//!   emulator calls on that path, timed by this process on the same server
//!   (`PutItem` as the application's and the sink's write, `GetRecords` as
//!   the source's read, `GetItem` as the check), and the configured polling
//!   waits (half the source's poll interval and half the check interval on
//!   average): what is left is Tributary (ingest, shipping, apply, sink).
//! - **ingest throughput**: a Kinesis stream of `--shards` shards pre-filled
//!   with `--prefill` change records; a raw SDK reader reads it all
//!   (`GetRecords` of 1,000, shard after shard), then one node with a
//!   Kinesis source ingests it: records/s of each, and their ratio.
//!
//! Needs release binaries next to this one:
//! `cargo build --release -p tributary-replicator -p tributary-tools`, and
//! moto (`scripts/setup.sh`). Run:
//! `cargo run --release -p tributary-bench --bin sidecar_bench [-- --rate 20 --duration 15]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use clap::Parser;
use serde_json::json;
use tributary_tests::cluster::{Cluster, Node};
use tributary_tests::moto::{Moto, create_kinesis_stream, create_table};

#[derive(Parser, Debug)]
struct Args {
    /// Application writes per second in us-east-1 (lag phase).
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// Seconds of writes in the lag phase.
    #[arg(long, default_value_t = 15)]
    duration: u64,
    /// The sources' poll interval, ms.
    #[arg(long, default_value_t = 50)]
    poll_ms: u64,
    /// The checker's poll interval, ms.
    #[arg(long, default_value_t = 10)]
    check_ms: u64,
    /// Records pre-filled in the Kinesis stream (ingest phase).
    #[arg(long, default_value_t = 20_000)]
    prefill: usize,
    /// Shards of that stream.
    #[arg(long, default_value_t = 4)]
    shards: i32,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn key(pk: &str) -> [(String, AttributeValue); 2] {
    [
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S("s".to_owned())),
    ]
}

fn sidecar(endpoint: &str, region: &str, poll_ms: u64) -> String {
    format!(
        "[[sources]]\nkind = \"dynamodb-streams\"\ntable = \"carts\"\naws_region = \"{region}\"\n\
         endpoint_url = \"{endpoint}\"\npoll_interval = \"{poll_ms}ms\"\ninitial_load = \"none\"\n\
         [[sinks]]\nkind = \"dynamodb\"\ntable = \"carts\"\naws_region = \"{region}\"\n\
         endpoint_url = \"{endpoint}\"\n"
    )
}

struct Lag {
    lags_ms: Vec<f64>,
    put_ms: Vec<f64>,
    get_ms: Vec<f64>,
    records_ms: Vec<f64>,
    missed: usize,
}

async fn lag_phase(args: &Args, moto: &Moto) -> Result<Lag> {
    let east = moto.sdk_config("us-east-1").await;
    let west = moto.sdk_config("eu-west-1").await;
    create_table(&east, "carts", "pk", Some("sk")).await?;
    let west_stream = create_table(&west, "carts", "pk", Some("sk")).await?;
    let endpoint = moto.endpoint();
    let poll = args.poll_ms;
    let cluster = tokio::task::spawn_blocking(move || {
        Cluster::start_each(
            &["us-east-1", "eu-west-1"],
            &[(0, 1)],
            |i| sidecar(&endpoint, ["us-east-1", "eu-west-1"][i], poll),
            |_, _, p| p,
        )
    })
    .await?;
    let (a, b) = (
        aws_sdk_dynamodb::Client::new(&east),
        aws_sdk_dynamodb::Client::new(&west),
    );
    let streams = aws_sdk_dynamodbstreams::Client::new(&west);
    let total = args.rate as u64 * args.duration;
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let mut outstanding: BTreeMap<u64, (String, Instant)> = BTreeMap::new();
    let mut lags = Vec::new();
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    let mut records = Vec::new();
    let start = Instant::now();
    let mut next_write = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(args.check_ms));
    let deadline = start + Duration::from_secs(args.duration + 30);
    while (next_write < total || !outstanding.is_empty()) && Instant::now() < deadline {
        ticker.tick().await;
        // Writes due by now (open loop: the schedule does not wait).
        while next_write < total && start + interval * next_write as u32 <= Instant::now() {
            let pk = format!("lat-{}", next_write % 50);
            let mut req = a
                .update_item()
                .table_name("carts")
                .update_expression("SET v = :v")
                .expression_attribute_values(":v", AttributeValue::N(next_write.to_string()));
            for (k, v) in key(&pk) {
                req = req.key(k, v);
            }
            let t = Instant::now();
            req.send().await.context("application write")?;
            puts.push(t.elapsed().as_secs_f64() * 1000.0);
            outstanding.insert(next_write, (pk, Instant::now()));
            next_write += 1;
        }
        // Check the oldest outstanding writes in eu-west-1's table. A later
        // write to the same key also satisfies earlier ones.
        let keys: Vec<(u64, String)> = outstanding
            .iter()
            .map(|(n, (pk, _))| (*n, pk.clone()))
            .collect();
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for (_, pk) in &keys {
            if seen.contains_key(pk) {
                continue;
            }
            let mut req = b.get_item().table_name("carts").consistent_read(true);
            for (k, v) in key(pk) {
                req = req.key(k, v);
            }
            let t = Instant::now();
            let out = req.send().await.context("check read")?;
            gets.push(t.elapsed().as_secs_f64() * 1000.0);
            let v = match out.item().and_then(|i| i.get("v")) {
                Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
                _ => 0,
            };
            seen.insert(pk.clone(), v);
        }
        let now = Instant::now();
        outstanding.retain(|n, (pk, at)| {
            if seen.get(pk).is_some_and(|v| v >= n) {
                lags.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                false
            } else {
                true
            }
        });
        // The source's read call on the same server, now and then.
        if records.len() < 50 && lags.len() % 20 == 1 {
            let shard = streams
                .describe_stream()
                .stream_arn(&west_stream)
                .send()
                .await?
                .stream_description()
                .and_then(|d| {
                    d.shards()
                        .first()
                        .and_then(|s| s.shard_id().map(str::to_owned))
                })
                .context("a shard")?;
            let it = streams
                .get_shard_iterator()
                .stream_arn(&west_stream)
                .shard_id(shard)
                .shard_iterator_type(aws_sdk_dynamodbstreams::types::ShardIteratorType::Latest)
                .send()
                .await?;
            let t = Instant::now();
            streams
                .get_records()
                .shard_iterator(it.shard_iterator().unwrap_or_default())
                .limit(1000)
                .send()
                .await?;
            records.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let missed = outstanding.len();
    drop(cluster);
    Ok(Lag {
        lags_ms: sorted(lags),
        put_ms: sorted(puts),
        get_ms: sorted(gets),
        records_ms: sorted(records),
        missed,
    })
}

fn change_record(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "eventID": format!("ev-{i}"),
        "eventName": "MODIFY",
        "tableName": "carts",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_795_000_000_000u64 + i as u64,
            "Keys": {"pk": {"S": format!("k-{}", i % 5000)}, "sk": {"S": "s"}},
            "OldImage": {"pk": {"S": format!("k-{}", i % 5000)}, "sk": {"S": "s"}, "qty": {"N": "1"}, "name": {"S": "a"}},
            "NewImage": {"pk": {"S": format!("k-{}", i % 5000)}, "sk": {"S": "s"}, "qty": {"N": "3"}, "name": {"S": format!("n{i}")}},
        }
    }))
    .unwrap_or_default()
}

struct Ingest {
    raw_per_s: f64,
    node_per_s: f64,
}

async fn ingest_phase(args: &Args, moto: &Moto) -> Result<Ingest> {
    let config = moto.sdk_config("ap-south-1").await;
    create_kinesis_stream(&config, "bench-changes", args.shards).await?;
    let kinesis = aws_sdk_kinesis::Client::new(&config);
    for chunk in (0..args.prefill).collect::<Vec<_>>().chunks(500) {
        let entries = chunk
            .iter()
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .data(Blob::new(change_record(*i)))
                    .partition_key(format!("k-{}", i % 5000))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        kinesis
            .put_records()
            .stream_name("bench-changes")
            .set_records(Some(entries))
            .send()
            .await?;
    }
    // Baseline: the same records read raw through the SDK.
    let t = Instant::now();
    let mut read = 0usize;
    let shards = kinesis
        .list_shards()
        .stream_name("bench-changes")
        .send()
        .await?;
    for shard in shards.shards() {
        let mut it = kinesis
            .get_shard_iterator()
            .stream_name("bench-changes")
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_owned);
        while let Some(iterator) = it.take() {
            let out = kinesis
                .get_records()
                .shard_iterator(iterator)
                .limit(1000)
                .send()
                .await?;
            read += out.records().len();
            if out.records().is_empty() {
                break;
            }
            it = out.next_shard_iterator().map(str::to_owned);
        }
    }
    let raw_per_s = read as f64 / t.elapsed().as_secs_f64();
    if read != args.prefill {
        bail!("the raw reader read {read} of {} records", args.prefill);
    }
    // One node ingesting the same stream.
    let endpoint = moto.endpoint();
    // The harness configures table carts (pk, sk; qty a counter).
    let source = format!(
        "[[sources]]\nkind = \"kinesis\"\nstream = \"bench-changes\"\ntable = \"carts\"\n\
         aws_region = \"ap-south-1\"\nendpoint_url = \"{endpoint}\"\npoll_interval = \"10ms\"\n\
         initial_load = \"none\"\n"
    );
    let prefill = args.prefill as u64;
    let node_per_s = tokio::task::spawn_blocking(move || -> Result<f64> {
        let t = Instant::now();
        let cluster = Cluster::start_each(&["ap-south-1"], &[], |_| source.clone(), |_, _, p| p);
        let node: &Node = &cluster.nodes[0];
        loop {
            let status = node.ctl(&["status", "--json"], "").json();
            let src = &status["sources"]["kinesis:bench-changes"];
            let done =
                src["changes"].as_u64().unwrap_or(0) + src["dead_letters"].as_u64().unwrap_or(0);
            if done >= prefill {
                return Ok(prefill as f64 / t.elapsed().as_secs_f64());
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!("ingest did not finish: {src}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await??;
    Ok(Ingest {
        raw_per_s,
        node_per_s,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let moto = Moto::start()?;
    let lag = lag_phase(&args, &moto).await?;
    let ingest = ingest_phase(&args, &moto).await?;
    let p = |v: &[f64], q: f64| percentile(v, q);
    let emulator = p(&lag.records_ms, 0.5) + p(&lag.put_ms, 0.5) + p(&lag.get_ms, 0.5);
    let polling = args.poll_ms as f64 / 2.0 + args.check_ms as f64 / 2.0;
    let e2e = p(&lag.lags_ms, 0.5);
    println!(
        "sidecar end-to-end lag, us-east-1 write → visible in eu-west-1's table ({} writes/s for {} s, moto)",
        args.rate, args.duration
    );
    println!(
        "  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} writes, {} not seen)",
        e2e,
        p(&lag.lags_ms, 0.99),
        lag.lags_ms.last().copied().unwrap_or(f64::NAN),
        lag.lags_ms.len(),
        lag.missed
    );
    println!(
        "  of the p50: emulator calls ≈ {emulator:.1} ms (GetRecords {:.1} + sink write {:.1} + check GetItem {:.1}), polling waits ≈ {polling:.1} ms, Tributary ≈ {:.1} ms ({:.0}%)",
        p(&lag.records_ms, 0.5),
        p(&lag.put_ms, 0.5),
        p(&lag.get_ms, 0.5),
        e2e - emulator - polling,
        100.0 * (e2e - emulator - polling) / e2e
    );
    println!(
        "  application PutItem p50 {:.1} ms (not in the lag: it ends when the write is acknowledged)",
        p(&lag.put_ms, 0.5)
    );
    println!(
        "source → log ingest from a pre-filled Kinesis stream ({} records, {} shards)",
        args.prefill, args.shards
    );
    println!(
        "  node {:.0} records/s, raw SDK reader {:.0} records/s: ratio {:.2}",
        ingest.node_per_s,
        ingest.raw_per_s,
        ingest.node_per_s / ingest.raw_per_s
    );
    println!(
        "{}",
        json!({
            "lag_p50_ms": e2e, "lag_p99_ms": p(&lag.lags_ms, 0.99),
            "emulator_ms": emulator, "polling_ms": polling,
            "ingest_records_per_s": ingest.node_per_s, "raw_read_records_per_s": ingest.raw_per_s,
            "ingest_ratio": ingest.node_per_s / ingest.raw_per_s,
        })
    );
    Ok(())
}
