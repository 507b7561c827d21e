//! Unit tests of the configuration: the contract parses, defaults, units,
//! unknown keys, and every validation problem with its key path.

use std::time::Duration;

use bytesize::ByteSize;
use tributary_engine::ids::{AttrName, TableName};
use tributary_engine::schema::MergePolicy;
use tributary_engine::store::Durability;

use super::*;

/// The contract from the Replicator issue, verbatim.
const CONTRACT: &str = r#"
region = "us-east-1"            # unique node / region id
cluster = "demo"                # peers of another cluster are refused
data_dir = "/var/lib/tributary/us-east-1"
listen = "127.0.0.1:7101"       # gRPC: peers and admin API
metrics_listen = "127.0.0.1:9101"   # Prometheus /metrics (optional)
[[peers]]
region = "eu-west-1"
endpoint = "http://127.0.0.1:7102"
[[tables]]
name = "carts"
partition_key = "pk"
sort_key = "sk"                 # optional
counters = ["qty"]              # other policies: sets = [...], multi = [...]; default lww
"#;

const MINIMAL: &str = r#"
region = "us-east-1"
cluster = "demo"
data_dir = "data"
listen = "127.0.0.1:7101"
"#;

const EXAMPLE: &str = include_str!("../../examples/us-east-1.toml");

fn attr(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attribute")
}

/// The problems of `text`, which must parse but not validate.
fn problems(text: &str) -> Vec<Problem> {
    match NodeConfig::from_toml_str(text) {
        Err(ConfigError::Invalid(p)) => p.iter().cloned().collect(),
        other => panic!("expected validation problems, got {other:?}"),
    }
}

/// The message of a parse error of `text`.
fn syntax_error(text: &str) -> String {
    match NodeConfig::from_toml_str(text) {
        Err(e @ ConfigError::Syntax(_)) => e.to_string(),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn the_contract_example_parses_into_typed_values() {
    let c = NodeConfig::from_toml_str(CONTRACT).expect("contract parses");
    assert_eq!(c.region.as_str(), "us-east-1");
    assert_eq!(c.cluster.as_str(), "demo");
    assert_eq!(
        c.data_dir,
        std::path::PathBuf::from("/var/lib/tributary/us-east-1")
    );
    assert_eq!(c.listen, "127.0.0.1:7101".parse().expect("addr"));
    assert_eq!(
        c.metrics_listen,
        Some("127.0.0.1:9101".parse().expect("addr"))
    );
    assert_eq!(c.peers.len(), 1);
    assert_eq!(c.peers[0].region.as_str(), "eu-west-1");
    assert_eq!(c.peers[0].endpoint.to_string(), "http://127.0.0.1:7102");
    assert_eq!(c.peers[0].endpoint.port(), 7102);

    let schema = c.tables[0].to_schema().expect("schema");
    assert_eq!(schema.name(), &TableName::new("carts").expect("name"));
    assert_eq!(schema.partition_key(), &attr("pk"));
    assert_eq!(schema.sort_key(), Some(&attr("sk")));
    assert_eq!(schema.policy(&attr("qty")), MergePolicy::Counter);
    assert_eq!(schema.policy(&attr("title")), MergePolicy::Lww);

    let log = c.log_config().expect("log config");
    assert_eq!(log.region, c.region);
    assert_eq!(log.max_clock_skew, Duration::from_secs(30));
    assert!(log.schemas.get(schema.name()).is_some());
}

#[test]
fn the_shipped_example_parses_and_its_commented_defaults_are_the_defaults() {
    let c = NodeConfig::from_toml_str(EXAMPLE).expect("example parses");
    assert_eq!(c.storage, StorageConfig::default());
    assert_eq!(c.shipping, ShippingConfig::default());
    // Uncomment the optional sections: the file must still mean the same,
    // so the documented defaults cannot drift from the code's.
    let uncommented: String = EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_')
                    }) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(uncommented.contains("\n[shipping]\n"), "{uncommented}");
    assert!(
        uncommented.contains("\nlog_retention = \"1h\""),
        "{uncommented}"
    );
    let explicit = NodeConfig::from_toml_str(&uncommented).expect("uncommented example parses");
    assert_eq!(explicit, c);
}

