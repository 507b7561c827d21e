//! Tier 1 of the chaos tests: a deterministic simulation of a cluster.
//!
//! The real replication logic — the engine's [`Log`] (ingest, causal
//! apply, group commit over a [`MemStore`] that loses unsynced writes on a
//! crash), the peer link's [`Outbound`] state machine (window, go-back-N,
//! acknowledged vectors) and the node's shipping rule (never beyond the
//! durable head, see [`entries_above`]) — runs in `regions` simulated
//! regions on a simulated network, in discrete 10 ms ticks. Everything
//! random comes from one seed: the workload, latencies, partitions, crashes,
//! lost / duplicated / reordered acknowledgements and clock skew. The same
//! seed replays the same run, so a failure prints `--seed N` and is
//! reproducible.
//!
//! What it does not run: tokio, tonic and HTTP/2 (tier 2 runs the real
//! processes). The glue that the node's link task performs — hello /
//! welcome, fill the window, ack → persist — is mirrored here in a few
//! lines ([`Sim::ship`], [`Sim::deliver`]).
//!
//! Per tick: due messages are delivered (batches applied, acks processed),
//! writers write, links ship what is durable, then the nemesis may crash a
//! region *before* its group commit (losing that tick's commits, none of
//! which was acknowledged), otherwise every region fsyncs, publishes its
//! durable head and only then acknowledges its writers and peers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tributary_engine::change::{Change, LogEntry, Op};
use tributary_engine::clock::{Clock, ManualClock};
use tributary_engine::crdt::AttrView;
use tributary_engine::ids::{AttrName, RegionId, Seq, TableName, VersionVector};
use tributary_engine::key::ItemKey;
use tributary_engine::log::{Log, LogConfig};
use tributary_engine::schema::{MergePolicy, Schemas, TableSchema};
use tributary_engine::store::{Durability, LogStore, MemStore, digest_items, entries_above};
use tributary_engine::value::{AttrValue, Scalar};
use tributary_replicator::link::{BatchId, Holds, Outbound, OutboundLimits, Report};

/// Milliseconds per tick.
const TICK_MS: u64 = 10;
/// Simulated wall-clock start.
const EPOCH_MS: u64 = 1_750_000_000_000;
/// The logs' item cache budget: small, so runs evict as well as hit.
const SIM_ITEM_CACHE_BYTES: usize = 16 * 1024;
/// How long a peer's stream may bring no entries and still count as
/// direct (the node's `DIRECT_QUIET`), in ticks.
const DIRECT_QUIET_TICKS: u64 = 100;

/// Knobs of one run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Regions (fully meshed).
    pub regions: usize,
    /// Writers, spread over the regions.
    pub writers: usize,
    /// Ticks with faults, before the final heal.
    pub ticks: u64,
    /// Percent of operations on keys shared by all writers.
    pub shared_percent: u32,
    /// Crash-restarts per run.
    pub crashes: usize,
    /// Partitions and lossy acknowledgements (with crashes: the nemesis).
    pub faults: bool,
    /// The links' [`OutboundLimits::relay_hold`], in ms.
    pub relay_hold_ms: u64,
    /// Entries a receiver parks at most (`Log::park_up_to`); 0: receivers
    /// refuse entries ahead of their dependencies, as before parking.
    pub park_max: usize,
}

impl SimConfig {
    /// The shape: 5 regions, 10 writers, ~30% shared keys, 3
    /// crash-restarts.
    pub fn standard(seed: u64) -> Self {
        Self {
            seed,
            regions: 5,
            writers: 10,
            ticks: 400,
            shared_percent: 30,
            crashes: 3,
            faults: true,
            relay_hold_ms: 50,
            // Small, so the full-park fallback runs too.
            park_max: 40,
        }
    }

    /// The same cluster and workload with nothing failing: what shipping
    /// costs when all is well.
    pub fn healthy(seed: u64) -> Self {
        Self {
            crashes: 0,
            faults: false,
            ..Self::standard(seed)
        }
    }

    fn limits(&self) -> OutboundLimits {
        OutboundLimits {
            max_entries: 20,
            max_bytes: usize::MAX,
            max_in_flight: 3,
            relay_hold: Duration::from_millis(self.relay_hold_ms),
        }
    }
}

