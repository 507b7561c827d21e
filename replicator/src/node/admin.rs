//! The admin gRPC service: what `replctl` talks to. Local writes enter here
//! (the built-in source); everything else reads.
//!
//! Status codes: `INVALID_ARGUMENT` / `NOT_FOUND` for a request the node
//! refuses (replctl exits 1), `RESOURCE_EXHAUSTED` when writes are
//! throttled (retry later), `UNAVAILABLE` when the node is shutting down.

use std::sync::Arc;

use serde_json::Value;
use tonic::{Request, Response, Status};
use tributary_engine::ids::{RegionId, TableName, VersionVector};
use tributary_engine::store::{DeadLetterId, LogStore, digest_items};
use tributary_proto::v1 as pb;
use tributary_proto::v1::admin_server::Admin;

use super::core::{Core, lock};
use crate::admin::{item_document, key_from_json, parse_change};
use crate::wire::ToWire;

/// Lines per write request at most.
pub const MAX_WRITE_LINES: usize = 10_000;

/// The admin service of one node.
pub struct AdminService {
    core: Arc<Core>,
}

impl AdminService {
    /// Serves `core`.
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Checks that the caller may make a call needing `need` (see
    /// [`crate::config::AdminConfig`]); refusals are logged with the
    /// caller's address.
    fn authorize<T>(&self, request: &Request<T>, need: Role) -> Result<(), Status> {
        let conn = request.extensions().get::<super::tls::PeerConn>();
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim().to_owned());
        let granted = role(&self.core.config, conn, token.as_deref());
        let remote = conn
            .and_then(|c| c.remote)
            .map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
        let refuse = |status: Status| {
            tracing::warn!(caller = %remote, "admin call refused: {}", status.message());
            status
        };
        match granted {
            Err(why) => Err(refuse(Status::unauthenticated(format!(
                "{why} (call from {remote})"
            )))),
            Ok(Role::Read) if need == Role::Mutate => Err(refuse(Status::permission_denied(
                "this credential may only read (lag, status, offsets, digest, get, dead letters); \
                 writes, pause/resume and dead-letter retry/drop need the token of [admin] token_file \
                 or a certificate named in [admin] operators",
            ))),
            Ok(_) => Ok(()),
        }
    }
}

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read-only calls.
    Read,
    /// Every call.
    Mutate,
}

/// The role `config` grants a caller on `conn` presenting `token`, or why
/// none.
pub fn role(
    config: &crate::config::NodeConfig,
    conn: Option<&super::tls::PeerConn>,
    token: Option<&str>,
) -> Result<Role, String> {
    let admin = &config.admin;
    if let Some(token) = token {
        let matches = |file: &Option<std::path::PathBuf>| {
            file.as_ref()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .is_some_and(|t| {
                    !t.trim().is_empty() && same(t.trim().as_bytes(), token.as_bytes())
                })
        };
        if matches(&admin.token_file) {
            return Ok(Role::Mutate);
        }
        if matches(&admin.read_token_file) {
            return Ok(Role::Read);
        }
        return Err(
            "the bearer token matches neither [admin] token_file nor read_token_file".to_owned(),
        );
    }
    if let Some(cert) = conn.and_then(|c| c.cert.as_ref()) {
        let operator = admin.operators.is_empty()
            || admin
                .operators
                .iter()
                .any(|name| super::tls::cert_names(cert, name));
        return Ok(if operator { Role::Mutate } else { Role::Read });
    }
    let loopback = conn
        .and_then(|c| c.remote)
        .is_some_and(|a| a.ip().is_loopback());
    if loopback && admin.trust_loopback {
        return Ok(Role::Mutate);
    }
    Err("remote admin calls need a client certificate ([tls]) or a bearer token ([admin] token_file; replctl --token-file)".to_owned())
}

/// Compares two secrets in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn to_json(v: &impl serde::Serialize) -> Result<String, Status> {
    serde_json::to_string(v).map_err(internal)
}

