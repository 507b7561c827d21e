//! The history of a chaos run: every operation a writer invoked and what
//! came of it — acknowledged (`ok`, with the `{"origin","seq"}` the node
//! printed), `failed` (the node rejected it: exit 1 and an `{"error"}`
//! line, so it was not written) or `unknown` (exit 2, a timeout, a killed
//! client: it may or may not have been written, and may still be, later).
//!
//! Every value is unique, so each effect in the final state names the one
//! operation that caused it:
//! - an increment adds 1 to a counter item's `qty` *and* adds its own tag
//!   `i-<writer>-<n>` to the same item's `tags` in the same change (one log
//!   entry, applied atomically): `qty` must equal the number of tags, and
//!   every tag names one increment;
//! - a set add puts the unique element `e-<writer>-<n>` into a set item's
//!   `tags`; a remove takes out an element its own writer added and saw
//!   acknowledged, at the same region (so the remove has observed the add);
//! - a register write sets `v` to `w-<writer>-<n>`;
//! - a create makes a fresh private item, a delete deletes it again.
//!
//! [`Recorder`] is shared by the writer threads; it appends each event to a
//! JSON-lines file as it happens (so a crash of the test still leaves the
//! history) and hands the checker a [`History`]. The file's lines:
//! `{"event":"invoke","op":{"index":..,"writer":..,"region":..,"kind":{..},
//! "invoked_ms":..,..}}` and `{"event":"complete","op":<index>,"at_ms":..,
//! "outcome":{"type":"ok","origin":..,"seq":..}}` (or `failed` with its
//! `error`, `unknown` with its `reason`); times in ms since the run's start.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

/// The table every chaos operation writes (the cluster harness's `carts`:
/// `qty` is a counter, `tags` a set, everything else last-writer-wins).
pub const TABLE: &str = "carts";

/// The partition key of counter items.
pub const COUNTERS: &str = "ctr";
/// The partition key of set items.
pub const SETS: &str = "set";
/// The partition key of register items.
pub const REGISTERS: &str = "lww";
/// The partition key of created-then-deleted items.
pub const DELETES: &str = "del";

/// An item key of [`TABLE`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Key {
    /// Partition key: which kind of item ([`COUNTERS`], [`SETS`], ...).
    pub pk: String,
    /// Sort key.
    pub sk: String,
}

impl Key {
    /// A key.
    pub fn new(pk: &str, sk: impl Into<String>) -> Self {
        Self {
            pk: pk.to_owned(),
            sk: sk.into(),
        }
    }

    /// The key as `replctl get` takes it.
    pub fn json(&self) -> String {
        json!({"pk": self.pk, "sk": self.sk}).to_string()
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pk, self.sk)
    }
}

/// What an operation does; every value in it is unique to the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OpKind {
    /// `qty += 1` and `tags += {tag}` on a counter item, in one change.
    Increment {
        /// The counter item.
        key: Key,
        /// The increment's unique tag.
        tag: String,
    },
    /// `tags += {element}` on a set item.
    SetAdd {
        /// The set item.
        key: Key,
        /// The unique element.
        element: String,
    },
    /// `tags -= {element}` on a set item (an element this writer added).
    SetRemove {
        /// The set item.
        key: Key,
        /// The element.
        element: String,
    },
    /// `v = value` on a register item.
    Write {
        /// The register item.
        key: Key,
        /// The unique value.
        value: String,
    },
    /// Creates a fresh private item with `v = value`.
    Create {
        /// The new item.
        key: Key,
        /// Its value.
        value: String,
    },
    /// Deletes an item this writer created.
    Delete {
        /// The item.
        key: Key,
    },
}

impl OpKind {
    /// The item the operation touches.
    pub fn key(&self) -> &Key {
        match self {
            Self::Increment { key, .. }
            | Self::SetAdd { key, .. }
            | Self::SetRemove { key, .. }
            | Self::Write { key, .. }
            | Self::Create { key, .. }
            | Self::Delete { key } => key,
        }
    }

    /// A short name, for counts in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Increment { .. } => "increment",
            Self::SetAdd { .. } => "set_add",
            Self::SetRemove { .. } => "set_remove",
            Self::Write { .. } => "write",
            Self::Create { .. } => "create",
            Self::Delete { .. } => "delete",
        }
    }

    /// The `replctl write` line.
    pub fn change_line(&self) -> String {
        let key = self.key();
        let k = json!({"pk": key.pk, "sk": key.sk});
        let v = match self {
            Self::Increment { tag, .. } => {
                json!({"table": TABLE, "key": k, "add": {"qty": 1}, "add_to_set": {"tags": [tag]}})
            }
            Self::SetAdd { element, .. } => {
                json!({"table": TABLE, "key": k, "add_to_set": {"tags": [element]}})
            }
            Self::SetRemove { element, .. } => {
                json!({"table": TABLE, "key": k, "remove_from_set": {"tags": [element]}})
            }
            Self::Write { value, .. } | Self::Create { value, .. } => {
                json!({"table": TABLE, "key": k, "set": {"v": value}})
            }
            Self::Delete { .. } => json!({"table": TABLE, "key": k, "delete": true}),
        };
        v.to_string()
    }
}