/// Faults injected, by kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Faults {
    /// One region cut off from all others.
    pub isolations: u64,
    /// The regions split into two groups.
    pub splits: u64,
    /// Ring partitions (each region reaches only its neighbours).
    pub rings: u64,
    /// One direction of one link cut.
    pub one_way_cuts: u64,
    /// Crash-restarts (unsynced writes lost).
    pub crashes: u64,
    /// Acknowledgements dropped.
    pub acks_lost: u64,
    /// Acknowledgements delivered twice.
    pub acks_duplicated: u64,
    /// Acknowledgements delayed past later ones.
    pub acks_reordered: u64,
    /// Regions whose clock is off by ±5 s.
    pub skewed_clocks: u64,
}

/// What a run found; a correct system has zeros in the first five fields.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Acknowledged writes missing after the heal.
    pub lost: u64,
    /// Effects counted more than once (counter above its distinct ops).
    pub duplicated: u64,
    /// Removed elements that came back.
    pub zombies: u64,
    /// Regions whose digest differs from the first region's.
    pub divergent: u64,
    /// Times a durable applied vector went backwards.
    pub offsets_backwards: u64,
    /// Operations acknowledged.
    pub acked_ops: u64,
    /// Operations refused or lost to a crash before acknowledgement.
    pub unacked_ops: u64,
    /// Ticks from the final heal to identical digests, in ms.
    pub converge_ms: u64,
    /// Visibility latency of acknowledged writes (until durable in every
    /// region), in ms: p50, p99, max.
    pub visibility_ms: [u64; 3],
    /// Entries that arrived in batches.
    pub entries_received: u64,
    /// Of those, entries the receiver had already (sent on two paths, or
    /// resent).
    pub entries_duplicate: u64,
    /// Of those, entries of the receiver's own region (sent back to it).
    pub entries_echoed: u64,
    /// Faults injected.
    pub faults: Faults,
}

impl Outcome {
    /// True when nothing was lost, duplicated, resurrected or divergent.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.zombies == 0
            && self.divergent == 0
            && self.offsets_backwards == 0
    }
}

/// A message between regions.
#[derive(Debug, Clone)]
enum Body {
    /// The sender opens connection `epoch`.
    Hello,
    /// The receiver's durable applied vector, and whether it parks.
    Welcome(VersionVector, bool),
    /// Entries to apply.
    Batch(BatchId, Vec<LogEntry>),
    /// The receiver's durable applied vector after a batch (and what it
    /// holds, if it parks).
    Ack(BatchId, VersionVector, Option<Holds>),
    /// The receiver's durable applied vector, moved between acks.
    Progress(VersionVector, Option<Holds>),
}

#[derive(Debug, Clone)]
struct Message {
    from: usize,
    to: usize,
    /// The connection (sender's link epoch) it belongs to.
    epoch: u64,
    at: u64,
    /// Order of sending, to keep a connection's messages in order.
    order: u64,
    body: Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkPhase {
    Down,
    Connecting(u64),
    Up(u64),
}

struct Link {
    outbound: Outbound,
    phase: LinkPhase,
    epoch: u64,
}

struct Region {
    id: RegionId,
    store: MemStore,
    clock: ManualClock,
    skew_ms: i64,
    log: Log<MemStore, ManualClock>,
    /// The applied vector as of the last fsync (what may be shipped and
    /// reported).
    durable: VersionVector,
    links: BTreeMap<usize, Link>,
    up: bool,
    /// Writes committed this tick, acknowledged after the fsync.
    pending_writes: Vec<(OpKind, Seq)>,
    /// Acks owed to peers after the fsync: (peer, epoch, batch).
    pending_acks: Vec<(usize, u64, BatchId)>,
    /// Per peer, the connection (epoch) its latest hello opened here, while
    /// open.
    inbound: BTreeMap<usize, u64>,
    /// Per peer, the newest connection a hello opened here: an older
    /// hello arriving late opens nothing (its stream is gone).
    newest_hello: BTreeMap<usize, u64>,
    /// Per peer, the last tick its stream brought entries.
    delivered: BTreeMap<usize, u64>,
}

/// One kind of workload operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OpKind {
    /// `qty += 1` and the unique element `id` into `ids`.
    Increment { key: usize, id: String },
    /// The unique element `tag` into `tags`.
    AddTag { key: usize, tag: String },
    /// Remove `tag`, which the writer's region had observed.
    RemoveTag { key: usize, tag: String },
    /// `v := value`.
    Write { key: usize, value: String },
}

