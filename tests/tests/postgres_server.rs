//! What a real PostgreSQL 15 with wal2json 2.5 (the Debian packages
//! `scripts/setup.sh` installs) does with exactly the calls the PostgreSQL
//! sidecar makes: logical decoding through SQL (`pg_logical_slot_peek_changes`
//! with wal2json's format 2, `pg_replication_slot_advance`), replication
//! origins to tell the sink's own writes apart, replica identity, and the
//! errors of busy and missing slots. Every test starts its own server and
//! asserts the server's actual behaviour, surprising parts included (they
//! are named in the tests' docs).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tributary_tests::postgres::{Postgres, connect, tool};

/// How long a state the tests wait on may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two polls of a state being waited on.
const POLL: Duration = Duration::from_millis(50);

/// The options the sidecar's peeks start from.
const V2: &[&str] = &[
    "format-version",
    "2",
    "include-xids",
    "1",
    "include-lsn",
    "1",
];

/// A server with database `app` and a client connected to it.
async fn server() -> (Postgres, Client) {
    let pg = Postgres::start().expect("start postgres (run scripts/setup.sh first)");
    pg.create_database("app").expect("create database app");
    let client = connect(&pg.dsn("app")).await.expect("connect to app");
    (pg, client)
}

/// One row of `pg_logical_slot_peek_changes`.
#[derive(Debug, Clone)]
struct Row {
    /// The row's `lsn` column: a change's own LSN; for `B` the first
    /// change's, for `C` the end of the commit record.
    lsn: String,
    /// The row's `xid` column.
    xid: String,
    /// wal2json's JSON text.
    data: String,
}

impl Row {
    /// The parsed JSON.
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("wal2json emits JSON")
    }

    /// Its `"action"`.
    fn action(&self) -> String {
        self.json()["action"]
            .as_str()
            .expect("every record has an action")
            .to_owned()
    }
}

/// Peeks every change of `slot` with wal2json `options`.
async fn peek(client: &Client, slot: &str, options: &[&str]) -> Result<Vec<Row>, DbError> {
    peek_upto(client, slot, None, None, options).await
}

/// Peeks the changes of `slot` up to an LSN and/or a number of rows.
async fn peek_upto(
    client: &Client,
    slot: &str,
    upto_lsn: Option<&str>,
    upto_rows: Option<i32>,
    options: &[&str],
) -> Result<Vec<Row>, DbError> {
    let rows = client
        .query(
            "SELECT lsn::text, xid::text, data FROM pg_logical_slot_peek_changes(\
             $1, $2::text::pg_lsn, $3::int, VARIADIC $4::text[])",
            &[&slot, &upto_lsn, &upto_rows, &options],
        )
        .await
        .map_err(DbError::from)?;
    Ok(rows
        .iter()
        .map(|r| Row {
            lsn: r.get(0),
            xid: r.get(1),
            data: r.get(2),
        })
        .collect())
}

/// A server error's SQLSTATE and message (or the client error's text).
#[derive(Debug, Clone, PartialEq, Eq)]
struct DbError {
    code: String,
    message: String,
}

impl DbError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => DbError {
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
            },
            None => DbError {
                code: String::new(),
                message: e.to_string(),
            },
        }
    }
}

/// The error of a statement that must fail.
async fn sql_error(client: &Client, sql: &str) -> DbError {
    match client.batch_execute(sql).await {
        Ok(()) => panic!("{sql} succeeded, an error was expected"),
        Err(e) => DbError::from(e),
    }
}

/// Runs each statement in its own transaction (one simple query with
/// several statements is one transaction).
async fn each(client: &Client, statements: &[&str]) {
    for sql in statements {
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// The single text value of `sql`.
async fn text(client: &Client, sql: &str) -> String {
    let row = client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    row.get(0)
}

/// An LSN as PostgreSQL prints it.
fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// An LSN (`X/Y`) as a number, for ordering.
fn lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("{text:?} is no LSN"));
    let hi = u64::from_str_radix(hi, 16).unwrap_or_else(|_| panic!("{text:?} is no LSN"));
    let lo = u64::from_str_radix(lo, 16).unwrap_or_else(|_| panic!("{text:?} is no LSN"));
    (hi << 32) | lo
}

/// `confirmed_flush_lsn` of `slot` (NULL while it is being created).
async fn confirmed(client: &Client, slot: &str) -> Option<String> {
    client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("read pg_replication_slots")
        .get(0)
}

