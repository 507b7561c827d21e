//! `replctl`: the operators' command-line client of a node's admin API.
//!
//! This file is the I/O shell: it connects to the node, makes the calls,
//! reads stdin and writes stdout and stderr. What to send, how to render
//! answers and which exit code to end with are decided in the library
//! (`tributary_tools`), where they are unit-tested.

use std::future::Future;
use std::io::{self, BufRead, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use rustls_pki_types::ServerName;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tributary_proto::v1::admin_client::AdminClient;
use tributary_proto::v1::{
    DeadLettersRequest, DigestRequest, DropDeadLetterRequest, GetRequest, LagRequest,
    OffsetsRequest, RetryDeadLetterRequest, SetPeerPausedRequest, StatusRequest, WriteRequest,
};
use tributary_tools::cli::{
    Cli, Command, DeadLettersArgs, DlqCommand, DlqIdArgs, GetArgs, JsonArg, LagArgs, NODE_ENV,
    NodeUrl, resolve_node,
};
use tributary_tools::dead_letters::{DropAnswer, Letter, RetryAnswer};
use tributary_tools::digest::Digest;
use tributary_tools::exit::{Exit, Failure, describe_status, error_chain, is_rejection};
use tributary_tools::lag::{self, LagReport, Thresholds};
use tributary_tools::offsets::Offsets;
use tributary_tools::render;
use tributary_tools::write::{Batch, Batcher, InputLine};
use tributary_tools::{item, write};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let node = match resolve_node(cli.node.clone(), std::env::var_os(NODE_ENV)) {
        Ok(node) => node,
        Err(message) => Cli::command()
            .error(ErrorKind::MissingRequiredArgument, message)
            .exit(),
    };
    let tls = match tls_files(&cli, &node) {
        Ok(tls) => tls,
        Err(message) => Cli::command()
            .error(ErrorKind::ArgumentConflict, message)
            .exit(),
    };
    let bearer = match Bearer::from_file(cli.token_file.as_deref()) {
        Ok(b) => b,
        Err(message) => Cli::command().error(ErrorKind::Io, message).exit(),
    };
    let exit = match run(cli.command, node, cli.timeout, tls, bearer).await {
        Ok(exit) => exit,
        Err(failure) => {
            report(&failure);
            failure.exit()
        }
    };
    exit.into()
}

/// The bearer token of `--token-file`, sent with every call.
#[derive(Clone)]
struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    fn from_file(path: Option<&std::path::Path>) -> Result<Self, String> {
        let Some(path) = path else {
            return Ok(Self(None));
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!(
                "--token-file {}: the file is empty",
                path.display()
            ));
        }
        format!("Bearer {token}")
            .parse()
            .map(|v| Self(Some(v)))
            .map_err(|_| {
                format!(
                    "--token-file {}: the token is not printable ASCII",
                    path.display()
                )
            })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// TLS to the node: with an https:// `--node`, the CA is required (and a
/// client certificate, when the node requires mutual TLS).
type Tls = Option<(
    std::sync::Arc<tributary_proto::tls::TlsFiles>,
    Option<ServerName<'static>>,
)>;

fn tls_files(cli: &Cli, node: &NodeUrl) -> Result<Tls, String> {
    if !node.is_tls() {
        if cli.ca.is_some() || cli.cert.is_some() {
            return Err(format!(
                "--ca/--cert are for TLS: write the node as https://… (given {node})"
            ));
        }
        return Ok(None);
    }
    let Some(ca) = cli.ca.clone() else {
        return Err(format!(
            "{node} is https: give --ca FILE (the cluster's CA), and --cert/--key if the node requires client certificates"
        ));
    };
    let files = tributary_proto::tls::TlsFiles::load(tributary_proto::tls::Paths {
        ca,
        cert: cli.cert.clone(),
        key: cli.tls_key.clone(),
    })
    .map_err(|e| e.to_string())?;
    let name = match &cli.server_name {
        Some(n) => {
            Some(ServerName::try_from(n.clone()).map_err(|e| format!("--server-name {n:?}: {e}"))?)
        }
        None => None,
    };
    Ok(Some((std::sync::Arc::new(files), name)))
}

