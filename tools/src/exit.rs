//! Exit codes and what ends a command early, mapped once.
//!
//! The codes are a contract with operators' scripts:
//! - 0: the command did what was asked and no threshold was exceeded;
//! - 1: a threshold was exceeded, or the node *rejected* the request — it
//!   answered `NOT_FOUND`, `INVALID_ARGUMENT` or `FAILED_PRECONDITION`
//!   (retrying the same request will not help; fix the request);
//! - 2: a usage error, or the node could not be reached, did not answer in
//!   time, or answered any other error status or something unreadable.

use std::fmt;
use std::io;
use std::process::ExitCode;

use tonic::{Code, Status};

/// How `replctl` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// 0: done, nothing exceeded or rejected.
    Success,
    /// 1: a threshold was exceeded, or the node rejected a write or request.
    Failure,
    /// 2: usage error, or the node was unreachable or answered an error.
    Error,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failure => 1,
            Self::Error => 2,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit.code())
    }
}

/// Whether a gRPC status from the node means "rejected" (exit 1) rather
/// than "could not be served" (exit 2).
pub fn is_rejection(code: Code) -> bool {
    matches!(
        code,
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition
    )
}

/// Why a command stopped before finishing.
#[derive(Debug)]
pub enum Failure {
    /// Connecting failed, the connection was lost, or the node did not
    /// answer within `--timeout` (exit 2).
    Unreachable {
        /// The node as the operator gave it.
        node: String,
        /// What went wrong, for the operator.
        reason: String,
    },
    /// The node answered with an error status other than `UNAVAILABLE`
    /// (exit 1 for a rejection, see [`is_rejection`], else 2).
    Status(Status),
    /// The node answered something replctl cannot read (exit 2).
    Protocol(String),
    /// Reading stdin or writing stdout failed (exit 2).
    Io(io::Error),
}

impl Failure {
    /// Classifies a status returned by a call: `UNAVAILABLE` is the
    /// transport's "cannot reach", everything else is the node's answer.
    pub fn from_status(node: impl fmt::Display, status: Status) -> Self {
        if status.code() == Code::Unavailable {
            Self::Unreachable {
                node: node.to_string(),
                reason: describe_status(&status),
            }
        } else {
            Self::Status(status)
        }
    }

    /// The exit code this failure ends with.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Status(status) if is_rejection(status.code()) => Exit::Failure,
            Self::Unreachable { .. } | Self::Status(_) | Self::Protocol(_) | Self::Io(_) => {
                Exit::Error
            }
        }
    }

    /// The line for stderr (without the `replctl: ` prefix), or `None` when
    /// nothing should be said: stdout was closed by the reader (`| head`).
    pub fn message(&self) -> Option<String> {
        match self {
            Self::Unreachable { node, reason } => {
                Some(format!("cannot reach node at {node}: {reason}"))
            }
            Self::Status(status) => Some(describe_status(status)),
            Self::Protocol(what) => Some(what.clone()),
            Self::Io(e) if e.kind() == io::ErrorKind::BrokenPipe => None,
            Self::Io(e) => Some(format!("input/output error: {e}")),
        }
    }
}

/// A status's message, or the code's description when the node sent none.
pub fn describe_status(status: &Status) -> String {
    if status.message().is_empty() {
        status.code().description().to_owned()
    } else {
        status.message().to_owned()
    }
}

/// An error and its sources, joined with `: ` (transport errors put the
/// useful part, e.g. "Connection refused", in the sources).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_exit_1_and_say_the_nodes_message() {
        for status in [
            Status::not_found("unknown peer \"mars\""),
            Status::invalid_argument("bad key"),
            Status::failed_precondition("not ready"),
        ] {
            let message = status.message().to_owned();
            let failure = Failure::from_status("http://n:1", status);
            assert_eq!(failure.exit(), Exit::Failure);
            assert_eq!(failure.message(), Some(message));
        }
    }

    #[test]
    fn unavailable_is_cannot_reach_and_exits_2() {
        let failure = Failure::from_status("http://n:1", Status::unavailable("connection reset"));
        assert_eq!(failure.exit(), Exit::Error);
        assert_eq!(
            failure.message().as_deref(),
            Some("cannot reach node at http://n:1: connection reset")
        );
    }

    #[test]
    fn other_statuses_exit_2() {
        for status in [
            Status::deadline_exceeded("too slow"),
            Status::internal("boom"),
            Status::unimplemented(""),
            Status::cancelled("gone"),
            Status::resource_exhausted("too big"),
        ] {
            assert_eq!(Failure::from_status("n", status).exit(), Exit::Error);
        }
    }

    #[test]
    fn an_empty_status_message_falls_back_to_the_code() {
        let failure = Failure::Status(Status::unimplemented(""));
        assert_eq!(
            failure.message(),
            Some(Code::Unimplemented.description().to_owned())
        );
    }

    #[test]
    fn a_closed_stdout_is_silent() {
        let closed = Failure::Io(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(closed.message(), None);
        assert_eq!(closed.exit(), Exit::Error);
    }

    #[test]
    fn exit_codes_are_the_contract() {
        assert_eq!(
            [Exit::Success, Exit::Failure, Exit::Error].map(Exit::code),
            [0, 1, 2]
        );
        assert!(Exit::Success < Exit::Failure && Exit::Failure < Exit::Error);
    }

    #[test]
    fn error_chain_includes_sources_once() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("transport error")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let outer = Outer(io::Error::other("Connection refused"));
        assert_eq!(error_chain(&outer), "transport error: Connection refused");
    }
}
