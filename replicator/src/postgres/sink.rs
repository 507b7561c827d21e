//! `kind = "postgres"` sink: writes merged results back to a table, in a
//! session tagged with the sink's replication origin (the source skips the
//! origin's rows: no echo).
//!
//! Per item, from one consistent read of the merged state and the table
//! image (the table's row as of the latest change the source read):
//! - no merged item, a row → `DELETE … WHERE` the row still is the image;
//! - a merged item, no row → `INSERT … ON CONFLICT DO NOTHING`;
//! - both → `UPDATE … SET` each column that differs — a counter as
//!   `col = coalesce(col, 0) + delta`, any other column as its merged value
//!   (a set as the array of its elements), a column the merged item lacks
//!   as NULL — `WHERE` every column it sets still holds the image's value.
//!
//! Those conditions are the compare-and-swap that makes a write retried
//! after a crash (its change not yet read back by the source) touch no row
//! instead of adding a counter twice, and that keeps a concurrent local
//! write from being overwritten: no row matched is a conflict, retried once
//! the source has read the table's latest change. A value that does not fit
//! its column, or an attribute the table has no column for, dead-letters
//! the item.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use tributary_engine::key::ItemKey;
use tributary_engine::schema::{MergePolicy, TableSchema};
use tributary_engine::value::{AttrValue, Number, Scalar};

use super::catalog::{self, TableInfo};
use super::types::{kind_of, to_sql_text};
use super::{connect, describe, quote_ident};
use crate::config::PostgresSinkConfig;
use crate::node::Core;
use crate::sidecar::sink_loop::{self, ItemWriter, Outcome, SinkSettings};

/// The writer of one table.
struct Sink {
    config: PostgresSinkConfig,
    schema: TableSchema,
    core: Arc<Core>,
    /// The tagged session and the table's facts, once connected.
    session: Mutex<Option<(Client, TableInfo)>>,
}

/// Runs the PostgreSQL sink of `config.table` until the node shuts down.
pub async fn run(core: Arc<Core>, config: PostgresSinkConfig, schema: TableSchema) {
    let settings = SinkSettings {
        id: format!("sink:postgres:{}", config.table),
        schema: schema.clone(),
        retry_backoff_initial: config.retry_backoff_initial,
        retry_backoff_max: config.retry_backoff_max,
        // One session, one write at a time (the origin is per session).
        concurrency: 1,
    };
    let writer = Arc::new(Sink {
        config,
        schema,
        core: Arc::clone(&core),
        session: Mutex::new(None),
    });
    sink_loop::run(core, settings, writer).await;
}

impl ItemWriter for Sink {
    async fn write(&self, key: &ItemKey) -> Outcome {
        let mut session = self.session.lock().await;
        if session.as_ref().is_none_or(|(c, _)| c.is_closed()) {
            match self.open().await {
                Ok(s) => *session = Some(s),
                Err(e) => return Outcome::Retry(e),
            }
        }
        let Some((client, info)) = session.as_ref() else {
            return Outcome::Retry("no session".to_owned());
        };
        self.write_item(client, info, key).await
    }
}

impl Sink {
    /// Connects, checks the table and tags the session with the origin.
    async fn open(&self) -> Result<(Client, TableInfo), String> {
        let client = connect(&self.config.dsn).await?;
        let info = catalog::load(&client, self.config.table.as_str()).await?;
        if let Some(problem) = info.problem(&self.schema, false) {
            return Err(problem);
        }
        let origin = self.config.origin_name();
        client
            .query(
                "SELECT pg_replication_origin_create($1) WHERE NOT EXISTS \
                 (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
                &[&origin],
            )
            .await
            .map_err(|e| format!("creating replication origin {origin}: {}", describe(&e)))?;
        client
            .query("SELECT pg_replication_origin_session_setup($1)", &[&origin])
            .await
            .map_err(|e| format!("tagging the session with origin {origin}: {}", describe(&e)))?;
        Ok((client, info))
    }

    async fn write_item(&self, client: &Client, info: &TableInfo, key: &ItemKey) -> Outcome {
        let (merged, image) = match sink_loop::read_item(&self.core, key).await {
            Ok(read) => read,
            Err(outcome) => return outcome,
        };
        let merged = merged.map(|m| {
            m.into_iter()
                .map(|(k, v)| (k.as_str().to_owned(), v))
                .collect::<BTreeMap<String, AttrValue>>()
        });
        let statement = match plan(
            &self.schema,
            info,
            key,
            merged.as_ref(),
            image.attrs.as_ref(),
        ) {
            Ok(Some(s)) => s,
            Ok(None) => return Outcome::Done,
            Err(reason) => return Outcome::Dead(reason),
        };
        let params: Vec<&(dyn ToSql + Sync)> = statement
            .params
            .iter()
            .map(|p| p as &(dyn ToSql + Sync))
            .collect();
        match client.execute(statement.sql.as_str(), &params).await {
            Ok(0) => Outcome::Conflict,
            Ok(_) => {
                crate::crash::point("postgres-sink-after-commit");
                self.core.sidecar.sink_outcome(
                    &format!("sink:postgres:{}", self.config.table),
                    "written",
                    None,
                );
                Outcome::Done
            }
            Err(e) => {
                let text = describe(&e);
                match e.code().map(|c| c.code()) {
                    // Data exceptions and integrity violations: the value
                    // does not fit; retrying gives the same answer.
                    Some(code) if code.starts_with("22") || code.starts_with("23") => {
                        Outcome::Dead(text)
                    }
                    _ => Outcome::Retry(text),
                }
            }
        }
    }
}

