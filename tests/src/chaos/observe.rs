//! What a chaos run observed of the nodes, besides the writers' answers:
//! `replctl offsets --json` and `lag --json` sampled periodically during
//! the run, and after the heal every region's digest and merged items.
//!
//! The types are plain data for the checker; [`Sampler`] and
//! [`read_final`] fill them from real nodes through `replctl`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::ctl;
use super::history::Key;

/// Sequence numbers by origin region.
pub type Vector = BTreeMap<String, u64>;

/// One item as `replctl get --json` showed it, reduced to what the
/// workload writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemView {
    /// Whether the item exists.
    pub exists: bool,
    /// The counter `qty` (0 when absent).
    pub qty: i128,
    /// The set `tags`.
    pub tags: BTreeSet<String>,
    /// The register `v`, as text (a non-string value as its JSON).
    pub value: Option<String>,
}

impl ItemView {
    /// Reads a `replctl get --json` document.
    pub fn from_get(doc: &Value) -> Result<Self, String> {
        let exists = doc["exists"]
            .as_bool()
            .ok_or_else(|| format!("no `exists` in {doc}"))?;
        let attrs = &doc["attributes"];
        let qty = match &attrs["qty"] {
            Value::Null => 0,
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
                .ok_or_else(|| format!("qty is not an integer: {doc}"))?,
            other => return Err(format!("qty is not a number ({other}): {doc}")),
        };
        let tags = match &attrs["tags"] {
            Value::Null => BTreeSet::new(),
            Value::Array(items) => items
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| t.to_string())
                })
                .collect(),
            other => return Err(format!("tags is not a set ({other}): {doc}")),
        };
        let value = match &attrs["v"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        Ok(Self {
            exists,
            qty,
            tags,
            value,
        })
    }
}

/// A region's digest (`replctl digest --json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// Number of items.
    pub items: u64,
    /// The hash over every item.
    pub digest: String,
}

/// What one region held after the heal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionState {
    /// The region.
    pub region: String,
    /// Its digest; `None` if it could not be read.
    pub digest: Option<Digest>,
    /// The items read from it (possibly a subset of the history's keys).
    pub items: BTreeMap<Key, ItemView>,
}

/// One `replctl offsets --json` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetsSample {
    /// The region asked.
    pub region: String,
    /// When the call started, since the start of the run.
    pub started: Duration,
    /// When the answer arrived.
    pub ended: Duration,
    /// Its applied vector.
    pub applied: Vector,
    /// Its log start.
    pub log_start: Vector,
    /// Per peer, what the peer acknowledged.
    pub acked: BTreeMap<String, Vector>,
}

fn vector(v: &Value) -> Vector {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, s)| s.as_u64().map(|s| (k.clone(), s)))
                .collect()
        })
        .unwrap_or_default()
}

impl OffsetsSample {
    /// Reads a `replctl offsets --json` document.
    pub fn from_json(region: &str, started: Duration, ended: Duration, doc: &Value) -> Self {
        Self {
            region: region.to_owned(),
            started,
            ended,
            applied: vector(&doc["applied"]),
            log_start: vector(&doc["log_start"]),
            acked: doc["acked"]
                .as_object()
                .map(|m| m.iter().map(|(p, v)| (p.clone(), vector(v))).collect())
                .unwrap_or_default(),
        }
    }
}

/// One `replctl lag --json` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSample {
    /// The region asked.
    pub region: String,
    /// When the answer arrived, since the start of the run.
    pub at: Duration,
    /// The document.
    pub doc: Value,
}

/// Everything observed of a run besides the history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observations {
    /// Every region of the cluster.
    pub regions: Vec<String>,
    /// What each region held after the heal.
    pub finals: Vec<RegionState>,
    /// Offsets sampled during (and after) the run.
    pub offsets: Vec<OffsetsSample>,
    /// Lag sampled during (and after) the run.
    pub lag: Vec<LagSample>,
    /// When the last fault was healed, since the start of the run.
    pub healed: Option<Duration>,
    /// When every region first reported the same digest after the heal.
    pub converged: Option<Duration>,
}

/// A region and its admin URL.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The region.
    pub region: String,
    /// Its `--node` URL.
    pub url: String,
    /// `replctl`'s TLS arguments (empty: plaintext).
    pub tls: Vec<String>,
}

/// Samples `offsets` (every `period`) and `lag` (every `lag_every`-th
/// round) of every region, one thread per region, until stopped. A failed
/// call (node down or paused) yields no sample.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(Vec<OffsetsSample>, Vec<LagSample>)>>,
}

/// The timeout of the samplers' calls.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(1500);

