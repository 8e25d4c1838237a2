//! The handle every transport holds: database, clock, audit sink, access policy.

use sea_orm::DatabaseConnection;
use std::sync::Arc;

use crate::access::AccessPolicy;
use crate::audit::SharedAuditSink;
use crate::clock::SharedClock;

pub struct Services {
    pub db: DatabaseConnection,
    pub clock: SharedClock,
    pub audit: SharedAuditSink,
    pub policy: AccessPolicy,
    /// The URL browsers use (`WARDEN_PUBLIC_URL`), for links such as set-password.
    pub public_url: String,
    /// The cluster feature's settings and the server's live tunnels, set at start-up.
    pub clusters: crate::clusters::ClusterHooks,
    /// The server's registry of live streams and terminals, set at start-up.
    pub streams: crate::streams::StreamHooks,
    /// Reads on clusters as a user (the pod picker), set at start-up.
    pub cluster_reads: crate::clusters::reads::ClusterReadHooks,
    /// Single sign-on: the master key's sealer (set at start-up) and the providers' cache.
    pub sso: crate::identity::sso::SsoHooks,
    /// Just-in-time access: the webhook notifier, set at start-up.
    pub jit: crate::admin::access_requests::JitHooks,
    /// Unauthenticated refusals: counted, and sampled into the audit log.
    pub refusals: crate::audit::RefusalSampler,
    /// Audit retention: the key that signs checkpoints, set at start-up.
    pub retention: crate::audit::retention::RetentionHooks,
    /// Whether this process runs the background jobs now.
    pub jobs: JobLease,
    /// The `wardenctl` builds this Warden serves, their directory set at start-up.
    pub cli: Arc<crate::kubectl::downloads::CliDownloads>,
}

/// Background jobs (grant expiry, the sweepers, audit retention, SIEM streaming, webhook
/// delivery) run in one process at a time: always in a single process (SQLite); with replicas
/// on PostgreSQL, in the one holding the jobs' advisory lock (the server takes it at start and
/// keeps it on a connection of its own; another replica takes it over when that one dies).
#[derive(Debug, Default)]
pub struct JobLease {
    held: std::sync::atomic::AtomicBool,
    runs: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl JobLease {
    pub fn new(held: bool) -> Self {
        Self {
            held: std::sync::atomic::AtomicBool::new(held),
            runs: Default::default(),
        }
    }

    pub fn held(&self) -> bool {
        self.held.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_held(&self, held: bool) {
        self.held.store(held, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether `job` runs a pass now (while the lease is held); the pass is counted.
    pub fn run(&self, job: &'static str) -> bool {
        if !self.held() {
            return false;
        }
        if let Ok(mut m) = self.runs.lock() {
            *m.entry(job).or_default() += 1;
        }
        true
    }

    /// The passes each job ran in this process.
    pub fn runs(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.runs.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl Services {
    /// The sealer of secrets at rest (from the master key), set at start-up.
    pub fn at_rest(&self) -> Option<&crate::secrets::Sealer> {
        self.sso.sealer()
    }

    pub fn new(
        db: DatabaseConnection,
        clock: SharedClock,
        audit: SharedAuditSink,
        public_url: String,
    ) -> Arc<Self> {
        let policy = AccessPolicy::new(db.clone(), audit.clone(), clock.clone());
        // On PostgreSQL, replicas may share the database: the jobs wait for the lease.
        let jobs = JobLease::new(
            sea_orm::ConnectionTrait::get_database_backend(&db)
                != sea_orm::DatabaseBackend::Postgres,
        );
        Arc::new(Self {
            jobs,
            db,
            clock,
            audit,
            policy,
            public_url,
            clusters: Default::default(),
            streams: Default::default(),
            cluster_reads: Default::default(),
            sso: Default::default(),
            jit: Default::default(),
            refusals: Default::default(),
            retention: Default::default(),
            cli: Default::default(),
        })
    }

    /// Audit an event through the refusal sampler when it is an unauthenticated refusal
    /// (counted, and written in full while its window has room), as is otherwise.
    pub async fn record_refusal(&self, ev: crate::audit::AuditEvent) -> crate::DomainResult<()> {
        use crate::audit::RefusalSampler;
        let events = if RefusalSampler::applies_to(&ev) {
            self.refusals.admit(ev, self.clock.now())
        } else {
            vec![ev]
        };
        self.audit.record_many(events).await
    }

    /// Write the summaries of sampling windows that have ended.
    pub async fn flush_refusals(&self) -> crate::DomainResult<()> {
        let due = self.refusals.due(self.clock.now());
        self.audit.record_many(due).await
    }

    pub fn set_password_url(&self, token: &str) -> String {
        format!(
            "{}/set-password?token={}",
            self.public_url.trim_end_matches('/'),
            token
        )
    }
}