/// Polls `check` until it returns `Ok(Some(_))` or [`DEADLINE`] passes; on
/// timeout panics with `what` and the last state seen.
async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Result<Option<T>, String>) -> T {
    let end = Instant::now() + DEADLINE;
    let mut last = String::from("(never checked)");
    loop {
        match check().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(state) => last = state,
        }
        assert!(
            Instant::now() < end,
            "timed out after {DEADLINE:?} waiting for {what}; last state: {last}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `active_pid` of `slot` once it is active.
async fn wait_slot_active(client: &Client, slot: &str) -> i32 {
    wait_for(&format!("slot {slot} active"), async || {
        let row = client
            .query_one(
                "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| e.to_string())?;
        let (active, pid): (bool, Option<i32>) = (row.get(0), row.get(1));
        match (active, pid) {
            (true, Some(pid)) => Ok(Some(pid)),
            state => Err(format!("(active, active_pid) = {state:?}")),
        }
    })
    .await
}

/// Waits until no process holds `slot`.
async fn wait_slot_released(client: &Client, slot: &str) {
    wait_for(&format!("slot {slot} released"), async || {
        let row = client
            .query_one(
                "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| e.to_string())?;
        let (active, pid): (bool, Option<i32>) = (row.get(0), row.get(1));
        if active {
            Err(format!("active for pid {pid:?}"))
        } else {
            Ok(Some(()))
        }
    })
    .await
}

/// Splits peeked rows into transactions, each starting with `B` and ending
/// with `C`.
fn transactions(rows: &[Row]) -> Vec<Vec<Row>> {
    let mut out: Vec<Vec<Row>> = Vec::new();
    for row in rows {
        match row.action().as_str() {
            "B" => out.push(vec![row.clone()]),
            _ => out
                .last_mut()
                .unwrap_or_else(|| panic!("{} before any B", row.data))
                .push(row.clone()),
        }
    }
    for txn in &out {
        let actions: Vec<String> = txn.iter().map(Row::action).collect();
        assert_eq!(actions.last().map(String::as_str), Some("C"), "{actions:?}");
        assert_eq!(
            actions.iter().filter(|a| *a == "B" || *a == "C").count(),
            2,
            "one B and one C per transaction: {actions:?}"
        );
    }
    out
}

/// The columns of the full-identity table `t` for one row image, as
/// wal2json writes them (default types, no type OIDs).
fn t_columns(id: i32, name: &str, amount: &str) -> String {
    format!(
        r#"[{{"name":"id","type":"integer","value":{id}}},{{"name":"name","type":"text","value":"{name}"}},{{"name":"big","type":"bigint","value":9007199254740993}},{{"name":"amount","type":"numeric(10,2)","value":{amount}}},{{"name":"flag","type":"boolean","value":true}},{{"name":"data","type":"bytea","value":"00ff"}},{{"name":"doc","type":"jsonb","value":"{{\"k\": [1, 2]}}"}},{{"name":"tags","type":"text[]","value":"{{x,\"y z\"}}"}},{{"name":"at","type":"timestamp with time zone","value":"2024-01-02 03:04:05.123456+00"}}]"#
    )
}

const CREATE_T: &str = "CREATE TABLE t (id integer PRIMARY KEY, name text, big bigint, \
     amount numeric(10,2), flag boolean, data bytea, doc jsonb, tags text[], at timestamptz); \
     ALTER TABLE t REPLICA IDENTITY FULL";

/// A row of `t` with every column set.
fn insert_t(id: i32, name: &str) -> String {
    format!(
        "INSERT INTO t VALUES ({id}, '{name}', 9007199254740993, 12.50, true, '\\x00ff', \
         '{{\"k\": [1, 2]}}', ARRAY['x', 'y z'], '2024-01-02 03:04:05.123456+00')"
    )
}

async fn create_slot(client: &Client, slot: &str) -> String {
    text(
        client,
        &format!("SELECT lsn::text FROM pg_create_logical_replication_slot('{slot}', 'wal2json')"),
    )
    .await
}

#[tokio::test]
async fn two_servers_run_at_once_ready_for_logical_decoding() {
    let a = Postgres::start().expect("start region a");
    let b = Postgres::start().expect("start region b");
    assert_ne!(a.port(), b.port());
    for pg in [&a, &b] {
        pg.create_database("app").expect("create database");
        let client = connect(&pg.dsn("app")).await.expect("connect");
        let settings = client
            .query_one(
                "SELECT current_setting('server_version_num'), current_setting('wal_level'), \
                 current_setting('max_replication_slots'), current_setting('max_wal_senders'), \
                 current_setting('TimeZone'), (SELECT setting FROM pg_settings \
                 WHERE name = 'listen_addresses')",
                &[],
            )
            .await
            .expect("read settings");
        let settings: Vec<String> = (0..6).map(|i| settings.get(i)).collect();
        assert!(settings[0].starts_with("15"), "{settings:?}");
        assert_eq!(settings[1..], ["logical", "10", "10", "UTC", "127.0.0.1"]);
        // wal2json is loadable.
        create_slot(&client, "probe").await;
        assert!(
            pg.log()
                .contains("database system is ready to accept connections"),
            "{}",
            pg.log_tail()
        );
    }
    // They are separate clusters.
    let ca = connect(&a.dsn("app")).await.expect("connect a");
    let cb = connect(&b.dsn("app")).await.expect("connect b");
    ca.batch_execute("CREATE TABLE only_in_a (id int)")
        .await
        .expect("create");
    let err = DbError::from(
        cb.query("SELECT * FROM only_in_a", &[])
            .await
            .expect_err("the table is in a only"),
    );
    assert_eq!(err.code, "42P01", "{err:?}");
}

/// (a) The exact format-2 records of a `REPLICA IDENTITY FULL` table:
/// `I` has `columns`, `U` has `columns` (new) and `identity` (old, every
/// column), `D` has `identity` only. Each transaction is one `B` ... one
/// `C`; `B` and `C` both carry the commit record's LSN as `"lsn"` and its
/// end as `"nextlsn"`, and the row's `lsn` column is the first change's
/// LSN on `B` and `nextlsn` on `C`. Types are SQL names with typmods
/// (`numeric(10,2)`, `text[]`, `timestamp with time zone`); numbers and
/// booleans are JSON literals, everything else a string in the type's text
/// output (bytea hex without `\x`, jsonb as its text, arrays as array
/// literals, timestamptz in the session's TimeZone).
#[tokio::test]
async fn wal2json_v2_records_of_a_full_identity_table() {
    let (pg, client) = server().await;
    client.batch_execute(CREATE_T).await.expect("create t");
    create_slot(&client, "s").await;

    client
        .batch_execute(&insert_t(1, "a"))
        .await
        .expect("insert");
    client
        .batch_execute("UPDATE t SET name = 'b', amount = 13 WHERE id = 1")
        .await
        .expect("update");
    client
        .batch_execute("DELETE FROM t WHERE id = 1")
        .await
        .expect("delete");
    // The multi-row transaction, with its xid read inside it.
    let mut c2 = connect(&pg.dsn("app")).await.expect("connect");
    let tx = c2.transaction().await.expect("begin");
    tx.batch_execute(&insert_t(2, "two"))
        .await
        .expect("insert 2");
    tx.batch_execute(&insert_t(3, "three"))
        .await
        .expect("insert 3");
    tx.batch_execute("UPDATE t SET name = 'c2' WHERE id = 2")
        .await
        .expect("update 2");
    let multi_xid: String = tx
        .query_one("SELECT pg_current_xact_id()::text", &[])
        .await
        .expect("xid")
        .get(0);
    tx.commit().await.expect("commit");

    let rows = peek(&client, "s", V2).await.expect("peek");
    let txns = transactions(&rows);
    let shapes: Vec<Vec<String>> = txns
        .iter()
        .map(|t| t.iter().map(Row::action).collect())
        .collect();
    assert_eq!(
        shapes,
        [
            vec!["B", "I", "C"],
            vec!["B", "U", "C"],
            vec!["B", "D", "C"],
            vec!["B", "I", "I", "U", "C"]
        ],
        "{rows:#?}"
    );
    assert_eq!(txns[3][0].xid, multi_xid, "the multi-row transaction's xid");

    let mut previous_xid = 0u64;
    for txn in &txns {
        let begin = txn[0].json();
        let commit = txn[txn.len() - 1].json();
        let xid = &txn[0].xid;
        assert!(txn.iter().all(|r| &r.xid == xid), "one xid per transaction");
        let xid_n: u64 = xid.parse().expect("numeric xid");
        assert!(xid_n > previous_xid, "xids grow in commit order here");
        previous_xid = xid_n;
        let commit_lsn = begin["lsn"].as_str().expect("B has lsn").to_owned();
        let next_lsn = begin["nextlsn"].as_str().expect("B has nextlsn").to_owned();
        // B and C: the same commit LSN and end; exactly these keys.
        let expected =
            format!(r#"{{"action":"B","xid":{xid},"lsn":"{commit_lsn}","nextlsn":"{next_lsn}"}}"#);
        assert_eq!(txn[0].data, expected);
        assert_eq!(txn[txn.len() - 1].data, expected.replace("\"B\"", "\"C\""));
        assert_eq!(commit["nextlsn"], begin["nextlsn"]);
        // The rows' lsn column: first change for B, commit end for C.
        assert_eq!(txn[0].lsn, txn[1].lsn, "B row lsn = first change's");
        assert_eq!(txn[txn.len() - 1].lsn, next_lsn, "C row lsn = nextlsn");
        // Changes carry their own LSN, increasing, before the commit.
        let changes = &txn[1..txn.len() - 1];
        for pair in changes.windows(2) {
            assert!(lsn(&pair[0].lsn) < lsn(&pair[1].lsn));
        }
        for change in changes {
            assert_eq!(change.json()["lsn"].as_str(), Some(change.lsn.as_str()));
            assert!(lsn(&change.lsn) < lsn(&commit_lsn));
        }
        assert!(lsn(&commit_lsn) < lsn(&next_lsn));
    }

    let change = |t: usize, i: usize| (&txns[t][i].xid, &txns[t][i].lsn, &txns[t][i].data);
    let (xid, at, data) = change(0, 1);
    assert_eq!(
        data,
        &format!(
            r#"{{"action":"I","xid":{xid},"lsn":"{at}","schema":"public","table":"t","columns":{}}}"#,
            t_columns(1, "a", "12.50")
        )
    );
    let (xid, at, data) = change(1, 1);
    assert_eq!(
        data,
        &format!(
            r#"{{"action":"U","xid":{xid},"lsn":"{at}","schema":"public","table":"t","columns":{},"identity":{}}}"#,
            t_columns(1, "b", "13.00"),
            t_columns(1, "a", "12.50")
        )
    );
    let (xid, at, data) = change(2, 1);
    assert_eq!(
        data,
        &format!(
            r#"{{"action":"D","xid":{xid},"lsn":"{at}","schema":"public","table":"t","identity":{}}}"#,
            t_columns(1, "b", "13.00")
        )
    );
    let (xid, at, data) = change(3, 3);
    assert_eq!(
        data,
        &format!(
            r#"{{"action":"U","xid":{xid},"lsn":"{at}","schema":"public","table":"t","columns":{},"identity":{}}}"#,
            t_columns(2, "c2", "12.50"),
            t_columns(2, "two", "12.50")
        )
    );

    // include-type-oids adds each column's type OID after its name.
    let rows = peek(
        &client,
        "s",
        &["format-version", "2", "include-type-oids", "1"],
    )
    .await
    .expect("peek with type oids");
    let insert = rows
        .iter()
        .find(|r| r.action() == "I")
        .expect("an insert")
        .json();
    let oids: Vec<(String, String, i64)> = insert["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_owned(),
                c["type"].as_str().expect("type").to_owned(),
                c["typeoid"].as_i64().expect("typeoid"),
            )
        })
        .collect();
    let expected = [
        ("id", "integer", 23),
        ("name", "text", 25),
        ("big", "bigint", 20),
        ("amount", "numeric(10,2)", 1700),
        ("flag", "boolean", 16),
        ("data", "bytea", 17),
        ("doc", "jsonb", 3802),
        ("tags", "text[]", 1009),
        ("at", "timestamp with time zone", 1184),
    ]
    .map(|(n, t, o)| (n.to_owned(), t.to_owned(), o));
    assert_eq!(oids, expected);
}

/// (a) Values JSON cannot carry as the sidecar would like: numeric `NaN`
/// and float `±Infinity` become `null` (indistinguishable from SQL NULL);
/// numerics and bigints are bare JSON numbers with every digit (parsing
/// them as f64 loses digits); there is no option to get numbers as strings
/// in wal2json 2.5 (`numeric-data-types-as-string` is 2.6's); timestamptz
/// follows the decoding session's TimeZone and bytea follows its
/// `bytea_output` (wal2json drops the first two characters, right only for
/// `hex`).
#[tokio::test]
async fn wal2json_values_json_cannot_carry() {
    let (_pg, client) = server().await;
    client
        .batch_execute(
            "CREATE TABLE n (id integer PRIMARY KEY, amount numeric, f float8, big bigint, \
             at timestamptz, data bytea); ALTER TABLE n REPLICA IDENTITY FULL",
        )
        .await
        .expect("create n");
    create_slot(&client, "s").await;
    client
        .batch_execute(
            "INSERT INTO n VALUES (1, 'NaN', 'Infinity', -9223372036854775808, \
             '2024-01-02 03:04:05+00', '\\x41ff'); \
             INSERT INTO n VALUES (2, 123456789012345678901234567890.123456789, '-Infinity', \
             9223372036854775807, NULL, NULL); \
             INSERT INTO n VALUES (3, NULL, 0.1, NULL, NULL, NULL)",
        )
        .await
        .expect("insert");
    let opts = ["format-version", "2", "include-transaction", "0"];
    let rows = peek(&client, "s", &opts).await.expect("peek");
    let data: Vec<&str> = rows.iter().map(|r| r.data.as_str()).collect();
    assert_eq!(
        data,
        [
            r#"{"action":"I","schema":"public","table":"n","columns":[{"name":"id","type":"integer","value":1},{"name":"amount","type":"numeric","value":null},{"name":"f","type":"double precision","value":null},{"name":"big","type":"bigint","value":-9223372036854775808},{"name":"at","type":"timestamp with time zone","value":"2024-01-02 03:04:05+00"},{"name":"data","type":"bytea","value":"41ff"}]}"#,
            r#"{"action":"I","schema":"public","table":"n","columns":[{"name":"id","type":"integer","value":2},{"name":"amount","type":"numeric","value":123456789012345678901234567890.123456789},{"name":"f","type":"double precision","value":null},{"name":"big","type":"bigint","value":9223372036854775807},{"name":"at","type":"timestamp with time zone","value":null},{"name":"data","type":"bytea","value":null}]}"#,
            r#"{"action":"I","schema":"public","table":"n","columns":[{"name":"id","type":"integer","value":3},{"name":"amount","type":"numeric","value":null},{"name":"f","type":"double precision","value":0.1},{"name":"big","type":"bigint","value":null},{"name":"at","type":"timestamp with time zone","value":null},{"name":"data","type":"bytea","value":null}]}"#,
        ]
    );
    // A default serde_json Value keeps the bigint but not the numeric.
    let amount = &rows[1].json()["columns"][1]["value"];
    assert!(amount.is_f64(), "{amount}");
    assert_ne!(
        amount.to_string(),
        "123456789012345678901234567890.123456789"
    );

    // The session's settings shape the text of timestamptz and bytea.
    client
        .batch_execute("SET TimeZone = 'America/New_York'; SET bytea_output = 'escape'")
        .await
        .expect("set");
    let rows = peek(&client, "s", &opts).await.expect("peek");
    let first = rows[0].json();
    assert_eq!(first["columns"][4]["value"], "2024-01-01 22:04:05-05");
    // escape output of \x41ff is `A\377`; wal2json skips 2 characters.
    assert_eq!(first["columns"][5]["value"], "377");

    let err = peek(
        &client,
        "s",
        &["format-version", "2", "numeric-data-types-as-string", "1"],
    )
    .await
    .expect_err("unknown option");
    assert_eq!(
        err,
        DbError::new(
            "22023",
            r#"option "numeric-data-types-as-string" = "1" is unknown"#
        )
    );
    let err = peek(&client, "s", &["format-version", "3"])
        .await
        .expect_err("format 3");
    assert_eq!(err.code, "0A000", "{err:?}");
    assert_eq!(
        err.message,
        "client sent format_version=3 but we only support format 2 or lower"
    );
}

/// (a) An UPDATE that leaves a TOASTed (out-of-line) value unchanged
/// omits that column from `columns`, even with `REPLICA IDENTITY FULL`
/// (where `identity` has the old value): the new image is `identity`
/// overlaid with `columns`. Without FULL the value is nowhere in the
/// record. `include-unchanged-toast` is gone (an error).
#[tokio::test]
async fn wal2json_update_omits_unchanged_toasted_columns() {
    let (_pg, client) = server().await;
    client
        .batch_execute(
            "CREATE TABLE full_t (id integer PRIMARY KEY, v integer, body text); \
             ALTER TABLE full_t REPLICA IDENTITY FULL; \
             CREATE TABLE key_t (id integer PRIMARY KEY, v integer, body text)",
        )
        .await
        .expect("create");
    create_slot(&client, "s").await;
    // ~10 kB of hex digits of random md5s: compresses too badly to stay
    // inline, so it is stored out of line.
    let body = "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 300))";
    client
        .batch_execute(&format!(
            "INSERT INTO full_t SELECT 1, 0, {body}; INSERT INTO key_t SELECT 1, 0, {body}; \
             UPDATE full_t SET v = 1; UPDATE key_t SET v = 1"
        ))
        .await
        .expect("write");
    let full_body = text(&client, "SELECT body FROM full_t").await;
    let stored = text(&client, "SELECT pg_column_size(body)::text FROM full_t").await;
    assert!(
        stored.parse::<usize>().expect("size") > 2000,
        "{stored} bytes"
    );
    let rows = peek(
        &client,
        "s",
        &["format-version", "2", "include-transaction", "0"],
    )
    .await
    .expect("peek");
    let updates: Vec<serde_json::Value> = rows
        .iter()
        .filter(|r| r.action() == "U")
        .map(Row::json)
        .collect();
    assert_eq!(updates.len(), 2, "{rows:#?}");
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_owned())
            .collect()
    };
    assert_eq!(updates[0]["table"], "full_t");
    assert_eq!(names(&updates[0]["columns"]), ["id", "v"]);
    assert_eq!(names(&updates[0]["identity"]), ["id", "v", "body"]);
    assert_eq!(updates[0]["identity"][2]["value"], full_body.as_str());
    assert_eq!(updates[1]["table"], "key_t");
    assert_eq!(names(&updates[1]["columns"]), ["id", "v"]);
    assert_eq!(names(&updates[1]["identity"]), ["id"]);

    let err = peek(
        &client,
        "s",
        &["format-version", "2", "include-unchanged-toast", "1"],
    )
    .await
    .expect_err("deprecated");
    assert_eq!(err.code, "42602", "{err:?}");
    assert_eq!(
        err.message,
        r#"parameter "include-unchanged-toast" was deprecated"#
    );
}

/// (a) What else a slot carries: transactions that change no decoded table
/// (DDL, other tables under `add-tables`, `pg_replication_origin_create`)
/// still appear as empty `B`/`C` pairs; `include-transaction = 0` drops
/// every `B`/`C`; `add-tables` takes `schema.table`; logical messages are
/// `M` records (transactional ones inside `B`/`C`, non-transactional ones
/// on their own, even ahead of their transaction's `B`).
#[tokio::test]
async fn wal2json_empty_transactions_table_filter_and_messages() {
    let (_pg, client) = server().await;
    client
        .batch_execute(
            "CREATE TABLE a (id integer PRIMARY KEY); CREATE TABLE b (id integer PRIMARY KEY)",
        )
        .await
        .expect("create");
    create_slot(&client, "s").await;
    each(
        &client,
        &[
            "INSERT INTO a VALUES (1)",
            "INSERT INTO b VALUES (1)",
            "CREATE TABLE c (id integer)",
            "SELECT pg_logical_emit_message(false, 'tributary', 'plain')",
            "SELECT pg_logical_emit_message(true, 'tributary', 'in a transaction')",
        ],
    )
    .await;
    let all = ["format-version", "2"];
    let data = |rows: Vec<Row>| rows.into_iter().map(|r| r.data).collect::<Vec<_>>();
    assert_eq!(
        data(peek(&client, "s", &all).await.expect("peek")),
        [
            r#"{"action":"B"}"#,
            r#"{"action":"I","schema":"public","table":"a","columns":[{"name":"id","type":"integer","value":1}]}"#,
            r#"{"action":"C"}"#,
            r#"{"action":"B"}"#,
            r#"{"action":"I","schema":"public","table":"b","columns":[{"name":"id","type":"integer","value":1}]}"#,
            r#"{"action":"C"}"#,
            r#"{"action":"B"}"#,
            r#"{"action":"C"}"#,
            r#"{"action":"M","transactional":false,"prefix":"tributary","content":"plain"}"#,
            r#"{"action":"B"}"#,
            r#"{"action":"M","transactional":true,"prefix":"tributary","content":"in a transaction"}"#,
            r#"{"action":"C"}"#,
        ]
    );
    let only_a = ["format-version", "2", "add-tables", "public.a"];
    assert_eq!(
        data(peek(&client, "s", &only_a).await.expect("peek a")),
        [
            r#"{"action":"B"}"#,
            r#"{"action":"I","schema":"public","table":"a","columns":[{"name":"id","type":"integer","value":1}]}"#,
            r#"{"action":"C"}"#,
            r#"{"action":"B"}"#,
            r#"{"action":"C"}"#,
            r#"{"action":"B"}"#,
            r#"{"action":"C"}"#,
            r#"{"action":"M","transactional":false,"prefix":"tributary","content":"plain"}"#,
            r#"{"action":"B"}"#,
            r#"{"action":"M","transactional":true,"prefix":"tributary","content":"in a transaction"}"#,
            r#"{"action":"C"}"#,
        ]
    );
    let only_a_no_tx = [
        "format-version",
        "2",
        "add-tables",
        "public.a",
        "include-transaction",
        "0",
    ];
    let rows = peek(&client, "s", &only_a_no_tx).await.expect("peek");
    let actions: Vec<String> = rows.iter().map(Row::action).collect();
    assert_eq!(actions, ["I", "M", "M"]);

    // A non-transactional message is emitted when decoded, ahead of the
    // B of the transaction that wrote it.
    client
        .batch_execute("SELECT pg_replication_slot_advance('s', pg_current_wal_lsn())")
        .await
        .expect("advance");
    client
        .batch_execute(
            "INSERT INTO a VALUES (2); SELECT pg_logical_emit_message(false, 'tributary', 'early')",
        )
        .await
        .expect("one transaction");
    let rows = peek(&client, "s", &all).await.expect("peek");
    let actions: Vec<String> = rows.iter().map(Row::action).collect();
    assert_eq!(actions, ["M", "B", "I", "C"], "{rows:#?}");
}

/// (b) Peeking never consumes: the same rows every time, and
/// `confirmed_flush_lsn` stays. `pg_replication_slot_advance` to a
/// transaction's `nextlsn` sets `confirmed_flush_lsn` to exactly that and
/// later peeks start with the next transaction; advancing backwards is an
/// error; advancing past the WAL stops at the flushed end.
#[tokio::test]
async fn peek_is_repeatable_and_advance_moves_the_slot() {
    let (_pg, client) = server().await;
    client
        .batch_execute("CREATE TABLE e (id integer PRIMARY KEY, v text)")
        .await
        .expect("create");
    let created = create_slot(&client, "s").await;
    assert_eq!(
        confirmed(&client, "s").await.as_deref(),
        Some(created.as_str())
    );
    each(
        &client,
        &[
            "INSERT INTO e VALUES (1, 'a')",
            "INSERT INTO e VALUES (2, 'b')",
        ],
    )
    .await;

    let first = peek(&client, "s", V2).await.expect("peek");
    let again = peek(&client, "s", V2).await.expect("peek again");
    assert_eq!(first.len(), 6);
    assert_eq!(
        first.iter().map(|r| &r.data).collect::<Vec<_>>(),
        again.iter().map(|r| &r.data).collect::<Vec<_>>()
    );
    assert_eq!(
        confirmed(&client, "s").await.as_deref(),
        Some(created.as_str())
    );

    let txns = transactions(&first);
    let end_of_first = txns[0][2].lsn.clone();
    let advanced = client
        .query_one(
            "SELECT slot_name::text, end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
            &[&"s", &end_of_first],
        )
        .await
        .expect("advance");
    assert_eq!(
        (advanced.get::<_, String>(0), advanced.get::<_, String>(1)),
        ("s".to_owned(), end_of_first.clone())
    );
    assert_eq!(
        confirmed(&client, "s").await.as_deref(),
        Some(end_of_first.as_str())
    );
    let rest = peek(&client, "s", V2).await.expect("peek after advance");
    assert_eq!(
        rest.iter().map(|r| &r.data).collect::<Vec<_>>(),
        txns[1].iter().map(|r| &r.data).collect::<Vec<_>>()
    );

    let err = DbError::from(
        client
            .query(
                "SELECT pg_replication_slot_advance('s', $1::text::pg_lsn)",
                &[&created],
            )
            .await
            .expect_err("backwards"),
    );
    assert_eq!(err.code, "55000", "{err:?}");
    assert_eq!(
        err.message,
        format!("cannot advance replication slot to {created}, minimum is {end_of_first}")
    );

    let flushed = text(&client, "SELECT pg_current_wal_flush_lsn()::text").await;
    let reached = text(
        &client,
        "SELECT end_lsn::text FROM pg_replication_slot_advance('s', 'FFFFFFFF/0')",
    )
    .await;
    assert!(lsn(&reached) >= lsn(&flushed) && lsn(&reached) < lsn("FFFFFFFF/0"));
    let now_flushed = text(&client, "SELECT pg_current_wal_flush_lsn()::text").await;
    assert!(
        lsn(&reached) <= lsn(&now_flushed),
        "{reached} > {now_flushed}"
    );
    assert!(peek(&client, "s", V2).await.expect("peek").is_empty());
}

/// (b) `upto_lsn` and `upto_nchanges` never split a transaction: a peek
/// up to an LSN returns the transactions whose commit LSN (`"lsn"` of `B`
/// and `C`) is before it — decoding stops after the first WAL record that
/// ends at or past `upto_lsn`, so `upto_lsn = nextlsn` includes the
/// transaction and `upto_lsn = ` its last change's LSN does not — and
/// `upto_nchanges = 1` returns one whole transaction.
#[tokio::test]
async fn peek_limits_stop_at_whole_transactions() {
    let (_pg, client) = server().await;
    client
        .batch_execute("CREATE TABLE e (id integer PRIMARY KEY)")
        .await
        .expect("create");
    create_slot(&client, "s").await;
    client
        .batch_execute(
            "BEGIN; INSERT INTO e VALUES (1); INSERT INTO e VALUES (2); COMMIT; \
             INSERT INTO e VALUES (3)",
        )
        .await
        .expect("insert");
    let all = peek(&client, "s", V2).await.expect("peek");
    let txns = transactions(&all);
    assert_eq!(txns.len(), 2);
    let first_commit = txns[0][0].json()["lsn"]
        .as_str()
        .expect("commit lsn")
        .to_owned();
    let first_end = txns[0][3].lsn.clone();

    let count = async |upto_lsn: Option<&str>, upto_rows: Option<i32>| {
        peek_upto(&client, "s", upto_lsn, upto_rows, V2)
            .await
            .expect("peek")
            .len()
    };
    assert_eq!(count(None, Some(1)).await, 4, "one whole transaction");
    assert_eq!(count(None, Some(5)).await, 7, "two whole transactions");
    assert_eq!(count(Some(&first_end), None).await, 4);
    // Just past the commit LSN: included.
    let past_commit = lsn_text(lsn(&first_commit) + 1);
    assert_eq!(count(Some(&past_commit), None).await, 4);
    // At the start of its last change (before its commit record): nothing.
    assert_eq!(count(Some(&txns[0][2].lsn), None).await, 0);
}

/// (b) While nothing decodable is written the server's WAL still moves
/// (checkpoints, autovacuum, running-xacts records), and a slot that only
/// peeks stays behind: `pg_current_wal_lsn() - confirmed_flush_lsn` is not
/// a count of pending changes. Advancing an idle slot to
/// `pg_current_wal_lsn()` works and sets `confirmed_flush_lsn` to exactly
/// it; `pg_logical_slot_get_changes` with no rows also moves it to the end
/// of the WAL it read.
#[tokio::test]
async fn an_idle_slot_lags_the_server_until_advanced() {
    let (_pg, client) = server().await;
    let created = create_slot(&client, "s").await;
    client
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
    let current = text(&client, "SELECT pg_current_wal_lsn()::text").await;
    assert!(lsn(&current) > lsn(&created), "{current} <= {created}");
    assert!(peek(&client, "s", V2).await.expect("peek").is_empty());
    assert_eq!(
        confirmed(&client, "s").await.as_deref(),
        Some(created.as_str())
    );

    let reached = text(
        &client,
        &format!("SELECT end_lsn::text FROM pg_replication_slot_advance('s', '{current}')"),
    )
    .await;
    assert_eq!(reached, current);
    assert_eq!(
        confirmed(&client, "s").await.as_deref(),
        Some(current.as_str())
    );
    // Advancing to where it already is: fine, no move.
    let again = text(
        &client,
        &format!("SELECT end_lsn::text FROM pg_replication_slot_advance('s', '{current}')"),
    )
    .await;
    assert_eq!(again, current);

    client
        .batch_execute("CHECKPOINT")
        .await
        .expect("checkpoint");
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_get_changes('s', NULL, NULL, 'format-version', '2')",
            &[],
        )
        .await
        .expect("get changes");
    assert!(rows.is_empty());
    let after_get = confirmed(&client, "s").await.expect("confirmed");
    let end = text(&client, "SELECT pg_current_wal_lsn()::text").await;
    assert!(
        lsn(&after_get) > lsn(&current) && lsn(&after_get) <= lsn(&end),
        "{current} < {after_get} <= {end}"
    );
}

