//! moto's server (an AWS emulator: DynamoDB, DynamoDB Streams, Kinesis) as
//! a real process on loopback, for the DynamoDB sidecar's tests.
//!
//! The server is the one `scripts/setup.sh` installs, found through
//! `TRIBUTARY_MOTO_SERVER` (set by `scripts/env.sh`). Each [`Moto`] is its
//! own process on a free port with its own log file, so tests never share
//! state; it is killed when dropped. One server holds every region: the
//! region a client signs with picks its isolated set of tables and streams
//! (see `tests/tests/moto_server.rs` for what moto does and does not
//! emulate).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus,
};
use aws_sdk_kinesis::types::StreamStatus;

use crate::cluster::free_port;

/// How long the server may take to serve its first request.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long a table or stream may take to become ACTIVE.
const ACTIVE_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two polls of a state being waited on.
const POLL: Duration = Duration::from_millis(50);

/// A running moto server on `127.0.0.1`; killed on drop.
pub struct Moto {
    port: u16,
    log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `moto_server` on a free loopback port and waits until it
    /// answers a DynamoDB ListTables.
    pub fn start() -> anyhow::Result<Moto> {
        let binary = std::env::var_os("TRIBUTARY_MOTO_SERVER")
            .map(PathBuf::from)
            .context(
                "TRIBUTARY_MOTO_SERVER is not set: run `scripts/setup.sh` to install moto, \
                 then `source scripts/env.sh`",
            )?;
        if !binary.exists() {
            bail!(
                "moto server {} does not exist: run `scripts/setup.sh` to install it",
                binary.display()
            );
        }
        let dir = tempfile::tempdir().context("create moto's temp dir")?;
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).context("create moto's log file")?;
        let err = out.try_clone().context("duplicate moto's log file")?;
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let mut moto = Moto {
            port,
            log,
            child,
            _dir: dir,
        };
        moto.wait_serving()?;
        Ok(moto)
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The last 40 lines of its log (stdout and stderr), for failure
    /// messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// An SDK configuration for `region` that talks to this server with
    /// static test credentials.
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new(
                "test",
                "test",
                None,
                None,
                "tributary-tests",
            ))
            .load()
            .await
    }

    /// Polls a DynamoDB ListTables until it succeeds, the process exits or
    /// [`START_DEADLINE`] passes.
    fn wait_serving(&mut self) -> anyhow::Result<()> {
        let end = Instant::now() + START_DEADLINE;
        let mut last = String::from("(never probed)");
        loop {
            if let Some(status) = self.child.try_wait().context("poll moto's process")? {
                bail!(
                    "moto server exited with {status} before serving; last probe: {last}\n\
                     --- log ---\n{}",
                    self.log_tail()
                );
            }
            match list_tables_probe(self.port) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if Instant::now() >= end {
                bail!(
                    "moto server on port {} did not serve within {START_DEADLINE:?}; \
                     last probe: {last}\n--- log ---\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One DynamoDB ListTables as raw HTTP (the start-up wait is synchronous,
/// so callers need no runtime): `Ok` on a 200 that lists tables, else what
/// was seen. moto checks no signature, only the region in the credential
/// scope.
fn list_tables_probe(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| format!("set read timeout: {e}"))?;
    let body = "{}";
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-amz-json-1.0\r\n\
         X-Amz-Target: DynamoDB_20120810.ListTables\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    conn.read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") && response.contains("TableNames") {
        Ok(())
    } else {
        let head: String = response.chars().take(300).collect();
        Err(format!("unexpected answer: {head:?}"))
    }
}

/// Creates an on-demand table keyed by `pk` (and `sk`), both strings, with
/// a NEW_AND_OLD_IMAGES stream; waits until it is ACTIVE and returns the
/// stream's ARN.
pub async fn create_table(
    config: &SdkConfig,
    name: &str,
    pk: &str,
    sk: Option<&str>,
) -> anyhow::Result<String> {
    let client = aws_sdk_dynamodb::Client::new(config);
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .context("build stream specification")?,
        );
    for (attribute, key_type) in
        std::iter::once((pk, KeyType::Hash)).chain(sk.map(|sk| (sk, KeyType::Range)))
    {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .context("build attribute definition")?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attribute)
                    .key_type(key_type)
                    .build()
                    .context("build key schema element")?,
            );
    }
    request
        .send()
        .await
        .with_context(|| format!("create table {name}"))?;

    let end = Instant::now() + ACTIVE_DEADLINE;
    loop {
        let last = match client.describe_table().table_name(name).send().await {
            Ok(out) => {
                let table = out.table();
                let status = table.and_then(|t| t.table_status());
                if status == Some(&TableStatus::Active) {
                    return table
                        .and_then(|t| t.latest_stream_arn())
                        .map(str::to_owned)
                        .with_context(|| format!("table {name} is ACTIVE but has no stream ARN"));
                }
                format!("status {status:?}")
            }
            Err(e) => format!("{:?}", aws_sdk_dynamodb::error::DisplayErrorContext(&e)),
        };
        if Instant::now() >= end {
            bail!("table {name} not ACTIVE within {ACTIVE_DEADLINE:?}; last: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Creates a Kinesis stream of `shards` shards and waits until it is
/// ACTIVE.
pub async fn create_kinesis_stream(
    config: &SdkConfig,
    name: &str,
    shards: i32,
) -> anyhow::Result<()> {
    let client = aws_sdk_kinesis::Client::new(config);
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .with_context(|| format!("create Kinesis stream {name}"))?;

    let end = Instant::now() + ACTIVE_DEADLINE;
    loop {
        let last = match client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
        {
            Ok(out) => {
                let status = out
                    .stream_description_summary()
                    .map(|s| s.stream_status().clone());
                if status == Some(StreamStatus::Active) {
                    return Ok(());
                }
                format!("status {status:?}")
            }
            Err(e) => format!("{:?}", aws_sdk_kinesis::error::DisplayErrorContext(&e)),
        };
        if Instant::now() >= end {
            bail!("Kinesis stream {name} not ACTIVE within {ACTIVE_DEADLINE:?}; last: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An SDK timestamp as a `SystemTime`.
pub fn system_time(t: &aws_sdk_dynamodb::primitives::DateTime) -> std::time::SystemTime {
    std::time::SystemTime::try_from(*t).expect("timestamp in SystemTime's range")
}

/// Waits (yielding) until the local clock — moto's clock too, on this
/// machine — is past `t` by more than `by`: timestamps taken after that
/// are strictly later than `t` even at millisecond precision.
pub async fn clock_past(t: std::time::SystemTime, by: std::time::Duration) {
    while std::time::SystemTime::now() <= t + by {
        tokio::task::yield_now().await;
    }
}
