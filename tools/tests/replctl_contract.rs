//! The `replctl` binary against a scripted admin server: the command forms,
//! stdout lines and exit codes that operators' scripts rely on.
//!
//! The server is a stub answering from fixed data, so these tests pin
//! replctl's side of the contract only; the node's side is tested in the
//! replicator.

use std::error::Error;
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tributary_proto::v1::admin_server::{Admin, AdminServer};
use tributary_proto::v1::write_result::Result as WireResult;
use tributary_proto::v1::{
    DeadLetter, DeadLettersRequest, DeadLettersResponse, DigestRequest, DigestResponse,
    DropDeadLetterRequest, DropDeadLetterResponse, GetRequest, GetResponse, LagRequest,
    LagResponse, OffsetsRequest, OffsetsResponse, RetryDeadLetterRequest, RetryDeadLetterResponse,
    SetPeerPausedRequest, SetPeerPausedResponse, StatusRequest, StatusResponse, WriteRequest,
    WriteResponse, WriteResult, Written,
};

type TestResult = Result<(), Box<dyn Error>>;

const LAG: &str = r#"{"region":"us-east-1","peers":[{"peer":"eu-west-1","connected":true,"paused":false,"pending_records":1500,"oldest_pending_seconds":2.0,"last_ack_seconds":null,"throughput_records_per_second":12.5,"origins":[{"origin":"us-east-1","pending_records":1500,"oldest_pending_seconds":2.0}]}]}"#;

/// Answers from fixed data; records the write batches it received.
#[derive(Default, Clone)]
struct Stub {
    batches: Arc<Mutex<Vec<Vec<String>>>>,
}

