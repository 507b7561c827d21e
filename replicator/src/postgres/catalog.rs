//! What the sidecar needs to know about a table, read from the catalog at
//! start-up and checked against the `[[tables]]` schema: its columns and
//! their types, its primary key (the item key), and its replica identity
//! (`FULL`, so updates and deletes carry the old row).

use std::collections::BTreeMap;

use tokio_postgres::Client;
use tributary_engine::schema::TableSchema;

use super::types::kind_of;
use super::{describe, quote_ident};

/// One table's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// `"schema"."table"`, quoted.
    pub qualified: String,
    /// `schema.table`, as wal2json's `add-tables` takes it.
    pub dotted: String,
    /// Column → its `format_type` name.
    pub columns: BTreeMap<String, String>,
    /// The primary key's columns, in key order.
    pub primary_key: Vec<String>,
    /// `REPLICA IDENTITY FULL`.
    pub replica_full: bool,
}

/// Reads `table` (`name` or `schema.name`; schema `public` by default).
pub async fn load(client: &Client, table: &str) -> Result<TableInfo, String> {
    let (schema, name) = table.split_once('.').unwrap_or(("public", table));
    let rows = client
        .query(
            "SELECT c.oid::bigint, c.relreplident::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await
        .map_err(|e| format!("reading the catalog: {}", describe(&e)))?;
    let row = rows
        .first()
        .ok_or_else(|| format!("table {schema}.{name} does not exist"))?;
    let oid: i64 = row.get(0);
    let replident: String = row.get(1);
    let columns = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1::bigint::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| format!("reading the columns: {}", describe(&e)))?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    let primary_key = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1::bigint::oid AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| format!("reading the primary key: {}", describe(&e)))?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    Ok(TableInfo {
        qualified: format!("{}.{}", quote_ident(schema), quote_ident(name)),
        dotted: format!("{schema}.{name}"),
        columns,
        primary_key,
        replica_full: replident == "f",
    })
}

impl TableInfo {
    /// Why this table cannot be replicated under `schema`, in words naming
    /// the fix; `None` when it can. `need_old_rows`: a source needs the old
    /// row of updates and deletes (`REPLICA IDENTITY FULL`).
    pub fn problem(&self, schema: &TableSchema, need_old_rows: bool) -> Option<String> {
        let wanted: Vec<&str> = std::iter::once(schema.partition_key().as_str())
            .chain(schema.sort_key().map(|k| k.as_str()))
            .collect();
        if self.primary_key.is_empty() {
            return Some(format!(
                "table {} has no primary key; the item key is its primary key: ALTER TABLE {} ADD PRIMARY KEY ({});",
                self.dotted,
                self.qualified,
                wanted.join(", ")
            ));
        }
        if self.primary_key != wanted {
            return Some(format!(
                "table {}'s primary key is ({}) but [[tables]] {} names ({}) as partition_key/sort_key; make them the same",
                self.dotted,
                self.primary_key.join(", "),
                schema.name(),
                wanted.join(", ")
            ));
        }
        if need_old_rows && !self.replica_full {
            return Some(format!(
                "table {} does not log old rows; run: ALTER TABLE {} REPLICA IDENTITY FULL;",
                self.dotted, self.qualified
            ));
        }
        for (column, sql_type) in &self.columns {
            if kind_of(sql_type).is_none() {
                return Some(format!(
                    "column {column} of {} has type {sql_type}, which cannot be mapped to an attribute value (see the type mapping in the README)",
                    self.dotted
                ));
            }
        }
        None
    }
}
