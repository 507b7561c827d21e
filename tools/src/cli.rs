//! The argument model of `replctl`: global flags, one subcommand per admin
//! call, and the validation of every value that can be checked without
//! asking the node.
//!
//! Invariants: a parsed [`Cli`] holds a positive `--timeout`, a positive
//! `--interval`, a finite non-negative `--max-seconds`, a `KEY_JSON` that is
//! a JSON object and a `--node` that is an `http://` URL with a host. A value
//! that fails here is a usage error: clap prints it and exits with 2.
//!
//! The command names, flags and defaults are a contract with operators'
//! scripts: change them only together with the runbooks.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tonic::transport::Uri;

/// Environment variable read when `--node` is not given.
pub const NODE_ENV: &str = "REPLCTL_NODE";

/// Exit codes, as shown at the end of `replctl --help`.
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  ok
  1  a threshold was exceeded, or the node rejected a write or a request
  2  usage error, or the node could not be reached or answered with an error";

/// The operators' client of a Tributary node's admin API.
#[derive(Debug, Parser)]
#[command(name = "replctl", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Admin API address of the node, e.g. http://127.0.0.1:7100 [env: REPLCTL_NODE]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        value_parser = NodeUrl::parse,
        help_heading = "Global options"
    )]
    pub node: Option<NodeUrl>,

    /// Limit for connecting and for each call (e.g. 500ms, 5s, 1m)
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        default_value = "5s",
        value_parser = parse_positive_duration,
        help_heading = "Global options"
    )]
    pub timeout: Duration,

    /// CA certificate (PEM) the node's certificate must chain to; needed
    /// with an https:// --node
    #[arg(long, global = true, value_name = "FILE", help_heading = "TLS options")]
    pub ca: Option<std::path::PathBuf>,

    /// Client certificate chain (PEM) for a node that requires mutual TLS
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "tls_key",
        help_heading = "TLS options"
    )]
    pub cert: Option<std::path::PathBuf>,

    /// Private key (PEM) of --cert
    #[arg(
        long = "key",
        global = true,
        value_name = "FILE",
        requires = "cert",
        help_heading = "TLS options"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    /// File holding a bearer token for the node's admin API ([admin]
    /// token_file or read_token_file on the node)
    #[arg(long, global = true, value_name = "FILE", help_heading = "TLS options")]
    pub token_file: Option<std::path::PathBuf>,

    /// Name the node's certificate must carry (default: the --node host;
    /// a node's certificate names its region id)
    #[arg(long, global = true, value_name = "NAME", help_heading = "TLS options")]
    pub server_name: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// One subcommand per admin call.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write changes read as JSON lines on stdin; print one result line per change.
    ///
    /// Each non-blank line is one change, sent as is: the node validates it.
    /// One JSON line per change is printed, in order: {"origin":..,"seq":..}
    /// when written, {"error":".."} when rejected; the other changes still
    /// run. Exits 1 when any change was rejected.
    Write,

    /// Print the merged item stored under a key.
    Get(GetArgs),

    /// Show replication lag per peer and origin; exit 1 when over a threshold.
    ///
    /// With --watch, print a new report every --interval until Ctrl-C;
    /// thresholds are reported on stderr in every round, and Ctrl-C exits 0.
    Lag(LagArgs),

    /// Show the node's status.
    Status(JsonArg),

    /// Show the applied vector, the log start, what each peer acknowledged and source checkpoints.
    Offsets(JsonArg),

    /// Show the digest of every item: equal on converged regions.
    Digest(JsonArg),

    /// List dead letters: changes a source could not apply (same as `dlq list`).
    DeadLetters(DeadLettersArgs),

    /// Dead letters: list, show, retry or drop them.
    #[command(subcommand)]
    Dlq(DlqCommand),

    /// Pause shipping to a peer.
    Pause(PeerArg),

    /// Resume shipping to a peer.
    Resume(PeerArg),
}

/// `replctl dlq ...`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List(DeadLettersArgs),
    /// Show one dead letter, with its raw record.
    Show(DlqIdArgs),
    /// Apply a dead letter again (after fixing its cause, e.g. the table's
    /// schema); removes it when it applies, exits 1 when it still fails.
    Retry(DlqIdArgs),
    /// Remove a dead letter without applying it.
    Drop(DlqIdArgs),
}

/// A dead letter's id, and `--json`.
#[derive(Debug, Args)]
pub struct DlqIdArgs {
    /// The letter's id (as `dlq list` shows it)
    pub id: u64,

    /// Print the answer as one JSON line
    #[arg(long)]
    pub json: bool,
}