/// The numeric id (`roident`) of origin `name`.
async fn origin_id(client: &Client, name: &str) -> String {
    text(
        client,
        &format!("SELECT roident::text FROM pg_replication_origin WHERE roname = '{name}'"),
    )
    .await
}

/// (c) A session set up with `pg_replication_origin_session_setup` marks
/// its transactions with the origin, and `include-origin` shows it as the
/// origin's numeric id (`roident`), never its name; local transactions
/// show `0`.
#[tokio::test]
async fn origin_sessions_are_marked_by_numeric_id() {
    let (pg, client) = server().await;
    client
        .batch_execute("CREATE TABLE o (id integer PRIMARY KEY, v text)")
        .await
        .expect("create");
    create_slot(&client, "s").await;
    each(
        &client,
        &[
            "SELECT pg_replication_origin_create('tributary_other')",
            "SELECT pg_replication_origin_create('tributary_sink')",
        ],
    )
    .await;
    let sink_id = origin_id(&client, "tributary_sink").await;
    assert_eq!(sink_id, "2");
    let sink = connect(&pg.dsn("app")).await.expect("connect sink");
    sink.batch_execute(
        "SELECT pg_replication_origin_session_setup('tributary_sink'); \
         INSERT INTO o VALUES (2, 'sink')",
    )
    .await
    .expect("sink write");
    client
        .batch_execute("INSERT INTO o VALUES (1, 'local')")
        .await
        .expect("local write");

    let opts = [
        "format-version",
        "2",
        "include-origin",
        "1",
        "add-tables",
        "public.o",
    ];
    let data: Vec<String> = peek(&client, "s", &opts)
        .await
        .expect("peek")
        .into_iter()
        .map(|r| r.data)
        .collect();
    assert_eq!(
        data,
        [
            // The two pg_replication_origin_create transactions.
            r#"{"action":"B","origin":0}"#,
            r#"{"action":"C","origin":0}"#,
            r#"{"action":"B","origin":0}"#,
            r#"{"action":"C","origin":0}"#,
            r#"{"action":"B","origin":2}"#,
            r#"{"action":"I","origin":2,"schema":"public","table":"o","columns":[{"name":"id","type":"integer","value":2},{"name":"v","type":"text","value":"sink"}]}"#,
            r#"{"action":"C","origin":2}"#,
            r#"{"action":"B","origin":0}"#,
            r#"{"action":"I","origin":0,"schema":"public","table":"o","columns":[{"name":"id","type":"integer","value":1},{"name":"v","type":"text","value":"local"}]}"#,
            r#"{"action":"C","origin":0}"#,
        ]
    );
}