impl OpKind {
    fn key(&self) -> usize {
        match self {
            OpKind::Increment { key, .. }
            | OpKind::AddTag { key, .. }
            | OpKind::RemoveTag { key, .. }
            | OpKind::Write { key, .. } => *key,
        }
    }
}

/// An acknowledged operation.
#[derive(Debug, Clone)]
struct Acked {
    op: OpKind,
    origin: usize,
    seq: Seq,
    tick: u64,
}

/// The simulated cluster.
pub struct Sim {
    cfg: SimConfig,
    rng: StdRng,
    regions: Vec<Region>,
    net: Vec<Message>,
    order: u64,
    tick: u64,
    /// Directed pairs that cannot talk (from, to).
    blocked: BTreeSet<(usize, usize)>,
    acked: Vec<Acked>,
    unacked: u64,
    op_counter: u64,
    /// Durable heads per region per tick, to check monotonicity and
    /// visibility.
    visible_at: BTreeMap<(usize, u64), u64>,
    /// Per origin, the highest seq durable everywhere.
    visible: BTreeMap<usize, u64>,
    faults: Faults,
    offsets_backwards: u64,
    ack_faults: bool,
    /// Entries that arrived in batches, and those already had.
    entries_received: u64,
    entries_duplicate: u64,
    entries_echoed: u64,
    /// Per link, when its last batch arrives (batches of a stream arrive in
    /// order).
    batch_due: BTreeMap<(usize, usize), u64>,
}

fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attribute name")
}

fn table() -> TableName {
    TableName::new("carts").expect("valid table")
}

fn schemas() -> Schemas {
    let schema = TableSchema::new(table(), attr("pk"), None)
        .expect("schema")
        .with_policy(attr("qty"), MergePolicy::Counter)
        .expect("qty")
        .with_policy(attr("ids"), MergePolicy::Set)
        .expect("ids")
        .with_policy(attr("tags"), MergePolicy::Set)
        .expect("tags");
    [schema].into_iter().collect()
}

fn item_key(key: usize) -> ItemKey {
    ItemKey::new(table(), Scalar::S(format!("k{key}")), None).expect("key")
}

fn region_name(i: usize) -> RegionId {
    RegionId::new(format!("r{i}")).expect("region id")
}

fn open(
    store: &MemStore,
    id: &RegionId,
    clock: &ManualClock,
    park_max: usize,
) -> Log<MemStore, ManualClock> {
    let config = LogConfig {
        region: id.clone(),
        schemas: schemas(),
        max_clock_skew: Duration::from_secs(30),
        item_cache_bytes: SIM_ITEM_CACHE_BYTES,
    };
    let mut log = Log::open(store.clone(), config, clock.clone()).expect("open the log");
    log.park_up_to(tributary_engine::log::ParkLimit::entries(park_max));
    log
}

