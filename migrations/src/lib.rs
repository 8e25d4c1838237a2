//! Warden's schema. Every migration uses only portable sea-query DDL, so the same
//! code path serves SQLite (the embedded default) and PostgreSQL (production).
//!
//! Timestamps are stored as `BIGINT` milliseconds since the Unix epoch (UTC): they compare,
//! sort and round-trip identically on both databases, which the audit hash chain relies on.

pub use sea_orm_migration::prelude::*;

mod columns;
mod fill;
mod m20261128_000001_initial;
mod m20261128_000002_clusters;
mod m20261128_000003_kubeconfig;
mod m20261130_000004_session_generation;
mod m20261130_000005_terminal_limits;
mod m20261201_000001_binding_expiry;
mod m20261201_000002_identity_providers;
mod m20261201_000003_mfa;
mod m20261202_000001_agent_keys;
mod m20261202_000002_sign_in_policy;
mod m20261203_000001_audit_retention;
mod m20261203_000002_siem_cursor;
mod m20261203_000003_webhook_outbox;
mod m20261205_000001_audit_search;
mod m20261206_000001_replicas;
mod m20261208_000001_agent_challenges;
mod m20261209_000001_terminal_recordings;
mod m20261209_000002_rate_limits;
mod m20261210_000001_audit_rollup;
mod m20261211_000001_org_scale_indexes;
mod m20261212_000001_audit_rollup_slices;
mod m20261213_000001_audit_rollup_spans;
mod m20261213_000002_audit_rollup_resource_status;
mod m20261214_000001_audit_hour_seqs;
mod m20261214_000002_audit_rollup_action;
mod m20261215_000001_audit_fts_trigrams;
mod m20261216_000001_live_streams;
mod m20261216_000002_read_only_credentials;
mod m20261217_000001_audit_seals;
mod m20261218_000001_credential_api_key;
mod m20261219_000001_credentials_set_by;
mod m20261220_000001_key_check;
mod m20261221_000001_data_key;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_initial::Migration),
            Box::new(m20261128_000002_clusters::Migration),
            Box::new(m20261128_000003_kubeconfig::Migration),
            Box::new(m20261130_000004_session_generation::Migration),
            Box::new(m20261130_000005_terminal_limits::Migration),
            Box::new(m20261201_000001_binding_expiry::Migration),
            Box::new(m20261201_000002_identity_providers::Migration),
            Box::new(m20261201_000003_mfa::Migration),
            Box::new(m20261202_000001_agent_keys::Migration),
            Box::new(m20261202_000002_sign_in_policy::Migration),
            Box::new(m20261203_000001_audit_retention::Migration),
            Box::new(m20261203_000002_siem_cursor::Migration),
            Box::new(m20261203_000003_webhook_outbox::Migration),
            Box::new(m20261205_000001_audit_search::Migration),
            Box::new(m20261206_000001_replicas::Migration),
            Box::new(m20261208_000001_agent_challenges::Migration),
            Box::new(m20261209_000001_terminal_recordings::Migration),
            Box::new(m20261209_000002_rate_limits::Migration),
            Box::new(m20261210_000001_audit_rollup::Migration),
            Box::new(m20261211_000001_org_scale_indexes::Migration),
            Box::new(m20261212_000001_audit_rollup_slices::Migration),
            Box::new(m20261213_000001_audit_rollup_spans::Migration),
            Box::new(m20261213_000002_audit_rollup_resource_status::Migration),
            Box::new(m20261214_000001_audit_hour_seqs::Migration),
            Box::new(m20261214_000002_audit_rollup_action::Migration),
            Box::new(m20261215_000001_audit_fts_trigrams::Migration),
            Box::new(m20261216_000001_live_streams::Migration),
            Box::new(m20261216_000002_read_only_credentials::Migration),
            Box::new(m20261217_000001_audit_seals::Migration),
            Box::new(m20261218_000001_credential_api_key::Migration),
            Box::new(m20261219_000001_credentials_set_by::Migration),
            Box::new(m20261220_000001_key_check::Migration),
            Box::new(m20261221_000001_data_key::Migration),
        ]
    }
}