/// A statement and its text parameters (`None` = NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The SQL, with `$n::text::TYPE` placeholders.
    pub sql: String,
    /// The parameters.
    pub params: Vec<Option<String>>,
}

struct Builder<'a> {
    info: &'a TableInfo,
    params: Vec<Option<String>>,
}

impl Builder<'_> {
    fn column_type(&self, column: &str) -> Result<&str, String> {
        self.info
            .columns
            .get(column)
            .map(String::as_str)
            .ok_or_else(|| {
                format!(
                    "attribute {column} has no column in table {}",
                    self.info.dotted
                )
            })
    }

    /// `$n::text::TYPE` for `value` (`None`: NULL).
    fn param(&mut self, column: &str, value: Option<&AttrValue>) -> Result<String, String> {
        let sql_type = self.column_type(column)?.to_owned();
        let kind = kind_of(&sql_type)
            .ok_or_else(|| format!("column {column} ({sql_type}) cannot be written"))?;
        let text = value
            .map(|v| to_sql_text(v, kind).map_err(|e| format!("column {column} ({sql_type}): {e}")))
            .transpose()?;
        self.params.push(text);
        Ok(format!("${}::text::{sql_type}", self.params.len()))
    }

    /// `col IS NOT DISTINCT FROM $n…` for the image's value.
    fn holds(&mut self, column: &str, value: Option<&AttrValue>) -> Result<String, String> {
        let p = self.param(column, value)?;
        Ok(format!("{} IS NOT DISTINCT FROM {p}", quote_ident(column)))
    }

    fn key_condition(
        &mut self,
        schema: &TableSchema,
        key: &ItemKey,
    ) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let parts = std::iter::once((schema.partition_key(), key.partition()))
            .chain(schema.sort_key().zip(key.sort()));
        for (name, scalar) in parts {
            let value = scalar_value(scalar);
            let p = self.param(name.as_str(), Some(&value))?;
            out.push(format!("{} = {p}", quote_ident(name.as_str())));
        }
        Ok(out)
    }
}

fn scalar_value(s: &Scalar) -> AttrValue {
    s.clone().into_value()
}

/// The statement that makes the row hold `merged`, given the `image` of the
/// row (see the module docs); `None` when nothing differs.
pub fn plan(
    schema: &TableSchema,
    info: &TableInfo,
    key: &ItemKey,
    merged: Option<&BTreeMap<String, AttrValue>>,
    image: Option<&BTreeMap<String, AttrValue>>,
) -> Result<Option<Statement>, String> {
    let mut b = Builder {
        info,
        params: Vec::new(),
    };
    let table = &info.qualified;
    let sql = match (merged, image) {
        (None, None) => return Ok(None),
        (None, Some(image)) => {
            let mut conditions = b.key_condition(schema, key)?;
            for (column, value) in image {
                conditions.push(b.holds(column, Some(value))?);
            }
            format!("DELETE FROM {table} WHERE {}", conditions.join(" AND "))
        }
        (Some(merged), None) => {
            let mut columns = Vec::new();
            let mut values = Vec::new();
            let parts = std::iter::once((schema.partition_key(), key.partition()))
                .chain(schema.sort_key().zip(key.sort()));
            for (name, scalar) in parts {
                columns.push(quote_ident(name.as_str()));
                values.push(b.param(name.as_str(), Some(&scalar_value(scalar)))?);
            }
            for (column, value) in merged {
                columns.push(quote_ident(column));
                values.push(b.param(column, Some(value))?);
            }
            format!(
                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                columns.join(", "),
                values.join(", ")
            )
        }
        (Some(merged), Some(image)) => {
            let mut sets = Vec::new();
            let mut conditions = b.key_condition(schema, key)?;
            let names: std::collections::BTreeSet<&String> =
                merged.keys().chain(image.keys()).collect();
            for column in names {
                let (m, i) = (merged.get(column), image.get(column));
                if m == i {
                    continue;
                }
                let policy = tributary_engine::ids::AttrName::new(column.as_str())
                    .map(|a| schema.policy(&a))
                    .map_err(|e| format!("attribute {column}: {e}"))?;
                let ident = quote_ident(column);
                match (policy, m) {
                    // A counter is absent until its first non-zero change:
                    // absent and 0 are the same count.
                    (MergePolicy::Counter, _) => {
                        let zero = AttrValue::N(Number::from_i128(0));
                        let delta = counter_delta(column, m.unwrap_or(&zero), i)?;
                        if delta.to_i128() == Some(0) {
                            continue;
                        }
                        let p = b.param(column, Some(&AttrValue::N(delta)))?;
                        sets.push(format!("{ident} = coalesce({ident}, 0) + {p}"));
                    }
                    (_, value) => {
                        let p = b.param(column, value)?;
                        sets.push(format!("{ident} = {p}"));
                    }
                }
                conditions.push(b.holds(column, i)?);
            }
            if sets.is_empty() {
                return Ok(None);
            }
            format!(
                "UPDATE {table} SET {} WHERE {}",
                sets.join(", "),
                conditions.join(" AND ")
            )
        }
    };
    Ok(Some(Statement {
        sql,
        params: b.params,
    }))
}