/// One `offsets --json` call; `None` if the node did not answer.
pub fn sample_offsets(endpoint: &Endpoint, start: Instant) -> Option<OffsetsSample> {
    let run = ctl::run(
        &endpoint.url,
        &endpoint.tls,
        &["offsets", "--json"],
        "",
        SAMPLE_TIMEOUT,
    );
    if run.code != Some(0) {
        return None;
    }
    let doc = run.json()?;
    Some(OffsetsSample::from_json(
        &endpoint.region,
        run.started.saturating_duration_since(start),
        run.ended.saturating_duration_since(start),
        &doc,
    ))
}

fn sample_lag(endpoint: &Endpoint, start: Instant) -> Option<LagSample> {
    let run = ctl::run(
        &endpoint.url,
        &endpoint.tls,
        &["lag", "--json"],
        "",
        SAMPLE_TIMEOUT,
    );
    if !matches!(run.code, Some(0 | 1)) {
        return None;
    }
    Some(LagSample {
        region: endpoint.region.clone(),
        at: run.ended.saturating_duration_since(start),
        doc: run.json()?,
    })
}

impl Sampler {
    /// Starts sampling `endpoints`; times are relative to `start`.
    pub fn start(endpoints: &[Endpoint], start: Instant, period: Duration, lag_every: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = endpoints
            .iter()
            .cloned()
            .map(|endpoint| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let (mut offsets, mut lags) = (Vec::new(), Vec::new());
                    let mut round = 0u32;
                    while !stop.load(Ordering::SeqCst) {
                        let began = Instant::now();
                        offsets.extend(sample_offsets(&endpoint, start));
                        if round.is_multiple_of(lag_every.max(1)) {
                            lags.extend(sample_lag(&endpoint, start));
                        }
                        round += 1;
                        // The sampling period, not a synchronisation.
                        if let Some(rest) = period.checked_sub(began.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                    // One last round, after the writers stopped.
                    offsets.extend(sample_offsets(&endpoint, start));
                    lags.extend(sample_lag(&endpoint, start));
                    (offsets, lags)
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops sampling; returns the samples of every region.
    pub fn finish(self) -> (Vec<OffsetsSample>, Vec<LagSample>) {
        self.stop.store(true, Ordering::SeqCst);
        let mut offsets = Vec::new();
        let mut lags = Vec::new();
        for t in self.threads {
            let (o, l) = t.join().expect("sampler thread");
            offsets.extend(o);
            lags.extend(l);
        }
        (offsets, lags)
    }
}

/// `replctl digest --json` of one region.
pub fn digest(endpoint: &Endpoint) -> Result<Digest, String> {
    let run = ctl::run(
        &endpoint.url,
        &endpoint.tls,
        &["digest", "--json"],
        "",
        SAMPLE_TIMEOUT,
    );
    if run.code != Some(0) {
        return Err(format!("{}: {}", endpoint.region, run.failure()));
    }
    let doc = run
        .json()
        .ok_or_else(|| format!("{}: no JSON", endpoint.region))?;
    Ok(Digest {
        items: doc["items"].as_u64().unwrap_or_default(),
        digest: doc["digest"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Reads `keys` from `endpoint` with `parallel` concurrent `replctl get`s.
pub fn read_items(
    endpoint: &Endpoint,
    keys: &[Key],
    parallel: usize,
) -> Result<BTreeMap<Key, ItemView>, String> {
    let chunks: Vec<&[Key]> = keys
        .chunks(keys.len().div_ceil(parallel.max(1)).max(1))
        .collect();
    let results: Vec<Result<Vec<(Key, ItemView)>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|key| {
                            let run = ctl::run(
                                &endpoint.url,
                                &endpoint.tls,
                                &["get", super::history::TABLE, &key.json(), "--json"],
                                "",
                                Duration::from_secs(5),
                            );
                            if run.code != Some(0) {
                                return Err(format!(
                                    "get {key} from {}: {}",
                                    endpoint.region,
                                    run.failure()
                                ));
                            }
                            let doc = run.json().ok_or_else(|| format!("get {key}: no JSON"))?;
                            Ok((key.clone(), ItemView::from_get(&doc)?))
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("reader thread"))
            .collect()
    });
    let mut items = BTreeMap::new();
    for r in results {
        items.extend(r?);
    }
    Ok(items)
}

/// Every region's digest and items after the heal: `all_keys` from
/// `endpoints[0]`, `shared_keys` from every other region.
pub fn read_final(
    endpoints: &[Endpoint],
    all_keys: &[Key],
    shared_keys: &[Key],
) -> Result<Vec<RegionState>, String> {
    endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let keys = if i == 0 { all_keys } else { shared_keys };
            Ok(RegionState {
                region: e.region.clone(),
                digest: digest(e).ok(),
                items: read_items(e, keys, 4)?,
            })
        })
        .collect()
}
