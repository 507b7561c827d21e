//! `replctl` as the chaos writers and samplers run it: with a hard deadline
//! (a paused node must not hang a writer) and each stdout line stamped with
//! the moment it arrived (a write's acknowledgement time is when its
//! `{"origin","seq"}` line was printed, not when the process exited).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cluster::binary;

/// What one `replctl` run did.
#[derive(Debug, Clone)]
pub struct CtlRun {
    /// Exit code; `None` when it died of a signal or was killed at the
    /// deadline.
    pub code: Option<i32>,
    /// True when the run was killed at the deadline.
    pub killed: bool,
    /// Stdout lines, each with the instant it was read.
    pub lines: Vec<(Instant, String)>,
    /// Standard error.
    pub stderr: String,
    /// When the process was spawned.
    pub started: Instant,
    /// When it exited (or was killed).
    pub ended: Instant,
}

impl CtlRun {
    /// Stdout as one JSON document, if it is one.
    pub fn json(&self) -> Option<serde_json::Value> {
        let text: String = self.lines.iter().map(|(_, l)| l.as_str()).collect();
        serde_json::from_str(text.trim()).ok()
    }

    /// A one-line description of a failed run, for histories and reports.
    pub fn failure(&self) -> String {
        if self.killed {
            return "replctl killed at the deadline".to_owned();
        }
        let err = self.stderr.trim();
        match self.code {
            Some(code) => format!("exit {code}: {err}"),
            None => format!("killed by a signal: {err}"),
        }
    }
}

/// Runs `replctl --node URL --timeout TIMEOUT TLS ARGS` with `stdin`,
/// killing it if it has not exited `timeout * 3 + 2 s` after the spawn.
pub fn run(url: &str, tls: &[String], args: &[&str], stdin: &str, timeout: Duration) -> CtlRun {
    let started = Instant::now();
    let timeout_arg = format!("{}ms", timeout.as_millis().max(1));
    let mut child = Command::new(binary("replctl"))
        .args(["--node", url, "--timeout", &timeout_arg])
        .args(tls)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn replctl");
    let input = child.stdin.take().expect("piped stdin");
    let text = stdin.to_owned();
    // Fed from a thread: replctl answers while it reads.
    let feeder = std::thread::spawn(move || {
        let mut input = input;
        let _ = input.write_all(text.as_bytes());
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((Instant::now(), line));
        }
    });
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let hard = timeout * 3 + Duration::from_secs(2);
    let mut killed = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > hard => {
                let _ = child.kill();
                killed = true;
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let ended = Instant::now();
    let _ = feeder.join();
    let _ = reader.join();
    let stderr = err_reader.join().unwrap_or_default();
    CtlRun {
        code: if killed {
            None
        } else {
            status.and_then(|s| s.code())
        },
        killed,
        lines: rx.try_iter().collect(),
        stderr,
        started,
        ended,
    }
}