/// (c) Filtering: wal2json's `filter-origins` takes numeric origin ids
/// (`atoi`): a name is read as 0 and silently filters nothing; an id drops
/// that origin's transactions whole (no `B`/`C` either). There is no
/// "every non-local origin" switch in wal2json, and PostgreSQL 15's
/// pgoutput has no `origin` option (that is 16+).
#[tokio::test]
async fn filter_origins_takes_ids_and_drops_whole_transactions() {
    let (pg, client) = server().await;
    client
        .batch_execute(
            "CREATE TABLE o (id integer PRIMARY KEY, v text); \
             SELECT pg_replication_origin_create('tributary_sink')",
        )
        .await
        .expect("create");
    create_slot(&client, "s").await;
    let sink_id = origin_id(&client, "tributary_sink").await;
    let sink = connect(&pg.dsn("app")).await.expect("connect sink");
    sink.batch_execute(
        "SELECT pg_replication_origin_session_setup('tributary_sink'); \
         INSERT INTO o VALUES (2, 'sink')",
    )
    .await
    .expect("sink write");
    client
        .batch_execute("INSERT INTO o VALUES (1, 'local')")
        .await
        .expect("local write");

    let ids = |rows: Vec<Row>| -> Vec<(String, i64)> {
        rows.iter()
            .map(|r| {
                let j = r.json();
                let id = j["columns"][0]["value"].as_i64().unwrap_or(0);
                (r.action(), id)
            })
            .collect()
    };
    let by_name = peek(
        &client,
        "s",
        &["format-version", "2", "filter-origins", "tributary_sink"],
    )
    .await
    .expect("peek");
    assert_eq!(
        ids(by_name),
        [("B", 0), ("I", 2), ("C", 0), ("B", 0), ("I", 1), ("C", 0)]
            .map(|(a, i)| (a.to_owned(), i))
    );
    let by_id = peek(
        &client,
        "s",
        &["format-version", "2", "filter-origins", &sink_id],
    )
    .await
    .expect("peek");
    assert_eq!(
        ids(by_id),
        [("B", 0), ("I", 1), ("C", 0)].map(|(a, i)| (a.to_owned(), i))
    );

    // pgoutput on 15: no origin option.
    // (Not in one transaction: a slot cannot be created in a transaction
    // that has written, 25001.)
    let err = sql_error(
        &client,
        "CREATE PUBLICATION p FOR TABLE o; \
         SELECT pg_create_logical_replication_slot('po', 'pgoutput')",
    )
    .await;
    assert_eq!(
        err,
        DbError::new(
            "25001",
            "cannot create logical replication slot in transaction that has performed writes"
        )
    );
    each(
        &client,
        &[
            "CREATE PUBLICATION p FOR TABLE o",
            "SELECT pg_create_logical_replication_slot('po', 'pgoutput')",
        ],
    )
    .await;
    let binary = "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('po', NULL, NULL, \
                  'proto_version', '1', 'publication_names', 'p'";
    client
        .query_one(&format!("{binary})"), &[])
        .await
        .expect("pgoutput without origin");
    let err = sql_error(&client, &format!("{binary}, 'origin', 'none')")).await;
    assert_eq!(
        err,
        DbError::new("XX000", "unrecognized pgoutput option: origin")
    );
}