#[test]
fn defaults_apply_and_zero_peers_is_a_valid_lone_region() {
    let c = NodeConfig::from_toml_str(MINIMAL).expect("minimal config is valid");
    assert!(c.peers.is_empty() && c.tables.is_empty());
    assert!(c.sources.is_empty() && c.sinks.is_empty());
    assert_eq!(c.metrics_listen, None);
    let s = &c.storage;
    assert_eq!(s.sync, SyncMode::Always);
    assert_eq!(s.sync.durability(), Durability::Sync);
    assert_eq!(s.group_commit_interval, Duration::from_millis(5));
    assert_eq!(s.max_clock_skew, Duration::from_secs(30));
    assert_eq!(s.item_cache, ByteSize::mib(64));
    let sh = &c.shipping;
    assert_eq!(sh.batch_max_entries, 1000);
    assert_eq!(sh.batch_max_bytes, ByteSize::b(1 << 20));
    assert_eq!(sh.batch_linger, Duration::from_millis(2));
    assert_eq!(sh.max_in_flight_batches, 8);
    assert_eq!(sh.heartbeat_interval, Duration::from_secs(1));
    assert_eq!(sh.keepalive_interval, Duration::from_secs(1));
    assert_eq!(sh.keepalive_timeout, Duration::from_secs(2));
    assert_eq!(sh.reconnect_backoff_initial, Duration::from_millis(50));
    assert_eq!(sh.reconnect_backoff_max, Duration::from_secs(2));
    assert_eq!(sh.max_message_bytes, ByteSize::b(8 << 20));
    assert_eq!(sh.log_retention, Duration::from_secs(3600));
    assert_eq!(sh.relay_hold, Duration::ZERO, "relays leave at once");
    assert_eq!(sh.park_max_entries, 50_000);
    assert_eq!(
        sh.park_limit(),
        tributary_engine::log::ParkLimit {
            entries: 50_000,
            bytes: 128 << 20
        }
    );
    let limits = sh.outbound_limits();
    assert_eq!(
        (limits.max_entries, limits.max_bytes, limits.max_in_flight),
        (1000, 1 << 20, 8)
    );
}