/// `--json` alone, for the read commands without other flags.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print the node's answer as one JSON document
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replctl get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Table name
    pub table: String,

    /// The key attributes as a JSON object, e.g. '{"pk":"u1","sk":"c1"}'
    #[arg(value_parser = KeyJson::parse)]
    pub key: KeyJson,

    /// Print the item document as one JSON line
    #[arg(long)]
    pub json: bool,

    /// Include, per attribute, the region and clock of the write that won
    #[arg(long)]
    pub provenance: bool,
}

/// Arguments of `replctl lag`.
#[derive(Debug, Args)]
pub struct LagArgs {
    /// Print the lag document as one JSON line (one per round with --watch)
    #[arg(long)]
    pub json: bool,

    /// Exit 1 when a peer has more than N records pending
    #[arg(long, value_name = "N")]
    pub max_records: Option<u64>,

    /// Exit 1 when a peer's oldest pending record is older than S seconds
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    pub max_seconds: Option<f64>,

    /// Repeat every --interval until Ctrl-C
    #[arg(long)]
    pub watch: bool,

    /// Time between rounds with --watch (e.g. 500ms, 1s, 1m)
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "1s",
        value_parser = parse_positive_duration
    )]
    pub interval: Duration,
}

/// Arguments of `replctl dead-letters`.
#[derive(Debug, Args)]
pub struct DeadLettersArgs {
    /// Print one JSON line per letter
    #[arg(long)]
    pub json: bool,

    /// List letters with an id greater than ID (for paging)
    #[arg(long, value_name = "ID", default_value_t = 0)]
    pub after: u64,

    /// List at most N letters
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub limit: u32,
}

/// The peer argument of `replctl pause` and `replctl resume`.
#[derive(Debug, Args)]
pub struct PeerArg {
    /// Peer region name, as in the node's configuration
    pub peer: String,
}

/// The node's admin API address: as the operator gave it (for messages) and
/// as dialled (`http://` added when no scheme was given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl {
    given: String,
    uri: String,
}

impl NodeUrl {
    /// Validates an address: `http://host:port` or `https://host:port`
    /// (TLS, with `--ca`), or `host:port` meaning `http://host:port`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let given = text.trim();
        if given.is_empty() {
            return Err("the node URL is empty".to_owned());
        }
        let uri = if given.contains("://") {
            given.to_owned()
        } else {
            format!("http://{given}")
        };
        let parsed: Uri = uri
            .parse()
            .map_err(|e| format!("{given:?} is not a URL: {e}"))?;
        match parsed.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("{given:?}: the scheme must be http or https")),
        }
        if parsed.host().is_none_or(str::is_empty) {
            return Err(format!("{given:?} has no host"));
        }
        Ok(Self {
            given: given.to_owned(),
            uri,
        })
    }

    /// The address to dial.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Whether it is an `https://` address.
    pub fn is_tls(&self) -> bool {
        self.uri.starts_with("https://")
    }
}

impl fmt::Display for NodeUrl {
    /// The address as the operator gave it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.given)
    }
}

/// Picks the node: `--node` wins, else a non-empty `REPLCTL_NODE`. The error
/// is a usage error message.
pub fn resolve_node(flag: Option<NodeUrl>, env: Option<OsString>) -> Result<NodeUrl, String> {
    if let Some(node) = flag {
        return Ok(node);
    }
    match env {
        Some(value) if !value.is_empty() => {
            let text = value
                .into_string()
                .map_err(|_| format!("{NODE_ENV} is not valid UTF-8"))?;
            NodeUrl::parse(&text).map_err(|e| format!("{NODE_ENV}: {e}"))
        }
        _ => Err(format!("no node given: pass --node URL or set {NODE_ENV}")),
    }
}

/// A `get` key: text that parses as a JSON object, kept as given (the node
/// validates the key attributes against the table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyJson(String);

impl KeyJson {
    /// Accepts a JSON object and nothing else.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("the key is not JSON ({e}); expected e.g. '{{\"pk\":\"u1\"}}'"))?;
        if !value.is_object() {
            return Err("the key must be a JSON object, e.g. '{\"pk\":\"u1\"}'".to_owned());
        }
        Ok(Self(text.to_owned()))
    }

    /// The key as given on the command line.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A humantime duration greater than zero.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration ({e}); expected e.g. 500ms, 5s, 1m"))?;
    if duration.is_zero() {
        return Err("the duration must be greater than zero".to_owned());
    }
    Ok(duration)
}