impl Sim {
    /// A cluster for `cfg`, every region empty.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut faults = Faults::default();
        let regions = (0..cfg.regions)
            .map(|i| {
                let id = region_name(i);
                let store = MemStore::new(Durability::Buffered);
                // Two regions run with their clock 5 s off.
                let skew_ms = match i {
                    1 => 5_000,
                    3 => -5_000,
                    _ => 0,
                };
                if skew_ms != 0 {
                    faults.skewed_clocks += 1;
                }
                let clock = ManualClock::new(EPOCH_MS.saturating_add_signed(skew_ms));
                let log = open(&store, &id, &clock, cfg.park_max);
                let links = (0..cfg.regions)
                    .filter(|j| *j != i)
                    .map(|j| {
                        let link = Link {
                            outbound: Outbound::new(
                                id.clone(),
                                region_name(j),
                                cfg.limits(),
                                VersionVector::new(),
                            ),
                            phase: LinkPhase::Down,
                            epoch: 0,
                        };
                        (j, link)
                    })
                    .collect();
                Region {
                    id,
                    store,
                    clock,
                    skew_ms,
                    log,
                    durable: VersionVector::new(),
                    links,
                    up: true,
                    pending_writes: Vec::new(),
                    pending_acks: Vec::new(),
                    inbound: BTreeMap::new(),
                    newest_hello: BTreeMap::new(),
                    delivered: BTreeMap::new(),
                }
            })
            .collect();
        let ack_faults = cfg.faults && rng.random_bool(0.8);
        Self {
            cfg,
            rng,
            regions,
            net: Vec::new(),
            order: 0,
            tick: 0,
            blocked: BTreeSet::new(),
            acked: Vec::new(),
            unacked: 0,
            op_counter: 0,
            visible_at: BTreeMap::new(),
            visible: BTreeMap::new(),
            faults,
            offsets_backwards: 0,
            ack_faults,
            entries_received: 0,
            entries_duplicate: 0,
            entries_echoed: 0,
            batch_due: BTreeMap::new(),
        }
    }

    fn can_talk(&self, from: usize, to: usize) -> bool {
        self.regions[from].up && self.regions[to].up && !self.blocked.contains(&(from, to))
    }

    fn send(&mut self, from: usize, to: usize, epoch: u64, body: Body) {
        let latency = self.rng.random_range(1..4u64);
        let mut at = self.tick + latency;
        if let Body::Ack(..) = body
            && self.ack_faults
        {
            if self.rng.random_bool(0.02) {
                self.faults.acks_lost += 1;
                return;
            }
            if self.rng.random_bool(0.03) {
                self.faults.acks_reordered += 1;
                at += self.rng.random_range(3..10u64);
            }
            if self.rng.random_bool(0.03) {
                self.faults.acks_duplicated += 1;
                let dup = Message {
                    from,
                    to,
                    epoch,
                    at: at + 1,
                    order: self.order,
                    body: body.clone(),
                };
                self.order += 1;
                self.net.push(dup);
            }
        }
        self.net.push(Message {
            from,
            to,
            epoch,
            at,
            order: self.order,
            body,
        });
        self.order += 1;
    }

    /// Runs the faulty phase, heals, runs until quiet, and checks.
    pub fn run(mut self) -> Outcome {
        let crash_ticks: BTreeSet<u64> = (0..self.cfg.crashes)
            .map(|_| self.rng.random_range(50..self.cfg.ticks.max(51)))
            .collect();
        while self.tick < self.cfg.ticks {
            self.nemesis();
            let crash = crash_ticks.contains(&self.tick);
            self.step(true, crash);
        }
        // Heal: every link and region up; run until every region has the
        // same digest and nothing is pending, within a deadline.
        self.blocked.clear();
        let healed_at = self.tick;
        for r in 0..self.regions.len() {
            if !self.regions[r].up {
                self.restart(r);
            }
            for link in self.regions[r].links.values_mut() {
                link.outbound.on_disconnected();
                link.phase = LinkPhase::Down;
            }
            self.regions[r].inbound.clear();
        }
        self.ack_faults = false;
        let deadline = self.tick + 3_000;
        let mut converged_at = None;
        while self.tick < deadline {
            self.step(false, false);
            if self.quiet() {
                converged_at = Some(self.tick);
                break;
            }
        }
        self.check(healed_at, converged_at)
    }

    fn quiet(&self) -> bool {
        let head = &self.regions[0].durable;
        let settled = self
            .regions
            .iter()
            .all(|r| &r.durable == head && r.links.values().all(|l| l.outbound.acked() == head));
        if !settled {
            return false;
        }
        let digest = digest_items(self.regions[0].log.store(), 1000).expect("digest");
        self.regions
            .iter()
            .all(|r| digest_items(r.log.store(), 1000).expect("digest") == digest)
    }

    /// Partitions come and go.
    fn nemesis(&mut self) {
        if !self.cfg.faults || !self.tick.is_multiple_of(40) {
            return;
        }
        self.blocked.clear();
        let n = self.regions.len();
        match self.rng.random_range(0..6) {
            0 => {
                let lone = self.rng.random_range(0..n);
                for other in (0..n).filter(|o| *o != lone) {
                    self.blocked.insert((lone, other));
                    self.blocked.insert((other, lone));
                }
                self.faults.isolations += 1;
            }
            1 => {
                let cut = self.rng.random_range(1..n);
                for a in 0..cut {
                    for b in cut..n {
                        self.blocked.insert((a, b));
                        self.blocked.insert((b, a));
                    }
                }
                self.faults.splits += 1;
            }
            2 => {
                for a in 0..n {
                    for b in 0..n {
                        let d = (a + n - b) % n;
                        if a != b && d != 1 && d != n - 1 {
                            self.blocked.insert((a, b));
                        }
                    }
                }
                self.faults.rings += 1;
            }
            3 => {
                let a = self.rng.random_range(0..n);
                let b = (a + self.rng.random_range(1..n)) % n;
                self.blocked.insert((a, b));
                self.faults.one_way_cuts += 1;
            }
            _ => {}
        }
    }

    fn restart(&mut self, r: usize) {
        let region = &mut self.regions[r];
        region.store.crash();
        region.log = open(&region.store, &region.id, &region.clock, self.cfg.park_max);
        let durable = region.log.applied().clone();
        if !region.durable.dominated_by(&durable) {
            self.offsets_backwards += 1;
        }
        region.durable = durable;
        for (peer, link) in region.links.iter_mut() {
            let acked = region
                .store
                .acked(&region_name(*peer))
                .expect("read acked vector");
            link.outbound = Outbound::new(
                region.id.clone(),
                region_name(*peer),
                self.cfg.limits(),
                acked,
            );
            link.phase = LinkPhase::Down;
        }
        region.inbound.clear();
        region.newest_hello.clear();
        region.delivered.clear();
        region.up = true;
    }

    /// One tick.
    fn step(&mut self, writes: bool, crash: bool) {
        self.tick += 1;
        for r in &self.regions {
            let now = EPOCH_MS + self.tick * TICK_MS;
            r.clock.set(now.saturating_add_signed(r.skew_ms));
        }
        // Restart regions that were down for a while.
        for r in 0..self.regions.len() {
            if !self.regions[r].up && self.rng.random_bool(0.05) {
                self.restart(r);
            }
        }
        self.deliver();
        if writes {
            self.write();
        }
        self.ship();
        let victim = if crash {
            let up: Vec<usize> = (0..self.regions.len())
                .filter(|r| self.regions[*r].up)
                .collect();
            (!up.is_empty()).then(|| up[self.rng.random_range(0..up.len())])
        } else {
            None
        };
        for r in 0..self.regions.len() {
            if !self.regions[r].up {
                continue;
            }
            if Some(r) == victim {
                // Power cut before the group commit: this tick's commits and
                // everything owed for them are lost, none acknowledged.
                let region = &mut self.regions[r];
                self.unacked += region.pending_writes.len() as u64;
                region.pending_writes.clear();
                region.pending_acks.clear();
                region.up = false;
                self.faults.crashes += 1;
                // What it sent is already on the wire; what was coming to
                // it is lost with its connections.
                self.net.retain(|m| m.to != r);
                continue;
            }
            self.group_commit(r);
        }
        self.mark_visible();
    }

    /// fsync, publish the durable head, then acknowledge.
    fn group_commit(&mut self, r: usize) {
        let region = &mut self.regions[r];
        region.log.sync().expect("sync");
        let head = region.log.applied().clone();
        if !region.durable.dominated_by(&head) {
            self.offsets_backwards += 1;
        }
        let before = std::mem::replace(&mut region.durable, head.clone());
        let writes = std::mem::take(&mut region.pending_writes);
        let acks = std::mem::take(&mut region.pending_acks);
        for (op, seq) in writes {
            self.acked.push(Acked {
                op,
                origin: r,
                seq,
                tick: self.tick,
            });
        }
        let holds = self.holds(r);
        let acked: BTreeSet<usize> = acks.iter().map(|(peer, ..)| *peer).collect();
        for (peer, epoch, batch) in acks {
            if self.can_talk(r, peer) {
                self.send(
                    r,
                    peer,
                    epoch,
                    Body::Ack(batch, head.clone(), holds.clone()),
                );
            }
        }
        // Progress to the other senders, when what they did not send moved.
        let inbound: Vec<(usize, u64)> = self.regions[r]
            .inbound
            .iter()
            .map(|(p, e)| (*p, *e))
            .filter(|(p, _)| !acked.contains(p))
            .collect();
        for (peer, epoch) in inbound {
            let sender = region_name(peer);
            let moved = head.iter().any(|(o, s)| o != &sender && s > before.get(o));
            if moved && self.can_talk(r, peer) {
                self.send(r, peer, epoch, Body::Progress(head.clone(), holds.clone()));
            }
        }
    }

    /// What region `r` reports beside its applied vector when it parks:
    /// what it holds, and the peers whose own entries reach it directly —
    /// an open stream that brought entries lately (as the node's
    /// `Core::direct_origins`).
    fn holds(&self, r: usize) -> Option<Holds> {
        let region = &self.regions[r];
        if self.cfg.park_max == 0 {
            return None;
        }
        let direct = region
            .inbound
            .keys()
            .filter(|p| {
                region
                    .delivered
                    .get(p)
                    .is_some_and(|at| self.tick.saturating_sub(*at) <= DIRECT_QUIET_TICKS)
            })
            .map(|p| region_name(*p))
            .collect();
        Some(Holds {
            held: region.log.held(),
            direct,
        })
    }

    /// Records the tick at which every region holds each entry durably.
    fn mark_visible(&mut self) {
        for o in 0..self.regions.len() {
            let origin = region_name(o);
            let everywhere = self
                .regions
                .iter()
                .map(|r| r.durable.get(&origin).0)
                .min()
                .unwrap_or(0);
            let seen = self.visible.entry(o).or_default();
            for s in *seen + 1..=everywhere {
                self.visible_at.insert((o, s), self.tick);
            }
            *seen = (*seen).max(everywhere);
        }
    }

    /// Writers issue operations at their region.
    fn write(&mut self) {
        for w in 0..self.cfg.writers {
            if !self.rng.random_bool(0.15) {
                continue;
            }
            let r = w % self.regions.len();
            let key = if self.rng.random_range(0..100) < self.cfg.shared_percent {
                self.rng.random_range(0..10)
            } else {
                100 + w * 10 + self.rng.random_range(0..10)
            };
            self.op_counter += 1;
            let n = self.op_counter;
            let op = match self.rng.random_range(0..10) {
                0..=3 => OpKind::Increment {
                    key,
                    id: format!("i-{w}-{n}"),
                },
                4..=5 => OpKind::AddTag {
                    key,
                    tag: format!("t-{w}-{n}"),
                },
                6..=7 => match self.observed_tag(r, key) {
                    Some(tag) => OpKind::RemoveTag { key, tag },
                    None => OpKind::Write {
                        key,
                        value: format!("v-{w}-{n}"),
                    },
                },
                _ => OpKind::Write {
                    key,
                    value: format!("v-{w}-{n}"),
                },
            };
            if !self.regions[r].up {
                self.unacked += 1;
                continue;
            }
            let ops = match &op {
                OpKind::Increment { id, .. } => vec![
                    Op::Add {
                        attr: attr("qty"),
                        amount: 1,
                    },
                    Op::AddToSet {
                        attr: attr("ids"),
                        elements: vec![Scalar::S(id.clone())],
                    },
                ],
                OpKind::AddTag { tag, .. } => vec![Op::AddToSet {
                    attr: attr("tags"),
                    elements: vec![Scalar::S(tag.clone())],
                }],
                OpKind::RemoveTag { tag, .. } => vec![Op::RemoveFromSet {
                    attr: attr("tags"),
                    elements: vec![Scalar::S(tag.clone())],
                }],
                OpKind::Write { value, .. } => vec![Op::Set {
                    attr: attr("v"),
                    value: AttrValue::S(value.clone()),
                }],
            };
            let change = Change {
                key: item_key(key),
                ops,
                source_millis: None,
            };
            let region = &mut self.regions[r];
            let report = region.log.ingest(&[change], Vec::new()).expect("ingest");
            match report.outcomes.first() {
                Some(Ok((seq, _))) => region.pending_writes.push((op, *seq)),
                _ => self.unacked += 1,
            }
        }
    }

    /// A tag of `key` visible at region `r`, if any.
    fn observed_tag(&mut self, r: usize, key: usize) -> Option<String> {
        let tags = set_of(&self.regions[r].log, key, "tags");
        if tags.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..tags.len());
        tags.into_iter().nth(i)
    }

    /// Links (re)connect and fill their windows with durable entries.
    fn ship(&mut self) {
        for r in 0..self.regions.len() {
            if !self.regions[r].up {
                continue;
            }
            let peers: Vec<usize> = self.regions[r].links.keys().copied().collect();
            for p in peers {
                let talk = self.can_talk(r, p) && self.can_talk(p, r);
                let region = &mut self.regions[r];
                let Some(link) = region.links.get_mut(&p) else {
                    continue;
                };
                match link.phase {
                    // Keepalive notices a dead path: the stream breaks, at
                    // both ends.
                    LinkPhase::Up(epoch) | LinkPhase::Connecting(epoch) if !talk => {
                        link.outbound.on_disconnected();
                        link.phase = LinkPhase::Down;
                        let inbound = &mut self.regions[p].inbound;
                        if inbound.get(&r) == Some(&epoch) {
                            inbound.remove(&r);
                        }
                    }
                    LinkPhase::Down if talk => {
                        link.epoch += 1;
                        link.phase = LinkPhase::Connecting(link.epoch);
                        let epoch = link.epoch;
                        self.send(r, p, epoch, Body::Hello);
                    }
                    LinkPhase::Up(epoch) => {
                        let head = region.durable.clone();
                        let now = region.clock.now_millis();
                        link.outbound.observe(&head, now);
                        while let Some(read) = link.outbound.want(&head, now) {
                            let entries = entries_above(
                                region.log.store(),
                                &read.upto,
                                &read.from,
                                read.limit,
                            )
                            .expect("read entries");
                            let Some(batch) = link.outbound.pack(entries, now, |_| 1) else {
                                break;
                            };
                            let body = Body::Batch(batch.id, batch.entries);
                            let order = self.order;
                            self.order += 1;
                            // One stream: batches arrive in the order sent.
                            let latency = self.rng.random_range(1..4u64);
                            let last = self.batch_due.entry((r, p)).or_default();
                            let at = (self.tick + latency).max(*last);
                            *last = at;
                            self.net.push(Message {
                                from: r,
                                to: p,
                                epoch,
                                at,
                                order,
                                body,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Delivers due messages; a connection's messages arrive in order.
    fn deliver(&mut self) {
        let tick = self.tick;
        let (mut due, later): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|m| m.at <= tick);
        self.net = later;
        due.sort_by_key(|m| (m.from, m.to, m.order));
        for m in due {
            // Bytes already sent still arrive after their sender crashed;
            // nothing arrives at a crashed region or across a cut.
            if !self.regions[m.to].up || self.blocked.contains(&(m.from, m.to)) {
                continue;
            }
            match m.body {
                Body::Hello => {
                    if !self.regions[m.from].up {
                        continue;
                    }
                    let newest = self.regions[m.to].newest_hello.entry(m.from).or_default();
                    if m.epoch < *newest {
                        continue;
                    }
                    *newest = m.epoch;
                    self.regions[m.to].inbound.insert(m.from, m.epoch);
                    let applied = self.regions[m.to].durable.clone();
                    let parks = self.cfg.park_max > 0;
                    self.send(m.to, m.from, m.epoch, Body::Welcome(applied, parks));
                }
                Body::Welcome(applied, parks) => {
                    let region = &mut self.regions[m.to];
                    if let Some(link) = region.links.get_mut(&m.from)
                        && link.phase == LinkPhase::Connecting(m.epoch)
                    {
                        let head = region.durable.clone();
                        // Regions here are never wiped: each holds its own entries.
                        if let Some(acked) =
                            link.outbound.on_connected(&applied, &head, true, parks)
                        {
                            region
                                .store
                                .set_acked(&region_name(m.from), &acked)
                                .expect("persist acked");
                        }
                        link.phase = LinkPhase::Up(m.epoch);
                    }
                }
                Body::Batch(id, entries) => {
                    // Only on the stream the receiver has open with the
                    // sender (a newer hello closed older ones).
                    if self.regions[m.to].inbound.get(&m.from) != Some(&m.epoch) {
                        continue;
                    }
                    let region_to = &mut self.regions[m.to];
                    self.entries_received += entries.len() as u64;
                    self.entries_echoed +=
                        entries.iter().filter(|e| e.origin == region_to.id).count() as u64;
                    let report = region_to.log.apply_remote(&entries).expect("apply");
                    self.entries_duplicate += report.duplicates as u64;
                    if !entries.is_empty() {
                        region_to.delivered.insert(m.from, tick);
                    }
                    region_to.pending_acks.push((m.from, m.epoch, id));
                }
                Body::Ack(id, applied, holds) => {
                    let region = &mut self.regions[m.to];
                    if let Some(link) = region.links.get_mut(&m.from)
                        && link.phase == LinkPhase::Up(m.epoch)
                    {
                        let now = region.clock.now_millis();
                        let report = Report {
                            applied: &applied,
                            holds: holds.as_ref(),
                        };
                        let outcome = link.outbound.on_ack(id, report, now);
                        if let Some(acked) = outcome.persist {
                            region
                                .store
                                .set_acked(&region_name(m.from), &acked)
                                .expect("persist acked");
                        }
                    }
                }
                Body::Progress(applied, holds) => {
                    let region = &mut self.regions[m.to];
                    if let Some(link) = region.links.get_mut(&m.from)
                        && link.phase == LinkPhase::Up(m.epoch)
                    {
                        let now = region.clock.now_millis();
                        let report = Report {
                            applied: &applied,
                            holds: holds.as_ref(),
                        };
                        let outcome = link.outbound.on_progress(report, now);
                        if let Some(acked) = outcome.persist {
                            region
                                .store
                                .set_acked(&region_name(m.from), &acked)
                                .expect("persist acked");
                        }
                    }
                }
            }
        }
    }

    fn check(&self, healed_at: u64, converged_at: Option<u64>) -> Outcome {
        let mut out = Outcome {
            seed: self.cfg.seed,
            acked_ops: self.acked.len() as u64,
            unacked_ops: self.unacked,
            offsets_backwards: self.offsets_backwards,
            faults: self.faults.clone(),
            converge_ms: converged_at.map_or(u64::MAX, |t| (t - healed_at) * TICK_MS),
            entries_received: self.entries_received,
            entries_duplicate: self.entries_duplicate,
            entries_echoed: self.entries_echoed,
            ..Outcome::default()
        };
        let digest = digest_items(self.regions[0].log.store(), 1000).expect("digest");
        out.divergent = self
            .regions
            .iter()
            .filter(|r| digest_items(r.log.store(), 1000).expect("digest") != digest)
            .count() as u64;
        let mut increments: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        let mut removed: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        let mut latencies = Vec::new();
        for a in &self.acked {
            match &a.op {
                OpKind::Increment { key, id } => {
                    increments.entry(*key).or_default().insert(id.clone());
                }
                OpKind::RemoveTag { key, tag } => {
                    removed.entry(*key).or_default().insert(tag.clone());
                }
                _ => {}
            }
            if let Some(at) = self.visible_at.get(&(a.origin, a.seq.0)) {
                latencies.push(at.saturating_sub(a.tick) * TICK_MS);
            }
        }
        let keys: BTreeSet<usize> = self.acked.iter().map(|a| a.op.key()).collect();
        for region in &self.regions {
            for key in &keys {
                let ids = set_of(&region.log, *key, "ids");
                let want = increments.get(key).cloned().unwrap_or_default();
                out.lost += want.difference(&ids).count() as u64;
                // Every increment carries one unique id, so the counter must
                // equal the number of ids present: above is a duplicated
                // effect, below a lost one.
                let qty = counter_of(&region.log, *key);
                let present = ids.len() as u64;
                out.duplicated += qty.saturating_sub(present);
                out.lost += present.saturating_sub(qty);
                let tags = set_of(&region.log, *key, "tags");
                if let Some(gone) = removed.get(key) {
                    out.zombies += gone.intersection(&tags).count() as u64;
                }
            }
            for a in &self.acked {
                if region.durable.get(&region_name(a.origin)) < a.seq {
                    out.lost += 1;
                }
            }
        }
        latencies.sort_unstable();
        let pick = |q: f64| {
            latencies
                .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        out.visibility_ms = [
            pick(0.5),
            pick(0.99),
            latencies.last().copied().unwrap_or(0),
        ];
        out
    }
}

fn view_of(log: &Log<MemStore, ManualClock>, key: usize, name: &str) -> Option<AttrValue> {
    let state = log.item(&item_key(key)).expect("read item")?;
    match state.view()?.remove(&attr(name))? {
        AttrView::Value { value, .. } => Some(value),
        AttrView::Siblings(mut s) => s.pop().map(|(v, _)| v),
    }
}

fn set_of(log: &Log<MemStore, ManualClock>, key: usize, name: &str) -> BTreeSet<String> {
    match view_of(log, key, name) {
        Some(AttrValue::Ss(s)) => s,
        _ => BTreeSet::new(),
    }
}

fn counter_of(log: &Log<MemStore, ManualClock>, key: usize) -> u64 {
    match view_of(log, key, "qty") {
        Some(AttrValue::N(n)) => n.to_string().parse().unwrap_or(u64::MAX),
        _ => 0,
    }
}
