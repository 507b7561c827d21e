//! `replicator check-config` and `replicator run` as operators' scripts use
//! them: the exit code and where the words go.

use std::process::{Command, Output};

const GOOD: &str = r#"
region = "us-east-1"
cluster = "demo"
data_dir = "/var/lib/tributary/us-east-1"
listen = "127.0.0.1:7101"
[[peers]]
region = "eu-west-1"
endpoint = "http://127.0.0.1:7102"
[[tables]]
name = "carts"
partition_key = "pk"
sort_key = "sk"
counters = ["qty"]
[[tables]]
name = "orders"
partition_key = "id"
"#;

fn replicator(args: &[&str], config: &str) -> (Output, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).expect("write config");
    let path = path.to_str().expect("utf-8 temp path");
    let out = Command::new(env!("CARGO_BIN_EXE_replicator"))
        .args(args)
        .args(["--config", path])
        .output()
        .expect("run replicator");
    let stdout = String::from_utf8(out.stdout.clone()).expect("utf-8 stdout");
    let stderr = String::from_utf8(out.stderr.clone()).expect("utf-8 stderr");
    (out, stdout, stderr)
}

#[test]
fn a_good_config_exits_0_and_explains_the_tables() {
    let (out, stdout, stderr) = replicator(&["check-config"], GOOD);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("  carts\n"), "{stdout}");
    assert!(stdout.contains("    qty: counter"), "{stdout}");
    assert!(stdout.contains("  orders\n"), "{stdout}");
    assert!(stdout.contains("eu-west-1"), "{stdout}");
}

#[test]
fn a_bad_config_exits_2_and_names_every_key() {
    let bad = GOOD
        .replace("region = \"eu-west-1\"", "region = \"us-east-1\"")
        .replace("name = \"orders\"", "name = \"carts\"");
    let (out, stdout, stderr) = replicator(&["check-config"], &bad);
    assert_eq!(out.status.code(), Some(2), "stdout: {stdout}");
    assert!(stdout.is_empty(), "nothing on stdout: {stdout}");
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(stderr.contains("peers[0].region"), "{stderr}");
    assert!(stderr.contains("tables[1].name"), "{stderr}");
}

#[test]
fn an_unknown_key_exits_2_and_names_it_with_its_line() {
    let (out, _, stderr) = replicator(&["check-config"], &format!("colour = \"blue\"{GOOD}"));
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");
    assert!(stderr.contains("line 1,"), "{stderr}");
}

#[test]
fn a_missing_file_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_replicator"))
        .args(["check-config", "--config", "/nonexistent/tributary.toml"])
        .output()
        .expect("run replicator");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read config file"), "{stderr}");
}

#[test]
fn run_refuses_an_unusable_configuration_with_exit_2() {
    let (out, _, stderr) = replicator(&["run"], "region = \"x\"\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("missing field"), "{stderr}");
}

#[test]
fn run_fails_with_exit_1_when_the_data_dir_cannot_be_opened() {
    // A usable configuration whose data_dir is a regular file: the store
    // cannot open, the node says where and exits 1 (not a config error).
    let dir = tempfile::tempdir().expect("temp dir");
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").expect("write file");
    let config = GOOD
        .replace(
            "/var/lib/tributary/us-east-1",
            blocker.to_str().expect("utf-8"),
        )
        .replace("127.0.0.1:7101", "127.0.0.1:0");
    let (out, _, stderr) = replicator(&["run"], &config);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("opening the store in"), "{stderr}");
}

#[test]
fn the_shipped_example_checks() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/us-east-1.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_replicator"))
        .args(["check-config", "--config", path])
        .output()
        .expect("run replicator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("  carts\n"), "{stdout}");
}