/// (c) The sink's durable "what I wrote" position: in a session set up
/// with the origin, `pg_replication_origin_xact_setup(lsn, ts)` inside the
/// write's transaction moves the origin's progress when, and only when,
/// that transaction commits (never backwards), and the progress survives a
/// crash. `pg_replication_origin_advance` instead is not transactional (a
/// rollback keeps it) and moves backwards too.
#[tokio::test]
async fn origin_progress_commits_with_the_write_and_survives_a_crash() {
    let (mut pg, client) = server().await;
    client
        .batch_execute(
            "CREATE TABLE o (id integer PRIMARY KEY, v text); \
             SELECT pg_replication_origin_create('tributary_sink')",
        )
        .await
        .expect("create");
    let progress = async |client: &Client| {
        client
            .query_one(
                "SELECT pg_replication_origin_progress('tributary_sink', false)::text, \
                 pg_replication_origin_progress('tributary_sink', true)::text",
                &[],
            )
            .await
            .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, Option<String>>(1)))
            .expect("progress")
    };
    assert_eq!(progress(&client).await, (None, None));

    let mut sink = connect(&pg.dsn("app")).await.expect("connect sink");
    sink.batch_execute("SELECT pg_replication_origin_session_setup('tributary_sink')")
        .await
        .expect("session setup");
    let tx = sink.transaction().await.expect("begin");
    tx.batch_execute(
        "SELECT pg_replication_origin_xact_setup('0/AB00', now()); \
         INSERT INTO o VALUES (1, 'rolled back')",
    )
    .await
    .expect("write");
    tx.rollback().await.expect("rollback");
    assert_eq!(progress(&client).await, (None, None));

    let tx = sink.transaction().await.expect("begin");
    tx.batch_execute(
        "SELECT pg_replication_origin_xact_setup('0/CD00', now()); \
         INSERT INTO o VALUES (1, 'committed')",
    )
    .await
    .expect("write");
    tx.commit().await.expect("commit");
    let at = (Some("0/CD00".to_owned()), Some("0/CD00".to_owned()));
    assert_eq!(progress(&client).await, at);
    assert_eq!(
        text(
            &sink,
            "SELECT pg_replication_origin_session_progress(true)::text"
        )
        .await,
        "0/CD00"
    );
    // A later commit with a lower LSN does not move it back.
    let tx = sink.transaction().await.expect("begin");
    tx.batch_execute(
        "SELECT pg_replication_origin_xact_setup('0/1', now()); \
         INSERT INTO o VALUES (2, 'older')",
    )
    .await
    .expect("write");
    tx.commit().await.expect("commit");
    assert_eq!(progress(&client).await, at);
    // xact_setup needs a session origin.
    let err = sql_error(
        &client,
        "SELECT pg_replication_origin_xact_setup('0/1', now())",
    )
    .await;
    assert_eq!(
        err,
        DbError::new("55000", "no replication origin is configured")
    );

    drop(sink);
    drop(client);
    pg.restart_immediate().expect("crash and restart");
    assert!(
        pg.log().contains("database system was interrupted"),
        "{}",
        pg.log_tail()
    );
    let client = connect(&pg.dsn("app")).await.expect("reconnect");
    assert_eq!(progress(&client).await, at, "progress after crash recovery");
    assert_eq!(
        text(&client, "SELECT string_agg(v, ',' ORDER BY id) FROM o").await,
        "committed,older"
    );

    // pg_replication_origin_advance: outside the transaction's fate, and
    // backwards.
    client
        .batch_execute(
            "BEGIN; SELECT pg_replication_origin_advance('tributary_sink', '0/EF00'); ROLLBACK",
        )
        .await
        .expect("advance in a rolled back transaction");
    assert_eq!(
        progress(&client).await.0.as_deref(),
        Some("0/EF00"),
        "advance survives the rollback"
    );
    client
        .batch_execute("SELECT pg_replication_origin_advance('tributary_sink', '0/10')")
        .await
        .expect("advance backwards");
    assert_eq!(progress(&client).await.0.as_deref(), Some("0/10"));

    let err = sql_error(
        &client,
        "SELECT pg_replication_origin_progress('nope', false)",
    )
    .await;
    assert_eq!(
        err,
        DbError::new("42704", r#"replication origin "nope" does not exist"#)
    );
}