async fn run(
    command: Command,
    url: NodeUrl,
    timeout: Duration,
    tls: Tls,
    bearer: Bearer,
) -> Result<Exit, Failure> {
    let node = Node::connect(url, timeout, tls, bearer).await?;
    match command {
        Command::Write => write_changes(&node).await,
        Command::Get(args) => get(&node, args).await,
        Command::Lag(args) => lag(&node, args).await,
        Command::Status(JsonArg { json }) => status(&node, json).await,
        Command::Offsets(JsonArg { json }) => offsets(&node, json).await,
        Command::Digest(JsonArg { json }) => digest(&node, json).await,
        Command::DeadLetters(args) | Command::Dlq(DlqCommand::List(args)) => {
            dead_letters(&node, args).await
        }
        Command::Dlq(DlqCommand::Show(args)) => dlq_show(&node, args).await,
        Command::Dlq(DlqCommand::Retry(args)) => dlq_retry(&node, args).await,
        Command::Dlq(DlqCommand::Drop(args)) => dlq_drop(&node, args).await,
        Command::Pause(peer) => set_paused(&node, peer.peer, true).await,
        Command::Resume(peer) => set_paused(&node, peer.peer, false).await,
    }
}

/// A connected admin client and the limits every call runs under.
struct Node {
    client: AdminClient<InterceptedService<Channel, Bearer>>,
    url: NodeUrl,
    timeout: Duration,
}

impl Node {
    /// Connects eagerly, so that "cannot reach" is reported as such.
    async fn connect(
        url: NodeUrl,
        timeout: Duration,
        tls: Tls,
        bearer: Bearer,
    ) -> Result<Self, Failure> {
        let unreachable = |reason: String| Failure::Unreachable {
            node: url.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(url.uri().to_owned())
            .map_err(|e| unreachable(error_chain(&e)))?
            .connect_timeout(timeout);
        let connecting = async {
            match tls {
                Some((files, name)) => {
                    endpoint
                        .connect_with_connector(tributary_proto::tls::connector(files, name))
                        .await
                }
                None => endpoint.connect().await,
            }
        };
        let channel = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => return Err(unreachable(error_chain(&e))),
            Err(_) => {
                return Err(unreachable(format!(
                    "no connection within {}",
                    human(timeout)
                )));
            }
        };
        Ok(Self {
            client: AdminClient::with_interceptor(channel, bearer),
            url,
            timeout,
        })
    }

    /// A fresh handle for one call (clones share the connection).
    fn client(&self) -> AdminClient<InterceptedService<Channel, Bearer>> {
        self.client.clone()
    }

    /// Runs one call under `--timeout`.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(Failure::from_status(&self.url, status)),
            Err(_) => Err(Failure::Unreachable {
                node: self.url.to_string(),
                reason: format!("no answer within {}", human(self.timeout)),
            }),
        }
    }
}

fn human(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

/// Writes `text` to stdout, adding a line ending if it has none, and
/// flushes (output is streamed: `write` and `lag --watch`).
fn emit(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    let ending: &[u8] = if text.ends_with('\n') { b"" } else { b"\n" };
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.write_all(ending))
        .and_then(|()| stdout.flush())
        .map_err(Failure::Io)
}

fn report(failure: &Failure) {
    if let Some(message) = failure.message() {
        eprintln!("replctl: {message}");
    }
}

fn unreadable(what: &str, error: serde_json::Error) -> Failure {
    Failure::Protocol(format!(
        "the node returned {what} that replctl cannot read: {error}"
    ))
}

async fn write_changes(node: &Node) -> Result<Exit, Failure> {
    let mut lines = read_stdin_lines();
    let mut batcher = Batcher::default();
    let mut exit = Exit::Success;
    let mut eof = false;
    while !eof {
        // Wait for one line, then take what is already there: batches fill
        // up under load, and a slow producer still sees each line answered.
        let mut available = Vec::new();
        match lines.recv().await {
            Some(line) => available.push(line),
            None => eof = true,
        }
        loop {
            match lines.try_recv() {
                Ok(line) => available.push(line),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    eof = true;
                    break;
                }
            }
        }
        for line in available {
            let Some(line) = InputLine::from_raw(line.map_err(Failure::Io)?) else {
                continue;
            };
            if let Some(batch) = batcher.push(line) {
                exit = exit.max(send_batch(node, &batch).await?);
            }
        }
        if let Some(batch) = batcher.take() {
            exit = exit.max(send_batch(node, &batch).await?);
        }
    }
    Ok(exit)
}