#[test]
fn durations_and_sizes_are_read_with_their_units() {
    let text = format!(
        "{MINIMAL}\n[storage]\nsync = \"group\"\ngroup_commit_interval = \"250us\"\n\
         max_clock_skew = \"1m 30s\"\nitem_cache = \"0\"\n[shipping]\nbatch_linger = \"0s\"\nrelay_hold = \"500ms\"\n\
         log_retention = \"2days\"\nbatch_max_bytes = \"512KiB\"\nmax_message_bytes = \"16 MB\"\n\
         park_max_bytes = \"0B\"\n"
    );
    let c = NodeConfig::from_toml_str(&text).expect("units parse");
    assert_eq!(c.storage.sync.durability(), Durability::Buffered);
    assert_eq!(c.storage.group_commit_interval, Duration::from_micros(250));
    assert_eq!(c.storage.max_clock_skew, Duration::from_secs(90));
    assert_eq!(c.storage.item_cache, ByteSize::b(0));
    assert_eq!(
        c.log_config().expect("schemas").item_cache_bytes,
        0,
        "\"0\" turns the item cache off"
    );
    assert_eq!(c.shipping.batch_linger, Duration::ZERO);
    assert_eq!(
        c.shipping.outbound_limits().relay_hold,
        Duration::from_millis(500)
    );
    assert_eq!(c.shipping.log_retention, Duration::from_secs(2 * 86_400));
    assert_eq!(c.shipping.batch_max_bytes.as_u64(), 512 * 1024);
    assert_eq!(c.shipping.max_message_bytes.as_u64(), 16_000_000);
    assert!(
        !c.shipping.park_limit().parks(),
        "\"0B\" turns parking off: {:?}",
        c.shipping.park_limit()
    );

    let bare = syntax_error(&format!("{MINIMAL}\n[shipping]\nbatch_linger = \"2\"\n"));
    assert!(bare.contains("with a unit"), "{bare}");
    let number = syntax_error(&format!("{MINIMAL}\n[storage]\nmax_clock_skew = 30\n"));
    assert!(
        number.contains("max_clock_skew") && number.contains("a duration with a unit"),
        "{number}"
    );
    let bytes = format!("{MINIMAL}\n[shipping]\nbatch_max_bytes = 65536\n");
    let c = NodeConfig::from_toml_str(&bytes).expect("a plain integer size is bytes");
    assert_eq!(c.shipping.batch_max_bytes.as_u64(), 65_536);
    let size = syntax_error(&format!(
        "{MINIMAL}\n[shipping]\nbatch_max_bytes = \"lots\"\n"
    ));
    assert!(
        size.contains("batch_max_bytes") && size.contains("\"1MiB\""),
        "{size}"
    );
    let negative = syntax_error(&format!("{MINIMAL}\n[shipping]\nbatch_max_bytes = -1\n"));
    assert!(negative.contains("negative"), "{negative}");
    let sync = syntax_error(&format!("{MINIMAL}\n[storage]\nsync = \"sometimes\"\n"));
    assert!(
        sync.contains("always") && sync.contains("group"),
        "the error lists the accepted modes: {sync}"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    for (text, typo) in [
        (format!("{MINIMAL}regoin = \"x\"\n"), "regoin"),
        (
            format!("{MINIMAL}[shipping]\nbatch_max_entires = 10\n"),
            "batch_max_entires",
        ),
        (
            format!("{MINIMAL}[[peers]]\nregion = \"b\"\nendpont = \"http://h:1\"\n"),
            "endpont",
        ),
        (
            format!("{MINIMAL}[[tables]]\nname = \"t\"\npartition_key = \"pk\"\nlww = [\"a\"]\n"),
            "lww",
        ),
        (
            format!("{MINIMAL}[durability]\nsync = \"group\"\n"),
            "durability",
        ),
    ] {
        let err = syntax_error(&text);
        assert!(err.contains(typo), "{typo}: {err}");
    }
}

#[test]
fn syntax_and_value_errors_keep_toml_line_and_column() {
    let err = syntax_error("region = \"us-east-1\"\ncluster = \n");
    assert!(err.contains("line 2"), "{err}");
    let err = syntax_error(&format!(
        "{MINIMAL}[[peers]]\nregion = \"b\"\nendpoint = \"ftp://h:1\"\n"
    ));
    assert!(
        err.contains("line 8") && err.contains("http or https"),
        "{err}"
    );
    let err = syntax_error(&MINIMAL.replace("\"demo\"", "\"\""));
    assert!(err.contains("cluster"), "empty cluster is refused: {err}");
    let err = syntax_error(&MINIMAL.replace("127.0.0.1:7101", "localhost"));
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_path() {
    let text = r#"
region = "us-east-1"
cluster = "demo"
data_dir = ""
listen = "127.0.0.1:7101"
metrics_listen = "0.0.0.0:7101"
[[peers]]
region = "eu-west-1"
endpoint = "http://127.0.0.1:7102"
[[peers]]
region = "us-east-1"
endpoint = "http://127.0.0.1:7103"
[[peers]]
region = "eu-west-1"
endpoint = "http://127.0.0.1:7102"
[[peers]]
region = "ap-south-1"
endpoint = "http://127.0.0.1:7101"
[[tables]]
name = "carts"
partition_key = "pk"
sort_key = "sk"
counters = ["qty", "sk"]
sets = ["tags", "qty"]
multi = ["note", "note"]
[[tables]]
name = "carts"
partition_key = "id"
sort_key = "id"
[storage]
sync = "group"
group_commit_interval = "0s"
max_clock_skew = "0s"
[shipping]
batch_max_entries = 0
max_in_flight_batches = 0
heartbeat_interval = "0s"
keepalive_interval = "0s"
keepalive_timeout = "0s"
reconnect_backoff_initial = "1s"
reconnect_backoff_max = "500ms"
batch_max_bytes = "8MiB"
max_message_bytes = "8MiB"
"#;
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    let expected = [
        ("data_dir", "empty"),
        ("metrics_listen", "collides with listen"),
        ("peers[1].region", "own region"),
        ("peers[2].region", "already peers[0]"),
        ("peers[2].endpoint", "already the endpoint of peers[0]"),
        ("peers[3].endpoint", "own listen address"),
        ("tables[0].counters[1]", "key attribute"),
        (
            "tables[0].sets[1]",
            "already listed at tables[0].counters[0]",
        ),
        ("tables[0].multi[1]", "already listed at tables[0].multi[0]"),
        ("tables[1].name", "already tables[0]"),
        ("tables[1].sort_key", "partition key"),
        ("storage.group_commit_interval", "is 0"),
        ("storage.max_clock_skew", "is 0"),
        ("shipping.batch_max_entries", "is 0"),
        ("shipping.max_in_flight_batches", "is 0"),
        ("shipping.heartbeat_interval", "is 0"),
        ("shipping.keepalive_interval", "is 0"),
        ("shipping.keepalive_timeout", "is 0"),
        (
            "shipping.reconnect_backoff_max",
            "below reconnect_backoff_initial",
        ),
        (
            "shipping.batch_max_bytes",
            "does not fit in max_message_bytes",
        ),
    ];
    for (key, what) in expected {
        assert!(
            found
                .iter()
                .any(|p| p.key == key && p.message.contains(what) && !p.fix.is_empty()),
            "missing {key}: {what}; found {found:#?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "unexpected extra: {keys:?}");

    // The error's text names every key, one line each.
    let text = NodeConfig::from_toml_str(text)
        .expect_err("invalid")
        .to_string();
    assert!(
        text.starts_with("20 problems in the configuration:"),
        "{text}"
    );
    for (key, _) in expected {
        assert!(text.contains(&format!("\n  - {key}: ")), "{key} in {text}");
    }
}

#[test]
fn oversized_messages_and_mismatched_batches_are_problems() {
    let found = problems(&format!(
        "{MINIMAL}[shipping]\nmax_message_bytes = \"5GiB\"\nbatch_max_bytes = \"0B\"\n"
    ));
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        ["shipping.batch_max_bytes", "shipping.max_message_bytes"],
        "{found:#?}"
    );
}

#[test]
fn sources_and_sinks_parse_by_kind_and_name_the_known_kinds() {
    let empty = format!("{MINIMAL}sources = []\nsinks = []\n");
    assert!(NodeConfig::from_toml_str(&empty).is_ok());

    let err = syntax_error(&format!("{MINIMAL}[[sources]]\nkind = \"kafka\"\n"));
    assert!(
        err.contains("unknown source kind \"kafka\" (known: dynamodb-streams, kinesis, postgres)"),
        "{err}"
    );
    let err = syntax_error(&format!(
        "{MINIMAL}[[sources]]\nkind = \"postgres\"\ntable = \"t\"\n"
    ));
    assert!(
        err.contains("kind \"postgres\": missing field `dsn`"),
        "{err}"
    );
    let err = syntax_error(&format!(
        "{MINIMAL}[[sources]]\nkind = \"kinesis\"\nstream = \"s\"\n"
    ));
    assert!(
        err.contains("kind \"kinesis\": missing field `table`"),
        "{err}"
    );
    let err = syntax_error(&format!("{MINIMAL}[[sinks]]\nkind = \"s3\"\n"));
    assert!(
        err.contains("unknown sink kind \"s3\" (known: dynamodb, postgres)"),
        "{err}"
    );
    let err = syntax_error(&format!("{MINIMAL}[[sinks]]\ntable = \"t\"\n"));
    assert!(err.contains("no `kind`"), "{err}");
}

const SIDECAR: &str = r#"
[[tables]]
name = "carts"
partition_key = "pk"
counters = ["qty"]
[[sources]]
kind = "dynamodb-streams"
table = "carts"
aws_region = "us-east-1"
endpoint_url = "http://127.0.0.1:5000"
[[sinks]]
kind = "dynamodb"
table = "carts"
aws_region = "us-east-1"
endpoint_url = "http://127.0.0.1:5000"
"#;

#[test]
fn the_dynamodb_sidecar_contract_parses_with_defaults() {
    let c = NodeConfig::from_toml_str(&format!("{MINIMAL}{SIDECAR}")).expect("valid");
    let [SourceConfig::DynamodbStreams(src)] = c.sources.as_slice() else {
        panic!("one dynamodb-streams source expected: {:?}", c.sources);
    };
    assert_eq!(src.table.as_str(), "carts");
    assert_eq!(src.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
    assert_eq!(
        src.initial_load,
        connectors::InitialLoad::Items,
        "loads items by default"
    );
    let [SinkConfig::Dynamodb(sink)] = c.sinks.as_slice() else {
        panic!("one dynamodb sink expected: {:?}", c.sinks);
    };
    assert_eq!(sink.marker_attribute.as_str(), "tributary_sink");
    assert_eq!(sink.aws_region, "us-east-1");
    let kinesis = format!(
        "{MINIMAL}[[tables]]\nname = \"carts\"\npartition_key = \"pk\"\n\
         [[sources]]\nkind = \"kinesis\"\nstream = \"carts-changes\"\ntable = \"carts\"\n\
         aws_region = \"eu-west-1\"\npoll_interval = \"100ms\"\n"
    );
    let c = NodeConfig::from_toml_str(&kinesis).expect("valid kinesis source");
    let [SourceConfig::Kinesis(k)] = c.sources.as_slice() else {
        panic!("one kinesis source expected: {:?}", c.sources);
    };
    assert_eq!(
        (k.stream.as_str(), k.poll_interval),
        ("carts-changes", Duration::from_millis(100))
    );
    assert!(
        c.explain().contains("Kinesis stream carts-changes"),
        "{}",
        c.explain()
    );
}

#[test]
fn sources_and_sinks_must_name_configured_tables_once() {
    let text = format!(
        "{MINIMAL}{SIDECAR}[[sources]]\nkind = \"kinesis\"\nstream = \"\"\ntable = \"carts\"\n\
         aws_region = \"us-east-1\"\n[[sinks]]\nkind = \"dynamodb\"\ntable = \"orders\"\n\
         aws_region = \"\"\nendpoint_url = \"127.0.0.1:5000\"\n"
    );
    let found = problems(&text);
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sources[1].table",
            "sources[1].stream",
            "sinks[1].table",
            "sinks[1].table",
            "sinks[1].aws_region",
            "sinks[1].endpoint_url"
        ],
        "{found:#?}"
    );
    assert!(
        found[0].to_string().contains("already has a source"),
        "{}",
        found[0]
    );
    assert!(
        found[2].to_string().contains("has no [[tables]] entry"),
        "{}",
        found[2]
    );
    assert!(
        found[3].to_string().contains("has a sink but no source"),
        "{}",
        found[3]
    );
}

#[test]
fn explain_names_tables_policies_and_effective_values() {
    let text = format!("{CONTRACT}sets = [\"tags\"]\n[shipping]\nbatch_max_entries = 64\n");
    let c = NodeConfig::from_toml_str(&text).expect("valid");
    let out = c.explain();
    for needle in [
        "region          us-east-1",
        "cluster         demo",
        "listen          127.0.0.1:7101",
        "metrics_listen  127.0.0.1:9101",
        "eu-west-1  http://127.0.0.1:7102",
        "  carts\n    key: partition pk, sort sk\n",
        "    qty: counter\n",
        "    tags: set\n",
        "every other attribute: lww",
        "sync                  = \"always\"  (default)",
        "max_clock_skew        = \"30s\"  (default)",
        "batch_max_entries         = 64\n",
        "batch_max_bytes           = \"1MiB\" (1048576 bytes)  (default)",
        "log_retention             = \"1h\"  (default)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let lone = NodeConfig::from_toml_str(MINIMAL).expect("valid").explain();
    assert!(lone.contains("peers: none"), "{lone}");
    assert!(lone.contains("metrics_listen  none"), "{lone}");
}

#[test]
fn the_examples_are_valid_twins() {
    let pairs = [
        (
            include_str!("../../examples/dynamodb-us-east-1.toml"),
            include_str!("../../examples/dynamodb-eu-west-1.toml"),
        ),
        (
            include_str!("../../examples/postgres-us-east-1.toml"),
            include_str!("../../examples/postgres-eu-west-1.toml"),
        ),
    ];
    for (east, west) in pairs {
        let east = NodeConfig::from_toml_str(east).expect("the us-east-1 example is valid");
        let west = NodeConfig::from_toml_str(west).expect("the eu-west-1 example is valid");
        assert_eq!(east.peers[0].region, west.region);
        assert_eq!(west.peers[0].region, east.region);
        assert_eq!(
            east.tables, west.tables,
            "both regions merge with the same schema"
        );
        assert_eq!((east.sources.len(), east.sinks.len()), (1, 1));
    }
}

#[test]
fn tls_and_the_peers_schemes_must_agree_and_relayed_regions_are_listed() {
    let with_peer = |scheme: &str, tls: bool| {
        let mut text = format!(
            "{MINIMAL}regions = [\"ap-south-1\"]\n[[peers]]\nregion = \"eu-west-1\"\nendpoint = \"{scheme}://127.0.0.1:7102\"\n"
        );
        if tls {
            text.push_str("[tls]\nca = \"ca.pem\"\ncert = \"n.pem\"\nkey = \"n.key\"\n");
        }
        NodeConfig::from_toml_str(&text)
    };
    let err = with_peer("https", false).expect_err("https without [tls]");
    assert!(err.to_string().contains("add [tls]"), "{err}");
    let err = with_peer("http", true).expect_err("http with [tls]");
    assert!(err.to_string().contains("https://HOST:PORT"), "{err}");
    let ok = with_peer("https", true).expect("https with [tls]");
    assert_eq!(
        ok.tls.as_ref().map(|t| t.handshake_timeout),
        Some(std::time::Duration::from_secs(10))
    );
    let region = |r: &str| RegionId::new(r).expect("region");
    for (origin, known) in [
        ("us-east-1", true),
        ("eu-west-1", true),
        ("ap-south-1", true),
        ("sa-east-1", false),
    ] {
        assert_eq!(ok.knows_region(&region(origin)), known, "{origin}");
    }
}