/// (c) One origin, one session: a second session cannot set it up, and it
/// cannot be dropped while in use (55006, naming the holder's PID).
#[tokio::test]
async fn an_origin_is_held_by_one_session() {
    let (pg, client) = server().await;
    client
        .batch_execute("SELECT pg_replication_origin_create('tributary_sink')")
        .await
        .expect("create origin");
    let id = origin_id(&client, "tributary_sink").await;
    let holder = connect(&pg.dsn("app")).await.expect("connect");
    let pid = text(
        &holder,
        "SELECT pg_backend_pid()::text FROM pg_replication_origin_session_setup('tributary_sink')",
    )
    .await;
    let err = sql_error(
        &client,
        "SELECT pg_replication_origin_session_setup('tributary_sink')",
    )
    .await;
    assert_eq!(
        err,
        DbError::new(
            "55006",
            format!("replication origin with ID {id} is already active for PID {pid}")
        )
    );
    let err = sql_error(
        &client,
        "SELECT pg_replication_origin_drop('tributary_sink')",
    )
    .await;
    assert_eq!(
        err,
        DbError::new(
            "55006",
            format!("could not drop replication origin with ID {id}, in use by PID {pid}")
        )
    );
    let err = sql_error(
        &client,
        "SELECT pg_replication_origin_create('tributary_sink')",
    )
    .await;
    assert_eq!(err.code, "23505", "{err:?}");
    // Released with the session (or pg_replication_origin_session_reset).
    holder
        .batch_execute("SELECT pg_replication_origin_session_reset()")
        .await
        .expect("reset");
    client
        .batch_execute("SELECT pg_replication_origin_session_setup('tributary_sink')")
        .await
        .expect("setup after reset");
}

