//! `replctl`, the operators' client of the node's admin API; built by the replicator issue.