#[tonic::async_trait]
impl Admin for Stub {
    async fn write(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<WriteResponse>, Status> {
        let changes = request.into_inner().changes_json;
        let results = changes
            .iter()
            .enumerate()
            .map(|(i, change)| WriteResult {
                result: Some(if change.contains("bad") {
                    WireResult::Error(format!("cannot parse change: {change}"))
                } else {
                    WireResult::Written(Written {
                        origin: "us-east-1".to_owned(),
                        seq: 17 + i as u64,
                    })
                }),
            })
            .collect();
        if let Ok(mut batches) = self.batches.lock() {
            batches.push(changes);
        }
        Ok(Response::new(WriteResponse { results }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let request = request.into_inner();
        if request.table != "carts" {
            return Err(Status::invalid_argument(format!(
                "unknown table {:?}",
                request.table
            )));
        }
        Ok(Response::new(GetResponse {
            item_json: format!(
                r#"{{"table":"carts","key":{},"exists":true,"attributes":{{"qty":5,"name":"x"}}}}"#,
                request.key_json
            ),
        }))
    }

    async fn lag(&self, _: Request<LagRequest>) -> Result<Response<LagResponse>, Status> {
        Ok(Response::new(LagResponse {
            lag_json: LAG.to_owned(),
        }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        // Slow on purpose: the --timeout test waits for replctl to give up.
        tokio::time::sleep(Duration::from_secs(30)).await;
        Err(Status::internal("unreachable in tests"))
    }

    async fn offsets(
        &self,
        _: Request<OffsetsRequest>,
    ) -> Result<Response<OffsetsResponse>, Status> {
        Err(Status::unavailable("shutting down"))
    }

    async fn digest(&self, _: Request<DigestRequest>) -> Result<Response<DigestResponse>, Status> {
        Ok(Response::new(DigestResponse {
            items: 42,
            digest: "9f86d081".to_owned(),
        }))
    }

    async fn dead_letters(
        &self,
        request: Request<DeadLettersRequest>,
    ) -> Result<Response<DeadLettersResponse>, Status> {
        let request = request.into_inner();
        let letters = (request.after + 1..=3)
            .take(request.limit as usize)
            .map(|id| DeadLetter {
                id,
                source: "kinesis-carts".to_owned(),
                offset: format!("shard-0:{id}"),
                reason: "unknown table".to_owned(),
                raw: b"{}".to_vec(),
                attempts: 3,
                at_millis: 1000,
            })
            .collect();
        Ok(Response::new(DeadLettersResponse { letters }))
    }

    async fn retry_dead_letter(
        &self,
        request: Request<RetryDeadLetterRequest>,
    ) -> Result<Response<RetryDeadLetterResponse>, Status> {
        match request.into_inner().id {
            2 => Ok(Response::new(RetryDeadLetterResponse {
                applied: true,
                outcome: "applied; letter removed".to_owned(),
            })),
            3 => Ok(Response::new(RetryDeadLetterResponse {
                applied: false,
                outcome: "still fails: unknown table".to_owned(),
            })),
            id => Err(Status::not_found(format!("no dead letter with id {id}"))),
        }
    }

    async fn drop_dead_letter(
        &self,
        request: Request<DropDeadLetterRequest>,
    ) -> Result<Response<DropDeadLetterResponse>, Status> {
        Ok(Response::new(DropDeadLetterResponse {
            dropped: request.into_inner().id <= 3,
        }))
    }

    async fn set_peer_paused(
        &self,
        request: Request<SetPeerPausedRequest>,
    ) -> Result<Response<SetPeerPausedResponse>, Status> {
        let peer = request.into_inner().peer;
        if peer == "eu-west-1" {
            Ok(Response::new(SetPeerPausedResponse {}))
        } else {
            Err(Status::not_found(format!("unknown peer {peer:?}")))
        }
    }
}

/// Starts the stub on a free port; it runs until the test's runtime ends.
fn start(stub: Stub) -> Result<String, Box<dyn Error>> {
    let incoming = TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = incoming.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(AdminServer::new(stub))
            .serve_with_incoming(incoming),
    );
    Ok(format!("http://{addr}"))
}

fn replctl(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_replctl"));
    command
        .args(args)
        .env_remove("REPLCTL_NODE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(node: &str, args: &[&str]) -> Result<Output, Box<dyn Error>> {
    let mut all = vec!["--node", node];
    all.extend_from_slice(args);
    Ok(replctl(&all).output().await?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn write_prints_one_result_per_change_and_exits_1_on_a_rejection() -> TestResult {
    let stub = Stub::default();
    let node = start(stub.clone())?;
    let mut child = replctl(&["--node", &node, "write"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let input =
        "{\"table\":\"carts\", \"key\":{\"pk\":\"u1\"}}\n\n   \nbad line\n{\"table\":\"carts\"}";
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    let output = child.wait_with_output().await?;

    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with(r#"{"origin":"us-east-1","seq":"#),
        "{lines:?}"
    );
    assert_eq!(lines[1], r#"{"error":"cannot parse change: bad line"}"#);
    assert!(
        lines[2].starts_with(r#"{"origin":"us-east-1","seq":"#),
        "{lines:?}"
    );

    let sent: Vec<String> = stub.batches.lock().map_err(|e| e.to_string())?.concat();
    assert_eq!(
        sent,
        [
            "{\"table\":\"carts\", \"key\":{\"pk\":\"u1\"}}",
            "bad line",
            "{\"table\":\"carts\"}"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn write_of_accepted_changes_exits_0() -> TestResult {
    let node = start(Stub::default())?;
    let mut child = replctl(&["--node", &node, "write"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin.write_all(b"{\"a\":1}\n").await?;
    drop(stdin);
    let output = child.wait_with_output().await?;
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout(&output), "{\"origin\":\"us-east-1\",\"seq\":17}\n");
    Ok(())
}

#[tokio::test]
async fn get_prints_the_document_or_a_readable_form() -> TestResult {
    let node = start(Stub::default())?;
    let json = run(&node, &["get", "carts", r#"{"pk":"u1"}"#, "--json"]).await?;
    assert_eq!(json.status.code(), Some(0));
    assert_eq!(
        stdout(&json),
        "{\"table\":\"carts\",\"key\":{\"pk\":\"u1\"},\"exists\":true,\"attributes\":{\"qty\":5,\"name\":\"x\"}}\n"
    );
    let human = run(&node, &["get", "carts", r#"{"pk":"u1"}"#]).await?;
    assert_eq!(
        stdout(&human),
        "carts {\"pk\":\"u1\"}\nexists: true\n  name = \"x\"\n  qty = 5\n"
    );
    let rejected = run(&node, &["get", "nope", r#"{"pk":"u1"}"#]).await?;
    assert_eq!(rejected.status.code(), Some(1));
    assert_eq!(stderr(&rejected), "replctl: unknown table \"nope\"\n");
    Ok(())
}

#[tokio::test]
async fn a_key_that_is_not_a_json_object_is_a_usage_error() -> TestResult {
    let output = run("http://127.0.0.1:1", &["get", "carts", "u1"]).await?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("the key is not JSON"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[tokio::test]
async fn lag_over_a_threshold_exits_1_and_names_the_peer() -> TestResult {
    let node = start(Stub::default())?;
    let over = run(&node, &["lag", "--max-records", "1000"]).await?;
    assert_eq!(over.status.code(), Some(1));
    assert!(
        stdout(&over).starts_with("region us-east-1\nPEER"),
        "{}",
        stdout(&over)
    );
    assert!(stderr(&over).contains("peer eu-west-1: 1500 records pending"));

    let within = run(
        &node,
        &[
            "lag",
            "--json",
            "--max-records",
            "2000",
            "--max-seconds",
            "5",
        ],
    )
    .await?;
    assert_eq!(within.status.code(), Some(0), "{}", stderr(&within));
    assert_eq!(stdout(&within), format!("{LAG}\n"));
    Ok(())
}

#[tokio::test]
async fn lag_watch_repeats_until_ctrl_c_then_exits_0() -> TestResult {
    let node = start(Stub::default())?;
    let mut child = replctl(&[
        "--node",
        &node,
        "lag",
        "--watch",
        "--interval",
        "50ms",
        "--json",
    ])
    .stdout(Stdio::piped())
    .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    for _ in 0..2 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await??;
        assert_eq!(line.as_deref(), Some(LAG));
    }
    let pid = child.id().ok_or("no pid")?;
    let kill = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .await?;
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await??;
    assert_eq!(status.code(), Some(0));
    Ok(())
}

#[tokio::test]
async fn pause_and_resume_say_what_they_did_and_an_unknown_peer_exits_1() -> TestResult {
    let node = start(Stub::default())?;
    let paused = run(&node, &["pause", "eu-west-1"]).await?;
    assert_eq!(
        (paused.status.code(), stdout(&paused)),
        (Some(0), "paused link to eu-west-1\n".to_owned())
    );
    let resumed = run(&node, &["resume", "eu-west-1"]).await?;
    assert_eq!(stdout(&resumed), "resumed link to eu-west-1\n");
    let unknown = run(&node, &["pause", "mars"]).await?;
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(stderr(&unknown), "replctl: unknown peer \"mars\"\n");
    Ok(())
}

#[tokio::test]
async fn digest_and_dead_letters_json_shapes() -> TestResult {
    let node = start(Stub::default())?;
    let digest = run(&node, &["digest", "--json"]).await?;
    assert_eq!(stdout(&digest), "{\"items\":42,\"digest\":\"9f86d081\"}\n");
    let letters = run(
        &node,
        &["dead-letters", "--json", "--after", "1", "--limit", "1"],
    )
    .await?;
    assert_eq!(
        stdout(&letters),
        "{\"id\":2,\"source\":\"kinesis-carts\",\"offset\":\"shard-0:2\",\"reason\":\"unknown table\",\"attempts\":3,\"at_millis\":1000,\"raw\":\"{}\"}\n"
    );
    let human = run(&node, &["dead-letters"]).await?;
    assert_eq!(
        stdout(&human),
        "#1 kinesis-carts shard-0:1 3 unknown table\n#2 kinesis-carts shard-0:2 3 unknown table\n#3 kinesis-carts shard-0:3 3 unknown table\n"
    );
    Ok(())
}

#[tokio::test]
async fn dlq_shows_retries_and_drops_with_exit_codes_for_scripts() -> TestResult {
    let node = start(Stub::default())?;
    let list = run(&node, &["dlq", "list", "--json", "--limit", "1"]).await?;
    assert_eq!(list.status.code(), Some(0));
    assert!(stdout(&list).starts_with("{\"id\":1,"), "{}", stdout(&list));
    let show = run(&node, &["dlq", "show", "2", "--json"]).await?;
    assert_eq!(
        stdout(&show),
        "{\"id\":2,\"source\":\"kinesis-carts\",\"offset\":\"shard-0:2\",\"reason\":\"unknown table\",\"attempts\":3,\"at_millis\":1000,\"raw\":\"{}\"}\n"
    );
    let missing = run(&node, &["dlq", "show", "9"]).await?;
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    assert_eq!(stderr(&missing), "replctl: no dead letter with id 9\n");
    let retried = run(&node, &["dlq", "retry", "2", "--json"]).await?;
    assert_eq!(retried.status.code(), Some(0));
    assert_eq!(
        stdout(&retried),
        "{\"id\":2,\"applied\":true,\"outcome\":\"applied; letter removed\"}\n"
    );
    let failing = run(&node, &["dlq", "retry", "3"]).await?;
    assert_eq!(failing.status.code(), Some(1));
    assert_eq!(stdout(&failing), "#3: still fails: unknown table\n");
    let unknown = run(&node, &["dlq", "retry", "7"]).await?;
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    assert_eq!(stderr(&unknown), "replctl: no dead letter with id 7\n");
    let dropped = run(&node, &["dlq", "drop", "1", "--json"]).await?;
    assert_eq!(stdout(&dropped), "{\"id\":1,\"dropped\":true}\n");
    let not_dropped = run(&node, &["dlq", "drop", "8"]).await?;
    assert_eq!(not_dropped.status.code(), Some(1));
    assert_eq!(stdout(&not_dropped), "#8: no such dead letter\n");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_node_exits_2() -> TestResult {
    // A port that was free a moment ago: nothing listens on it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let node = format!("http://{}", listener.local_addr()?);
    drop(listener);
    let output = run(&node, &["digest"]).await?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with(&format!("replctl: cannot reach node at {node}: ")),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[tokio::test]
async fn unavailable_and_a_slow_answer_exit_2() -> TestResult {
    let node = start(Stub::default())?;
    let unavailable = run(&node, &["offsets"]).await?;
    assert_eq!(unavailable.status.code(), Some(2));
    assert_eq!(
        stderr(&unavailable),
        format!("replctl: cannot reach node at {node}: shutting down\n")
    );
    let slow = run(&node, &["--timeout", "200ms", "status"]).await?;
    assert_eq!(slow.status.code(), Some(2));
    assert_eq!(
        stderr(&slow),
        format!("replctl: cannot reach node at {node}: no answer within 200ms\n")
    );
    Ok(())
}

#[tokio::test]
async fn no_node_is_a_usage_error_and_the_env_is_read() -> TestResult {
    let none = replctl(&["digest"]).output().await?;
    assert_eq!(none.status.code(), Some(2));
    assert!(stderr(&none).contains("REPLCTL_NODE"), "{}", stderr(&none));

    let node = start(Stub::default())?;
    let from_env = replctl(&["digest"])
        .env("REPLCTL_NODE", &node)
        .output()
        .await?;
    assert_eq!(from_env.status.code(), Some(0), "{}", stderr(&from_env));
    assert_eq!(stdout(&from_env), "items 42  digest 9f86d081\n");
    Ok(())
}
