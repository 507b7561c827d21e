//! [`NodeConfig::explain`]: the configuration in words, with every effective
//! value (defaults included and marked), as `replicator check-config` prints
//! it.

use std::fmt::Write as _;

use super::{NodeConfig, ShippingConfig, StorageConfig};

impl NodeConfig {
    /// A human summary: the node, its peers, each table with the policy of
    /// each configured attribute, and every storage and shipping value in
    /// effect, defaults marked `(default)`.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_explanation(&mut out);
        out
    }

    fn write_explanation(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "node")?;
        writeln!(out, "  region          {}", self.region)?;
        writeln!(out, "  cluster         {}", self.cluster)?;
        writeln!(out, "  data_dir        {}", self.data_dir.display())?;
        writeln!(
            out,
            "  listen          {}  (gRPC: peers and admin API)",
            self.listen
        )?;
        match self.metrics_listen {
            Some(m) => writeln!(out, "  metrics_listen  {m}  (Prometheus /metrics)")?,
            None => writeln!(out, "  metrics_listen  none  (no /metrics endpoint)")?,
        }

        writeln!(out)?;
        if self.peers.is_empty() {
            writeln!(
                out,
                "peers: none (this region runs alone; local writes are not shipped)"
            )?;
        } else {
            writeln!(out, "peers ({})", self.peers.len())?;
            let width = self
                .peers
                .iter()
                .map(|p| p.region.as_str().len())
                .max()
                .unwrap_or(0);
            for p in &self.peers {
                writeln!(out, "  {:width$}  {}", p.region.as_str(), p.endpoint)?;
            }
        }

        writeln!(out)?;
        if self.tables.is_empty() {
            writeln!(out, "tables: none (no local table is replicated)")?;
        } else {
            writeln!(out, "tables ({})", self.tables.len())?;
        }
        for t in &self.tables {
            writeln!(out, "  {}", t.name)?;
            match &t.sort_key {
                Some(sk) => writeln!(
                    out,
                    "    key: partition {}, sort {}",
                    t.partition_key.as_str(),
                    sk.as_str()
                )?,
                None => writeln!(out, "    key: partition {}", t.partition_key.as_str())?,
            }
            for (_, policy, attrs) in t.policy_lists() {
                for a in attrs {
                    writeln!(out, "    {}: {}", a.as_str(), policy.name())?;
                }
            }
            writeln!(out, "    every other attribute: lww")?;
        }

        writeln!(out)?;
        if self.sources.is_empty() {
            writeln!(out, "sources: the admin API's write call only")?;
        } else {
            writeln!(
                out,
                "sources ({}; the admin API's write call too)",
                self.sources.len()
            )?;
            for s in &self.sources {
                let from = match s {
                    super::SourceConfig::DynamodbStreams(_) => "its DynamoDB stream".to_owned(),
                    super::SourceConfig::Kinesis(k) => format!("Kinesis stream {}", k.stream),
                    super::SourceConfig::Postgres(p) => {
                        format!("logical decoding slot {} ({})", p.slot, p.dsn)
                    }
                };
                let at = s
                    .endpoint()
                    .map(|e| {
                        format!(
                            " in {}{}",
                            e.aws_region,
                            e.endpoint_url
                                .map(|u| format!(" at {u}"))
                                .unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                writeln!(out, "  {} {}  from {from}{at}", s.kind(), s.table())?;
            }
        }
        if self.sinks.is_empty() {
            writeln!(out, "sinks: none (merged results are kept in the log only)")?;
        } else {
            writeln!(out, "sinks ({})", self.sinks.len())?;
            for s in &self.sinks {
                let d = match s {
                    super::SinkConfig::Dynamodb(d) => d,
                    super::SinkConfig::Postgres(p) => {
                        writeln!(
                            out,
                            "  postgres {}  ({})  replication origin {}",
                            p.table,
                            p.dsn,
                            p.origin_name()
                        )?;
                        continue;
                    }
                };
                writeln!(
                    out,
                    "  dynamodb {}  in {}{}  marker attribute {}",
                    d.table,
                    d.aws_region,
                    d.endpoint_url
                        .as_ref()
                        .map(|u| format!(" at {u}"))
                        .unwrap_or_default(),
                    d.marker_attribute.as_str()
                )?;
            }
        }

        writeln!(out)?;
        writeln!(out, "[storage]")?;
        write_section(
            out,
            &self.storage.entries(),
            &StorageConfig::default().entries(),
        )?;
        writeln!(out)?;
        writeln!(out, "[shipping]")?;
        write_section(
            out,
            &self.shipping.entries(),
            &ShippingConfig::default().entries(),
        )
    }
}

fn write_section(
    out: &mut String,
    entries: &[(&'static str, String)],
    defaults: &[(&'static str, String)],
) -> std::fmt::Result {
    let width = entries.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in entries {
        let is_default = defaults.iter().any(|(k, v)| k == key && v == value);
        let mark = if is_default { "  (default)" } else { "" };
        writeln!(out, "  {key:width$} = {value}{mark}")?;
    }
    Ok(())
}