/// A finite, non-negative number of seconds, e.g. `30` or `0.5`.
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds, e.g. 30 or 0.5"))?;
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!(
            "{text:?}: the number of seconds must be finite and not negative"
        ));
    }
    Ok(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("replctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_clap_model_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() -> Result<(), clap::Error> {
        let before = parse(&["--node", "http://a:1", "--timeout", "250ms", "status"])?;
        let after = parse(&[
            "status",
            "--json",
            "--node",
            "http://a:1",
            "--timeout",
            "250ms",
        ])?;
        for cli in [before, after] {
            assert_eq!(
                cli.node.map(|n| n.uri().to_owned()).as_deref(),
                Some("http://a:1")
            );
            assert_eq!(cli.timeout, Duration::from_millis(250));
        }
        Ok(())
    }

    #[test]
    fn defaults_are_those_of_the_contract() -> Result<(), clap::Error> {
        let cli = parse(&["lag"])?;
        assert_eq!(cli.timeout, Duration::from_secs(5));
        assert!(cli.node.is_none());
        let Command::Lag(lag) = cli.command else {
            panic!("expected lag, got {:?}", cli.command);
        };
        assert_eq!(lag.interval, Duration::from_secs(1));
        assert!(!lag.watch && !lag.json);
        assert_eq!((lag.max_records, lag.max_seconds), (None, None));

        let Command::DeadLetters(dl) = parse(&["dead-letters"])?.command else {
            panic!("expected dead-letters");
        };
        assert_eq!((dl.after, dl.limit, dl.json), (0, 100, false));
        Ok(())
    }

    #[test]
    fn lag_thresholds_parse() -> Result<(), clap::Error> {
        let cli = parse(&[
            "lag",
            "--max-records",
            "1000",
            "--max-seconds",
            "2.5",
            "--json",
        ])?;
        let Command::Lag(lag) = cli.command else {
            panic!("expected lag");
        };
        assert_eq!(lag.max_records, Some(1000));
        assert_eq!(lag.max_seconds, Some(2.5));
        assert!(lag.json);
        Ok(())
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["lag", "--max-seconds", "-1"][..],
            &["lag", "--max-seconds", "soon"],
            &["lag", "--interval", "0s"],
            &["--timeout", "five", "status"],
            &["get", "carts", "not json"],
            &["get", "carts", "[1,2]"],
            &["dead-letters", "--limit", "0"],
            &["--node", "gopher://a:1", "status"],
            &["--cert", "c.pem", "status"],
            &["--node", "ftp://a", "status"],
            &[],
            &["pause"],
        ] {
            let err = parse(args).err();
            assert!(err.is_some(), "{args:?} parsed");
            if let Some(err) = err {
                assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
            }
        }
    }

    #[test]
    fn help_is_not_an_error_exit() {
        let err = parse(&["lag", "--help"]).err();
        assert_eq!(err.map(|e| e.kind()), Some(ErrorKind::DisplayHelp));
    }

    #[test]
    fn get_keeps_the_key_as_given() -> Result<(), clap::Error> {
        let key = r#"{"pk":"u1", "sk":"c1"}"#;
        let Command::Get(get) = parse(&["get", "carts", key, "--provenance"])?.command else {
            panic!("expected get");
        };
        assert_eq!(get.table, "carts");
        assert_eq!(get.key.as_str(), key);
        assert!(get.provenance && !get.json);
        Ok(())
    }

    #[test]
    fn node_without_scheme_means_http() -> Result<(), String> {
        let node = NodeUrl::parse("127.0.0.1:7100")?;
        assert_eq!(node.uri(), "http://127.0.0.1:7100");
        assert_eq!(node.to_string(), "127.0.0.1:7100");
        Ok(())
    }

    #[test]
    fn flag_wins_over_env_and_env_is_used_alone() -> Result<(), String> {
        let flag = NodeUrl::parse("http://flag:1")?;
        let env = Some(OsString::from("http://env:2"));
        assert_eq!(resolve_node(Some(flag.clone()), env.clone())?, flag);
        assert_eq!(resolve_node(None, env)?.uri(), "http://env:2");
        Ok(())
    }

    #[test]
    fn no_node_at_all_is_an_error() {
        for env in [None, Some(OsString::new())] {
            let err = resolve_node(None, env).err();
            assert!(err.is_some_and(|e| e.contains("--node") && e.contains(NODE_ENV)));
        }
        let bad = resolve_node(None, Some(OsString::from("gopher://x:1"))).err();
        assert!(bad.is_some_and(|e| e.starts_with(NODE_ENV)));
    }
}