/// Reads stdin on its own thread (stdin reads block), line by line, raw
/// bytes with their line ending; the channel closes at end of input.
fn read_stdin_lines() -> mpsc::Receiver<io::Result<Vec<u8>>> {
    let (sender, receiver) = mpsc::channel(4 * write::MAX_BATCH_LINES);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        loop {
            let mut line = Vec::new();
            let read = stdin.read_until(b'\n', &mut line);
            let done = !matches!(read, Ok(n) if n > 0);
            let item = match read {
                Ok(0) => break,
                Ok(_) => Ok(line),
                Err(e) => Err(e),
            };
            if sender.blocking_send(item).is_err() || done {
                break;
            }
        }
    });
    receiver
}

/// Sends one batch and prints one line per line of it. A request the node
/// refuses as a whole rejects each of its lines; any other failure stops.
async fn send_batch(node: &Node, batch: &Batch) -> Result<Exit, Failure> {
    let changes = batch.changes();
    let outcomes = if changes.is_empty() {
        batch.outcomes(Vec::new())
    } else {
        let request = WriteRequest {
            changes_json: changes,
        };
        match node.call(node.client().write(request)).await {
            Ok(response) => batch.outcomes(response.results),
            Err(Failure::Status(status)) if is_rejection(status.code()) => {
                Ok(batch.rejected(&describe_status(&status)))
            }
            Err(failure) => return Err(failure),
        }
    }
    .map_err(Failure::Protocol)?;
    let mut exit = Exit::Success;
    for outcome in &outcomes {
        if outcome.is_rejected() {
            exit = Exit::Failure;
        }
        emit(&outcome.json_line())?;
    }
    Ok(exit)
}

async fn get(node: &Node, args: GetArgs) -> Result<Exit, Failure> {
    let request = GetRequest {
        table: args.table.clone(),
        key_json: args.key.as_str().to_owned(),
        provenance: args.provenance,
    };
    let response = node.call(node.client().get(request)).await?;
    let text = if args.json {
        render::one_line(&response.item_json)
    } else {
        item::render(&response.item_json, &args.table, args.key.as_str())
    }
    .map_err(|e| unreadable("an item", e))?;
    emit(&text)?;
    Ok(Exit::Success)
}

async fn lag(node: &Node, args: LagArgs) -> Result<Exit, Failure> {
    let thresholds = Thresholds {
        max_records: args.max_records,
        max_seconds: args.max_seconds,
    };
    if !args.watch {
        return lag_round(node, args.json, &thresholds).await;
    }
    // Until Ctrl-C, which exits 0 (see `replctl lag --help`). A failed
    // round is reported and the next round tried: a watch outlives a node
    // restart. Only a closed stdout ends it.
    let mut ticks = tokio::time::interval(args.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut first = true;
    loop {
        let round = async {
            ticks.tick().await;
            // Human rounds are separated by a blank line; --json rounds
            // stay a clean JSON-lines stream.
            if !first && !args.json {
                emit("")?;
            }
            lag_round(node, args.json, &thresholds).await
        };
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.map_err(Failure::Io)?;
                return Ok(Exit::Success);
            }
            result = round => match result {
                Ok(_) => {}
                Err(failure @ Failure::Io(_)) => return Err(failure),
                Err(failure) => report(&failure),
            },
        }
        first = false;
    }
}

/// One lag call: print, report thresholds on stderr, return the exit code.
async fn lag_round(node: &Node, json: bool, thresholds: &Thresholds) -> Result<Exit, Failure> {
    let response = node.call(node.client().lag(LagRequest {})).await?;
    let text = &response.lag_json;
    // The document is read only when needed: --json alone prints whatever
    // the node sent, even if it no longer matches what replctl knows.
    let report = if json && !thresholds.any() {
        None
    } else {
        Some(LagReport::parse(text).map_err(|e| unreadable("a lag report", e))?)
    };
    if json {
        emit(&render::one_line(text).map_err(|e| unreadable("a lag report", e))?)?;
    } else if let Some(report) = &report {
        emit(&report.render())?;
    }
    let breaches = report
        .as_ref()
        .map(|report| thresholds.check(report))
        .unwrap_or_default();
    for breach in &breaches {
        eprintln!("replctl: {breach}");
    }
    Ok(lag::exit_for(&breaches))
}