fn counter_delta(
    column: &str,
    merged: &AttrValue,
    image: Option<&AttrValue>,
) -> Result<Number, String> {
    let int = |v: &AttrValue| match v {
        AttrValue::N(n) => n
            .to_i128()
            .ok_or_else(|| format!("counter {column} holds {n}, not an integer")),
        other => Err(format!("counter {column} holds a {}", other.type_name())),
    };
    let m = int(merged)?;
    let i = image.map(int).transpose()?.unwrap_or(0);
    Number::try_from_i128(m - i)
        .ok_or_else(|| format!("counter {column}: the delta is out of range"))
}

#[cfg(test)]
mod tests {
    use tributary_engine::ids::{AttrName, TableName};

    use super::*;

    fn schema() -> TableSchema {
        let a = |s: &str| AttrName::new(s).expect("name");
        TableSchema::new(TableName::new("carts").expect("t"), a("pk"), None)
            .expect("schema")
            .with_policy(a("qty"), MergePolicy::Counter)
            .expect("counter")
    }

    fn info() -> TableInfo {
        TableInfo {
            qualified: "\"public\".\"carts\"".into(),
            dotted: "public.carts".into(),
            columns: [("pk", "text"), ("qty", "integer"), ("note", "text")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect(),
            primary_key: vec!["pk".into()],
            replica_full: true,
        }
    }

    fn key() -> ItemKey {
        ItemKey::new(
            TableName::new("carts").expect("t"),
            Scalar::S("u1".into()),
            None,
        )
        .expect("key")
    }

    fn doc(pairs: &[(&str, AttrValue)]) -> BTreeMap<String, AttrValue> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn n(v: i128) -> AttrValue {
        AttrValue::N(Number::from_i128(v))
    }

    #[test]
    fn a_counter_is_an_increment_conditioned_on_the_image() {
        let merged = doc(&[("qty", n(8)), ("note", AttrValue::S("x".into()))]);
        let image = doc(&[("qty", n(5)), ("note", AttrValue::S("x".into()))]);
        let s = plan(&schema(), &info(), &key(), Some(&merged), Some(&image))
            .expect("plans")
            .expect("a write");
        assert_eq!(
            s.sql,
            "UPDATE \"public\".\"carts\" SET \"qty\" = coalesce(\"qty\", 0) + $2::text::integer \
             WHERE \"pk\" = $1::text::text AND \"qty\" IS NOT DISTINCT FROM $3::text::integer"
        );
        assert_eq!(
            s.params,
            [Some("u1".into()), Some("3".into()), Some("5".into())]
        );
    }

    #[test]
    fn inserts_deletes_and_unknown_columns() {
        let merged = doc(&[("qty", n(2))]);
        let s = plan(&schema(), &info(), &key(), Some(&merged), None)
            .expect("plans")
            .expect("a write");
        assert!(s.sql.starts_with("INSERT INTO"), "{}", s.sql);
        assert!(s.sql.ends_with("ON CONFLICT DO NOTHING"), "{}", s.sql);
        let s = plan(&schema(), &info(), &key(), None, Some(&merged))
            .expect("plans")
            .expect("a write");
        assert!(s.sql.starts_with("DELETE FROM"), "{}", s.sql);
        let same = plan(&schema(), &info(), &key(), Some(&merged), Some(&merged)).expect("plans");
        assert_eq!(same, None, "nothing differs");
        let odd = doc(&[("color", AttrValue::S("red".into()))]);
        let err = plan(&schema(), &info(), &key(), Some(&odd), None).expect_err("no column");
        assert!(err.contains("has no column"), "{err}");
    }
}