/// What came of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// Invoked, no answer recorded yet.
    Pending,
    /// Acknowledged: durable at `origin` as entry `seq`.
    Ok {
        /// The region that wrote it.
        origin: String,
        /// Its sequence number there.
        seq: u64,
    },
    /// Rejected by the node: not written.
    Failed {
        /// The node's reason.
        error: String,
    },
    /// No definite answer: it may have been written, now or later.
    Unknown {
        /// What happened to the call.
        reason: String,
    },
}

impl Outcome {
    /// A short name, for counts in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Ok { .. } => "ok",
            Self::Failed { .. } => "failed",
            Self::Unknown { .. } => "unknown",
        }
    }
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Op {
    /// Its index in the history.
    pub index: usize,
    /// The writer that invoked it.
    pub writer: usize,
    /// The region it was sent to.
    pub region: String,
    /// What it does.
    pub kind: OpKind,
    /// When it was invoked, since the start of the run.
    #[serde(rename = "invoked_ms", serialize_with = "as_millis")]
    pub invoked: Duration,
    /// When its answer arrived (for `ok` and `failed`: the result line; for
    /// `unknown`: when the client gave up).
    #[serde(rename = "completed_ms", serialize_with = "opt_as_millis")]
    pub completed: Option<Duration>,
    /// What came of it.
    pub outcome: Outcome,
}

impl Op {
    /// `(origin, seq)` if acknowledged.
    pub fn acked(&self) -> Option<(&str, u64)> {
        match &self.outcome {
            Outcome::Ok { origin, seq } => Some((origin.as_str(), *seq)),
            _ => None,
        }
    }

    /// Whether it may have taken effect (acknowledged or unknown).
    pub fn may_exist(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::Ok { .. } | Outcome::Unknown { .. } | Outcome::Pending
        )
    }
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

fn opt_as_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

/// Every operation of a run, in invocation order (index = position).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The operations.
    pub ops: Vec<Op>,
}

impl History {
    /// Number of operations per outcome name.
    pub fn outcome_counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for op in &self.ops {
            *counts.entry(op.outcome.name()).or_default() += 1;
        }
        counts
    }

    /// Number of operations per kind name.
    pub fn kind_counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for op in &self.ops {
            *counts.entry(op.kind.name()).or_default() += 1;
        }
        counts
    }
}

/// Records operations as writers invoke and complete them; thread-safe.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    file: Mutex<Option<BufWriter<File>>>,
    path: Option<PathBuf>,
}

impl Recorder {
    /// A recorder whose clock starts at `start`, appending events to `path`
    /// (JSON lines) when given.
    pub fn new(start: Instant, path: Option<&Path>) -> Self {
        let file = path.map(|p| {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).expect("create the history's directory");
            }
            BufWriter::new(File::create(p).expect("create the history file"))
        });
        Self {
            start,
            ops: Mutex::new(Vec::new()),
            file: Mutex::new(file),
            path: path.map(Path::to_path_buf),
        }
    }

    /// The history file, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The run's start.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// Time since the start of the run.
    pub fn since_start(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.start)
    }

    fn event(&self, event: Value) {
        let mut file = self.file.lock().expect("history file lock");
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{event}");
        }
    }

    /// Records the invocation of `kinds` by `writer` at `region`, at `at`;
    /// returns their indexes.
    pub fn invoke(
        &self,
        writer: usize,
        region: &str,
        kinds: Vec<OpKind>,
        at: Instant,
    ) -> Vec<usize> {
        let invoked = self.since_start(at);
        let mut ops = self.ops.lock().expect("history lock");
        let mut indexes = Vec::new();
        for kind in kinds {
            let op = Op {
                index: ops.len(),
                writer,
                region: region.to_owned(),
                kind,
                invoked,
                completed: None,
                outcome: Outcome::Pending,
            };
            self.event(json!({"event": "invoke", "op": op}));
            indexes.push(op.index);
            ops.push(op);
        }
        indexes
    }

    /// Records what came of operation `index`, at `at`.
    pub fn complete(&self, index: usize, outcome: Outcome, at: Instant) {
        let completed = self.since_start(at);
        let mut ops = self.ops.lock().expect("history lock");
        let op = &mut ops[index];
        op.completed = Some(completed);
        op.outcome = outcome;
        self.event(json!({
            "event": "complete",
            "op": index,
            "at_ms": completed.as_secs_f64() * 1000.0,
            "outcome": op.outcome,
        }));
    }

    /// Acknowledged operations sent to `region` and invoked at or after
    /// `since` (time since the start).
    pub fn acked_since(&self, region: &str, since: Duration) -> usize {
        let ops = self.ops.lock().expect("history lock");
        ops.iter()
            .filter(|o| o.region == region && o.invoked >= since && o.acked().is_some())
            .count()
    }

    /// The first acknowledgement (its completion time) of an operation sent
    /// to `region` and invoked at or after `since`.
    pub fn first_ack_since(&self, region: &str, since: Duration) -> Option<Duration> {
        let ops = self.ops.lock().expect("history lock");
        ops.iter()
            .filter(|o| o.region == region && o.invoked >= since && o.acked().is_some())
            .filter_map(|o| o.completed)
            .min()
    }

    /// Number of operations recorded so far.
    pub fn len(&self) -> usize {
        self.ops.lock().expect("history lock").len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Flushes the file and returns the history so far.
    pub fn history(&self) -> History {
        if let Some(f) = self.file.lock().expect("history file lock").as_mut() {
            let _ = f.flush();
        }
        History {
            ops: self.ops.lock().expect("history lock").clone(),
        }
    }
}