async fn status(node: &Node, json: bool) -> Result<Exit, Failure> {
    let response = node.call(node.client().status(StatusRequest {})).await?;
    let text = if json {
        render::one_line(&response.status_json)
    } else {
        serde_json::from_str(&response.status_json).map(|doc| render::tree(&doc))
    }
    .map_err(|e| unreadable("a status", e))?;
    emit(&text)?;
    Ok(Exit::Success)
}

async fn offsets(node: &Node, json: bool) -> Result<Exit, Failure> {
    let offsets = Offsets::from(node.call(node.client().offsets(OffsetsRequest {})).await?);
    emit(&if json {
        offsets.json_line()
    } else {
        offsets.render()
    })?;
    Ok(Exit::Success)
}

async fn digest(node: &Node, json: bool) -> Result<Exit, Failure> {
    let digest = Digest::from(node.call(node.client().digest(DigestRequest {})).await?);
    emit(&if json {
        digest.json_line()
    } else {
        digest.render()
    })?;
    Ok(Exit::Success)
}

async fn dead_letters(node: &Node, args: DeadLettersArgs) -> Result<Exit, Failure> {
    let request = DeadLettersRequest {
        after: args.after,
        limit: args.limit,
    };
    let response = node.call(node.client().dead_letters(request)).await?;
    if response.letters.is_empty() && !args.json {
        emit("no dead letters")?;
    }
    for letter in response.letters.into_iter().map(Letter::from) {
        emit(&if args.json {
            letter.json_line()
        } else {
            letter.render()
        })?;
    }
    Ok(Exit::Success)
}

async fn dlq_show(node: &Node, args: DlqIdArgs) -> Result<Exit, Failure> {
    let request = DeadLettersRequest {
        after: args.id.saturating_sub(1),
        limit: 1,
    };
    let response = node.call(node.client().dead_letters(request)).await?;
    let Some(letter) = response
        .letters
        .into_iter()
        .find(|l| l.id == args.id)
        .map(Letter::from)
    else {
        eprintln!("replctl: no dead letter with id {}", args.id);
        return Ok(Exit::Failure);
    };
    emit(&if args.json {
        letter.json_line()
    } else {
        letter.render_whole()
    })?;
    Ok(Exit::Success)
}

async fn dlq_retry(node: &Node, args: DlqIdArgs) -> Result<Exit, Failure> {
    let request = RetryDeadLetterRequest { id: args.id };
    let response = node.call(node.client().retry_dead_letter(request)).await?;
    emit(&if args.json {
        render::to_line(&RetryAnswer {
            id: args.id,
            applied: response.applied,
            outcome: response.outcome.clone(),
        })
    } else {
        format!("#{}: {}", args.id, response.outcome)
    })?;
    Ok(if response.applied {
        Exit::Success
    } else {
        Exit::Failure
    })
}

async fn dlq_drop(node: &Node, args: DlqIdArgs) -> Result<Exit, Failure> {
    let request = DropDeadLetterRequest { id: args.id };
    let response = node.call(node.client().drop_dead_letter(request)).await?;
    emit(&if args.json {
        render::to_line(&DropAnswer {
            id: args.id,
            dropped: response.dropped,
        })
    } else if response.dropped {
        format!("#{}: dropped", args.id)
    } else {
        format!("#{}: no such dead letter", args.id)
    })?;
    Ok(if response.dropped {
        Exit::Success
    } else {
        Exit::Failure
    })
}

async fn set_paused(node: &Node, peer: String, paused: bool) -> Result<Exit, Failure> {
    let request = SetPeerPausedRequest {
        peer: peer.clone(),
        paused,
    };
    node.call(node.client().set_peer_paused(request)).await?;
    let verb = if paused { "paused" } else { "resumed" };
    emit(&format!("{verb} link to {peer}"))?;
    Ok(Exit::Success)
}