/// (d) Without `REPLICA IDENTITY FULL`: with the default identity an
/// update's `identity` has only the primary key (the old key when it
/// changed) and a delete only the key; `USING INDEX` gives the index's
/// columns; a table with no primary key (default) or with `NOTHING` loses
/// its updates and deletes from the stream altogether — only a WARNING in
/// the server log. `pg_class.relreplident` tells which: `d` default, `f`
/// full, `n` nothing, `i` index.
#[tokio::test]
async fn updates_and_deletes_without_full_identity() {
    let (pg, client) = server().await;
    client
        .batch_execute(
            "CREATE TABLE d_pk (id integer PRIMARY KEY, name text, v integer); \
             CREATE TABLE d_nopk (id integer, name text); \
             CREATE TABLE n_pk (id integer PRIMARY KEY, name text); \
             ALTER TABLE n_pk REPLICA IDENTITY NOTHING; \
             CREATE TABLE i_idx (id integer NOT NULL, name text NOT NULL); \
             CREATE UNIQUE INDEX i_idx_name ON i_idx (name); \
             ALTER TABLE i_idx REPLICA IDENTITY USING INDEX i_idx_name; \
             CREATE TABLE f_pk (id integer PRIMARY KEY, name text); \
             ALTER TABLE f_pk REPLICA IDENTITY FULL",
        )
        .await
        .expect("create");

    let identity = client
        .query(
            "SELECT c.relname::text, c.relreplident::text, \
             EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary) \
             FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
             WHERE s.nspname = 'public' AND c.relkind = 'r' ORDER BY 1",
            &[],
        )
        .await
        .expect("relreplident");
    let identity: Vec<(String, String, bool)> = identity
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        ("d_nopk", "d", false),
        ("d_pk", "d", true),
        ("f_pk", "f", true),
        ("i_idx", "i", false),
        ("n_pk", "n", true),
    ]
    .map(|(t, r, k)| (t.to_owned(), r.to_owned(), k));
    assert_eq!(identity, expected);

    create_slot(&client, "s").await;
    client
        .batch_execute(
            "INSERT INTO d_pk VALUES (1, 'a', 1), (2, 'b', 2); \
             UPDATE d_pk SET name = 'c' WHERE id = 1; \
             UPDATE d_pk SET id = 10 WHERE id = 2; \
             DELETE FROM d_pk WHERE id = 1; \
             INSERT INTO d_nopk VALUES (1, 'a'); UPDATE d_nopk SET name = 'b'; DELETE FROM d_nopk; \
             INSERT INTO n_pk VALUES (1, 'a'); UPDATE n_pk SET name = 'b'; DELETE FROM n_pk; \
             INSERT INTO i_idx VALUES (1, 'a'); UPDATE i_idx SET id = 2; DELETE FROM i_idx",
        )
        .await
        .expect("write");
    let data: Vec<String> = peek(
        &client,
        "s",
        &["format-version", "2", "include-transaction", "0"],
    )
    .await
    .expect("peek")
    .into_iter()
    .map(|r| r.data)
    .collect();
    assert_eq!(
        data,
        [
            r#"{"action":"I","schema":"public","table":"d_pk","columns":[{"name":"id","type":"integer","value":1},{"name":"name","type":"text","value":"a"},{"name":"v","type":"integer","value":1}]}"#,
            r#"{"action":"I","schema":"public","table":"d_pk","columns":[{"name":"id","type":"integer","value":2},{"name":"name","type":"text","value":"b"},{"name":"v","type":"integer","value":2}]}"#,
            r#"{"action":"U","schema":"public","table":"d_pk","columns":[{"name":"id","type":"integer","value":1},{"name":"name","type":"text","value":"c"},{"name":"v","type":"integer","value":1}],"identity":[{"name":"id","type":"integer","value":1}]}"#,
            r#"{"action":"U","schema":"public","table":"d_pk","columns":[{"name":"id","type":"integer","value":10},{"name":"name","type":"text","value":"b"},{"name":"v","type":"integer","value":2}],"identity":[{"name":"id","type":"integer","value":2}]}"#,
            r#"{"action":"D","schema":"public","table":"d_pk","identity":[{"name":"id","type":"integer","value":1}]}"#,
            r#"{"action":"I","schema":"public","table":"d_nopk","columns":[{"name":"id","type":"integer","value":1},{"name":"name","type":"text","value":"a"}]}"#,
            r#"{"action":"I","schema":"public","table":"n_pk","columns":[{"name":"id","type":"integer","value":1},{"name":"name","type":"text","value":"a"}]}"#,
            r#"{"action":"I","schema":"public","table":"i_idx","columns":[{"name":"id","type":"integer","value":1},{"name":"name","type":"text","value":"a"}]}"#,
            r#"{"action":"U","schema":"public","table":"i_idx","columns":[{"name":"id","type":"integer","value":2},{"name":"name","type":"text","value":"a"}],"identity":[{"name":"name","type":"text","value":"a"}]}"#,
            r#"{"action":"D","schema":"public","table":"i_idx","identity":[{"name":"name","type":"text","value":"a"}]}"#,
        ]
    );
    let log = pg.log();
    for warning in [
        r#"WARNING:  no tuple identifier for UPDATE in table "public"."d_nopk""#,
        r#"WARNING:  no tuple identifier for DELETE in table "public"."d_nopk""#,
        r#"WARNING:  no tuple identifier for UPDATE in table "public"."n_pk""#,
        r#"WARNING:  no tuple identifier for DELETE in table "public"."n_pk""#,
    ] {
        assert!(log.contains(warning), "{warning} not in\n{}", pg.log_tail());
    }

    // Switching to FULL takes effect for changes after it.
    client
        .batch_execute("ALTER TABLE d_pk REPLICA IDENTITY FULL")
        .await
        .expect("alter");
    assert_eq!(
        text(
            &client,
            "SELECT relreplident::text FROM pg_class WHERE oid = 'public.d_pk'::regclass"
        )
        .await,
        "f"
    );
}

