//! kill -9 during ingest: a child process ingests batches with `sync`
//! durability and prints each acknowledged batch; the parent SIGKILLs it at
//! random moments (≥ 20 times), reopens the store each time and proves that
//! every acknowledged change is present, that the log is dense, that no half
//! batch is visible and that every item equals the join of its log entries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tributary_engine::crdt::{AttrView, ItemState};
use tributary_engine::ids::{AttrName, Seq};
use tributary_engine::value::AttrValue;
use tributary_tests::crash::{KEYS, batch_len, key_for, open_log, region};

const CYCLES: usize = 24;

/// SIGKILLs the child (`Child::kill` sends SIGKILL on Unix) and checks that
/// it died of it.
fn kill9(child: &mut Child) {
    use std::os::unix::process::ExitStatusExt;
    child.kill().expect("kill -9 the child");
    let status = child.wait().expect("reap child");
    assert_eq!(
        status.signal(),
        Some(9),
        "child must die of SIGKILL, got {status}"
    );
}

/// Runs the child until it acknowledged `acks` batches (or until a deadline),
/// then kills it. Returns the last acknowledged seq.
fn run_and_kill(dir: &std::path::Path, acks: usize, rng: &mut impl Rng) -> u64 {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash_ingest"))
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn crash_ingest");
    let stdout = child.stdout.take().expect("piped stdout");
    // Lines arrive through a channel so that waiting has a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_acked = 0;
    let mut prev: Option<u64> = None;
    let mut seen = 0;
    while seen < acks {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line.expect("read child output"),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "waiting for ack {}/{acks} ({e}); last acknowledged seq {last_acked}; child: {:?}",
                    seen + 1,
                    child.wait()
                );
            }
        };
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("ack"), "unexpected child line {line:?}");
        let first: u64 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .expect("first seq");
        let last: u64 = parts.next().and_then(|s| s.parse().ok()).expect("last seq");
        if let Some(p) = prev {
            assert_eq!(first, p + 1, "acknowledged batches must be contiguous");
        }
        prev = Some(last);
        last_acked = last;
        seen += 1;
    }
    // Let the child run on into its next batch for a random moment: busy
    // work in the parent, not a sleep used for synchronisation.
    let spin = rng.random_range(0..200_000u64);
    let mut x = 0u64;
    for i in 0..spin {
        x = x.wrapping_add(i * i);
    }
    std::hint::black_box(x);
    kill9(&mut child);
    last_acked
}

fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attr")
}

fn number(view: &BTreeMap<AttrName, AttrView>, name: &str) -> Option<i128> {
    match view.get(&attr(name)) {
        Some(AttrView::Value {
            value: AttrValue::N(n),
            ..
        }) => n.to_i128(),
        _ => None,
    }
}

/// Checks the reopened store; returns the applied seq.
fn verify(dir: &std::path::Path, acked: u64) -> u64 {
    let log = open_log(dir).expect("reopen after kill -9");
    let applied = log.applied().get(&region()).0;
    assert!(
        applied >= acked,
        "acknowledged seq {acked} lost: store has only {applied}"
    );
    // Applied sits on a batch boundary: batches are all or nothing.
    let mut boundary = 0;
    while boundary < applied {
        boundary += batch_len(boundary + 1);
    }
    assert_eq!(
        boundary, applied,
        "applied seq {applied} is inside a batch: a half batch is visible"
    );

    let entries = log
        .entries(&region(), Seq::ZERO, usize::MAX)
        .expect("read log");
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq.0).collect();
    assert_eq!(
        seqs,
        (1..=applied).collect::<Vec<_>>(),
        "log must hold exactly 1..={applied}"
    );

    // Every item equals the join of its entries' deltas, and means what the
    // workload wrote: n = number of changes, ids = their unique ids.
    let mut joined: BTreeMap<u64, ItemState> = BTreeMap::new();
    let mut expected_ids: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for e in &entries {
        joined.entry(e.seq.0 % KEYS).or_default().join(&e.delta);
        expected_ids
            .entry(e.seq.0 % KEYS)
            .or_default()
            .insert(format!("e{}", e.seq.0));
    }
    for (k, state) in &joined {
        let stored = log
            .item(&key_for(*k))
            .expect("read item")
            .expect("item exists");
        assert_eq!(
            &stored, state,
            "item k{k} differs from the join of its log entries"
        );
        let view = stored.view().expect("item visible");
        let ids = expected_ids.get(k).cloned().unwrap_or_default();
        assert_eq!(
            number(&view, "n"),
            Some(ids.len() as i128),
            "counter of k{k}"
        );
        assert_eq!(
            view.get(&attr("ids")),
            Some(&AttrView::Value {
                value: AttrValue::Ss(ids),
                provenance: None
            })
        );
    }
    applied
}

#[test]
fn sigkill_during_ingest_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7EA5);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut total_acked = 0;
    let mut recovered_beyond_ack = 0;
    for cycle in 0..CYCLES {
        let acks = rng.random_range(1..=30);
        let acked = run_and_kill(dir.path(), acks, &mut rng);
        let applied = verify(dir.path(), acked);
        if applied > acked {
            recovered_beyond_ack += 1;
        }
        total_acked = acked;
        eprintln!("cycle {cycle}: acknowledged up to {acked}, recovered {applied}");
    }
    eprintln!(
        "crash test (seed {seed}): {CYCLES} SIGKILLs, {total_acked} acknowledged changes checked, \
         {recovered_beyond_ack} kills landed after a commit but before its ack was printed"
    );
    assert!(total_acked > 0);
}
