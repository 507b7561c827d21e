//! Tributary's wire protocol (peer delta shipping and the admin API); the generated code arrives with the replicator issue.