fn vector(v: &VersionVector) -> pb::VersionVector {
    v.to_wire()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.authorize(&request, Role::Mutate)?;
        let lines = request.into_inner().changes_json;
        if lines.len() > MAX_WRITE_LINES {
            return Err(Status::invalid_argument(format!(
                "{} changes in one request; send at most {MAX_WRITE_LINES}",
                lines.len()
            )));
        }
        let schemas = self.core.config.schemas().map_err(internal)?;
        let parsed: Vec<Result<_, String>> = lines
            .iter()
            .map(|l| parse_change(l, &schemas).map_err(|e| e.0))
            .collect();
        let changes: Vec<_> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().cloned())
            .collect();
        let mut outcomes = Vec::new().into_iter();
        if !changes.is_empty() {
            if let Some(why) = self.core.write_gate() {
                return Err(Status::unavailable(why));
            }
            let permits = u32::try_from(changes.len()).unwrap_or(u32::MAX);
            let _permit = self
                .core
                .write_permits
                .try_acquire_many(permits)
                .map_err(|_| {
                    Status::resource_exhausted(
                        "throttled: too many local writes waiting to commit; retry with backoff",
                    )
                })?;
            let report = self
                .core
                .writer
                .ingest(changes)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?
                .map_err(|e| Status::unavailable(format!("the write was not committed: {e}")))?;
            outcomes = report.outcomes.into_iter();
        }
        let region = self.core.region().as_str().to_owned();
        let results = parsed
            .into_iter()
            .map(|p| {
                let outcome = match p {
                    Err(e) => Err(e),
                    Ok(_) => match outcomes.next() {
                        Some(Ok((seq, _))) => Ok(seq),
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("internal: no outcome for this change".to_owned()),
                    },
                };
                let result = match outcome {
                    Ok(seq) => {
                        self.core.metrics.writes.inc();
                        pb::write_result::Result::Written(pb::Written {
                            origin: region.clone(),
                            seq: seq.0,
                        })
                    }
                    Err(e) => {
                        self.core.metrics.writes_rejected.inc();
                        pb::write_result::Result::Error(e)
                    }
                };
                pb::WriteResult {
                    result: Some(result),
                }
            })
            .collect();
        Ok(Response::new(pb::WriteResponse { results }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.authorize(&request, Role::Read)?;
        let req = request.into_inner();
        let schemas = self.core.config.schemas().map_err(internal)?;
        let table = TableName::new(req.table.as_str())
            .map_err(|e| Status::invalid_argument(format!("table {:?}: {e}", req.table)))?;
        let schema = schemas
            .get(&table)
            .ok_or_else(|| Status::not_found(format!("unknown table {table}")))?;
        let key_json: Value = serde_json::from_str(&req.key_json)
            .map_err(|e| Status::invalid_argument(format!("key: not JSON: {e}")))?;
        let key = key_from_json(schema, &key_json).map_err(Status::invalid_argument)?;
        let state = self.core.store.item(&key).map_err(internal)?;
        let doc = item_document(schema, &key, state.as_ref(), req.provenance);
        Ok(Response::new(pb::GetResponse {
            item_json: to_json(&doc)?,
        }))
    }

    async fn lag(
        &self,
        request: Request<pb::LagRequest>,
    ) -> Result<Response<pb::LagResponse>, Status> {
        self.authorize(&request, Role::Read)?;
        let core = Arc::clone(&self.core);
        let doc = tokio::task::spawn_blocking(move || core.lag())
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::LagResponse {
            lag_json: to_json(&doc)?,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.authorize(&request, Role::Read)?;
        let core = Arc::clone(&self.core);
        let doc = tokio::task::spawn_blocking(move || core.status())
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::StatusResponse {
            status_json: to_json(&doc)?,
        }))
    }

    async fn offsets(
        &self,
        request: Request<pb::OffsetsRequest>,
    ) -> Result<Response<pb::OffsetsResponse>, Status> {
        self.authorize(&request, Role::Read)?;
        let store = &self.core.store;
        let applied = self.core.head.borrow().clone();
        // The persisted acknowledged vectors (a restart resumes from
        // these), not the live ones a link may hold a moment before it
        // persists them: offsets reported never go backwards.
        let acked = store
            .acked_all()
            .map_err(internal)?
            .into_iter()
            .map(|(p, v)| (p.as_str().to_owned(), vector(&v)))
            .collect();
        let checkpoints = store
            .checkpoints()
            .map_err(internal)?
            .into_iter()
            .map(|(s, c)| (s.as_str().to_owned(), c.0))
            .collect();
        Ok(Response::new(pb::OffsetsResponse {
            applied: Some(vector(&applied)),
            acked,
            checkpoints,
            log_start: Some(vector(&store.log_start().map_err(internal)?)),
        }))
    }

    async fn digest(
        &self,
        request: Request<pb::DigestRequest>,
    ) -> Result<Response<pb::DigestResponse>, Status> {
        self.authorize(&request, Role::Read)?;
        let store = Arc::clone(&self.core.store);
        let d = tokio::task::spawn_blocking(move || digest_items(&store, 1000))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Response::new(pb::DigestResponse {
            items: d.items,
            digest: d.digest,
        }))
    }

    async fn dead_letters(
        &self,
        request: Request<pb::DeadLettersRequest>,
    ) -> Result<Response<pb::DeadLettersResponse>, Status> {
        self.authorize(&request, Role::Read)?;
        let req = request.into_inner();
        let after = (req.after > 0).then_some(DeadLetterId(req.after));
        let limit = if req.limit == 0 {
            100
        } else {
            req.limit.min(10_000)
        };
        let letters = self
            .core
            .store
            .dead_letters(after, usize::try_from(limit).unwrap_or(100))
            .map_err(internal)?
            .into_iter()
            .map(|(id, l)| pb::DeadLetter {
                id: id.0,
                source: l.source.as_str().to_owned(),
                offset: l.offset,
                reason: l.reason,
                raw: l.raw,
                attempts: l.attempts,
                at_millis: l.at_millis,
            })
            .collect();
        Ok(Response::new(pb::DeadLettersResponse { letters }))
    }

    async fn retry_dead_letter(
        &self,
        request: Request<pb::RetryDeadLetterRequest>,
    ) -> Result<Response<pb::RetryDeadLetterResponse>, Status> {
        self.authorize(&request, Role::Mutate)?;
        use crate::sidecar::retry::{RetryError, retry};
        let id = request.into_inner().id;
        match retry(&self.core, id).await {
            Ok((applied, outcome)) => Ok(Response::new(pb::RetryDeadLetterResponse {
                applied,
                outcome,
            })),
            Err(e @ RetryError::NotFound(_)) => Err(Status::not_found(e.to_string())),
            Err(e @ RetryError::UnknownSource { .. }) => {
                Err(Status::failed_precondition(e.to_string()))
            }
            Err(e @ RetryError::Internal(_)) => Err(Status::internal(e.to_string())),
        }
    }

    async fn drop_dead_letter(
        &self,
        request: Request<pb::DropDeadLetterRequest>,
    ) -> Result<Response<pb::DropDeadLetterResponse>, Status> {
        self.authorize(&request, Role::Mutate)?;
        let id = request.into_inner().id;
        let dropped = self
            .core
            .store
            .remove_dead_letter(DeadLetterId(id))
            .map_err(internal)?;
        Ok(Response::new(pb::DropDeadLetterResponse { dropped }))
    }

    async fn set_peer_paused(
        &self,
        request: Request<pb::SetPeerPausedRequest>,
    ) -> Result<Response<pb::SetPeerPausedResponse>, Status> {
        self.authorize(&request, Role::Mutate)?;
        let req = request.into_inner();
        let peer = RegionId::new(req.peer.as_str())
            .map_err(|e| Status::invalid_argument(format!("peer {:?}: {e}", req.peer)))?;
        let link = self.core.links.get(&peer).ok_or_else(|| {
            Status::not_found(format!(
                "{peer} is not a peer of {}; peers: {}",
                self.core.region(),
                self.core
                    .links
                    .keys()
                    .map(RegionId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        lock(&link.state).outbound.set_paused(req.paused);
        link.wake.notify_one();
        tracing::info!(peer = %peer, paused = req.paused, "link pause set by operator");
        Ok(Response::new(pb::SetPeerPausedResponse {}))
    }
}