/// A `pg_recvlogical` streaming `slot` (another consumer); killed on drop.
struct Streamer(Child);

impl Streamer {
    fn start(pg: &Postgres, slot: &str) -> Streamer {
        let child = Command::new(tool("pg_recvlogical").expect("pg_recvlogical"))
            .args(["--no-loop", "--start", "--file", "-", "--slot", slot])
            .args(["--option", "format-version=2", "--dbname"])
            .arg(pg.dsn("app"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pg_recvlogical");
        Streamer(child)
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (e) A slot another process is streaming cannot be peeked, advanced or
/// dropped: 55006 `replication slot "s" is active for PID n` (n the
/// walsender's PID); it is free again once that process is gone. A dropped
/// slot: 42704 `replication slot "s" does not exist`; creating an existing
/// one: 42710; a slot of another database: 55000.
#[tokio::test]
async fn busy_dropped_and_foreign_slots() {
    let (pg, client) = server().await;
    create_slot(&client, "s").await;
    let streamer = Streamer::start(&pg, "s");
    let pid = wait_slot_active(&client, "s").await;
    let busy = DbError::new(
        "55006",
        format!(r#"replication slot "s" is active for PID {pid}"#),
    );
    assert_eq!(peek(&client, "s", V2).await.expect_err("busy"), busy);
    assert_eq!(
        sql_error(
            &client,
            "SELECT pg_replication_slot_advance('s', pg_current_wal_lsn())"
        )
        .await,
        busy
    );
    assert_eq!(
        sql_error(&client, "SELECT pg_drop_replication_slot('s')").await,
        busy
    );

    drop(streamer);
    wait_slot_released(&client, "s").await;
    assert!(peek(&client, "s", V2).await.expect("peek").is_empty());
    assert_eq!(
        sql_error(
            &client,
            "SELECT pg_create_logical_replication_slot('s', 'wal2json')"
        )
        .await,
        DbError::new("42710", r#"replication slot "s" already exists"#)
    );
    client
        .batch_execute("SELECT pg_drop_replication_slot('s')")
        .await
        .expect("drop");
    let missing = DbError::new("42704", r#"replication slot "s" does not exist"#);
    assert_eq!(peek(&client, "s", V2).await.expect_err("dropped"), missing);
    assert_eq!(
        sql_error(
            &client,
            "SELECT pg_replication_slot_advance('s', pg_current_wal_lsn())"
        )
        .await,
        missing
    );
    assert_eq!(
        sql_error(&client, "SELECT pg_drop_replication_slot('s')").await,
        missing
    );

    // Slots belong to one database.
    let other = connect(&pg.dsn("postgres"))
        .await
        .expect("connect postgres");
    create_slot(&other, "elsewhere").await;
    assert_eq!(
        peek(&client, "elsewhere", V2).await.expect_err("foreign"),
        DbError::new(
            "55000",
            r#"replication slot "elsewhere" was not created in this database"#
        )
    );
}

/// (e) Creating a logical slot waits for every transaction that holds an
/// xid to end (it needs a consistent snapshot); meanwhile the slot exists,
/// is active for the creating session and has no `confirmed_flush_lsn`, so
/// a peek from another session gets 55006.
#[tokio::test]
async fn slot_creation_waits_for_open_transactions() {
    let (pg, client) = server().await;
    client
        .batch_execute("CREATE TABLE e (id integer PRIMARY KEY)")
        .await
        .expect("create");
    let mut writer = connect(&pg.dsn("app")).await.expect("connect writer");
    let open = writer.transaction().await.expect("begin");
    open.batch_execute("INSERT INTO e VALUES (1)")
        .await
        .expect("insert");

    let creator = connect(&pg.dsn("app")).await.expect("connect creator");
    let creator_pid = text(&creator, "SELECT pg_backend_pid()::text").await;
    let creating = tokio::spawn(async move {
        creator
            .query_one(
                "SELECT lsn::text FROM pg_create_logical_replication_slot('s', 'wal2json')",
                &[],
            )
            .await
            .map(|r| r.get::<_, String>(0))
    });
    let pid = wait_slot_active(&client, "s").await;
    assert_eq!(pid.to_string(), creator_pid);
    let waiting = wait_for("the creator waiting on the open transaction", async || {
        let row = client
            .query_one(
                "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(|e| e.to_string())?;
        let state: (Option<String>, Option<String>) = (row.get(0), row.get(1));
        match &state {
            (Some(kind), Some(event)) if kind == "Lock" && event == "transactionid" => {
                Ok(Some(state))
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(waiting.1.as_deref(), Some("transactionid"));
    assert_eq!(confirmed(&client, "s").await, None);
    assert_eq!(
        peek(&client, "s", V2).await.expect_err("being created"),
        DbError::new(
            "55006",
            format!(r#"replication slot "s" is active for PID {pid}"#)
        )
    );
    assert!(!creating.is_finished());

    open.commit().await.expect("commit");
    let created = creating
        .await
        .expect("creator task")
        .expect("slot created after the commit");
    assert_eq!(confirmed(&client, "s").await, Some(created));
    // The transaction that was open committed before the slot's start:
    // not decoded.
    assert!(peek(&client, "s", V2).await.expect("peek").is_empty());
}
