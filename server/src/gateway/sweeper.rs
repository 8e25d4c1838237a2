//! Removes per-user service accounts that should no longer exist: the user was deleted or
//! deactivated, lost every grant on the cluster (or the cluster left their project), or has not
//! used it for the idle time in the settings (default 8 h). Runs every minute and within a
//! second of any authorization change (the access policy's epoch moving).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use warden_domain::entities::users;
use warden_domain::identity::accounts::STATUS_ACTIVE;
use warden_domain::ids::UserId;
use warden_domain::kubectl as kc;

use super::transport::ClusterRef;
use super::Gateway;

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// (cluster, service account, why) removed.
    pub removed: Vec<(String, String, String)>,
    /// Service accounts that should go but whose cluster is not reachable now.
    pub deferred: usize,
}

impl Gateway {
    /// One pass over every service account Warden keeps.
    pub async fn sweep_now(&self) -> SweepReport {
        let mut report = SweepReport::default();
        let rows = match kc::service_accounts(&self.services.db).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "sweeper: cannot list service accounts");
                return report;
            }
        };
        if rows.is_empty() {
            return report;
        }
        let clusters: HashMap<String, kc::KubeCluster> =
            match kc::kube_clusters(&self.services.db).await {
                Ok(cs) => cs.into_iter().map(|c| (c.id.to_string(), c)).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "sweeper: cannot list clusters");
                    return report;
                }
            };
        let now = self.services.clock.now();
        // Each cluster on its own (a few at once): a cluster whose agent never answers costs
        // its own rows one timeout, not every other cluster's removals a wait behind it.
        let mut by_cluster: HashMap<String, Vec<_>> = HashMap::new();
        for row in rows {
            if clusters.contains_key(&row.cluster_id) {
                by_cluster
                    .entry(row.cluster_id.clone())
                    .or_default()
                    .push(row);
            }
        }
        let passes = by_cluster.into_iter().filter_map(|(id, rows)| {
            let cluster = clusters.get(&id)?;
            Some(self.sweep_cluster(cluster, rows, now))
        });
        use futures::StreamExt;
        let mut passes = futures::stream::iter(passes).buffer_unordered(8);
        while let Some(r) = passes.next().await {
            report.removed.extend(r.removed);
            report.deferred += r.deferred;
        }
        if !report.removed.is_empty() {
            // Other replicas may hold these accounts as reconciled: they read the records again.
            self.services.policy.bump();
        }
        report
    }

    /// The service accounts of one cluster that should go. After a failure to reach it (a
    /// timeout, no connection), its other rows wait for the next pass.
    async fn sweep_cluster(
        &self,
        cluster: &kc::KubeCluster,
        rows: Vec<warden_domain::entities::kube_service_accounts::Model>,
        now: warden_domain::clock::Timestamp,
    ) -> SweepReport {
        let mut report = SweepReport::default();
        let cref = ClusterRef {
            id: cluster.id,
            name: cluster.name.clone(),
        };
        let mut stalled = false;
        for row in rows {
            let user = match UserId::parse(&row.user_id) {
                Some(id) => warden_domain::identity::accounts::find_by_id(&self.services.db, id)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            let why = match self.why_remove(&row, cluster, user.as_ref(), now).await {
                Some(w) => w,
                None => continue,
            };
            if stalled || !self.transport.reaches(&cref) {
                report.deferred += 1;
                continue;
            }
            let removal = async {
                let client = self
                    .transport
                    .client(&cref)
                    .await
                    .map_err(|e| e.to_string())?;
                self.reconciler
                    .remove(&client, cref.id, &row.user_id, &row.sa_name)
                    .await
                    .map_err(|e| e.to_string())
            };
            match tokio::time::timeout(Duration::from_secs(20), removal).await {
                Ok(Ok(())) => {
                    self.transport.forget(&cref, &row.sa_name);
                    if let Err(e) =
                        kc::forget_service_account(&self.services.db, cref.id, &row.user_id).await
                    {
                        tracing::warn!(error = %e, "sweeper: cannot forget a service account");
                    }
                    tracing::info!(cluster = %cref.name, sa = %row.sa_name, reason = %why, "service account removed");
                    report
                        .removed
                        .push((cref.name.clone(), row.sa_name.clone(), why));
                }
                Ok(Err(e)) => {
                    tracing::warn!(cluster = %cref.name, sa = %row.sa_name, error = %e, "sweeper: removal failed; retrying later");
                    report.deferred += 1;
                }
                Err(_) => {
                    tracing::warn!(cluster = %cref.name, sa = %row.sa_name, "sweeper: removal timed out; the cluster's other removals wait for the next pass");
                    report.deferred += 1;
                    stalled = true;
                }
            }
        }
        report
    }

    async fn why_remove(
        &self,
        row: &warden_domain::entities::kube_service_accounts::Model,
        cluster: &kc::KubeCluster,
        user: Option<&users::Model>,
        now: warden_domain::clock::Timestamp,
    ) -> Option<String> {
        let Some(user) = user else {
            return Some("the user was deleted".into());
        };
        if user.status != STATUS_ACTIVE {
            return Some("the user is deactivated".into());
        }
        let id = UserId::parse(&user.id)?;
        let eff = self.services.policy.effective(id).await.ok()?;
        if !kc::kube_access(&eff, cluster).usable() {
            return Some("no grant left on the cluster".into());
        }
        let settings = kc::effective_settings(
            &self.services.db,
            Some(&user.id),
            Some(&cluster.id.to_string()),
        )
        .await
        .ok()?;
        let last = self
            .last_used(cluster.id, &row.user_id)
            .unwrap_or(row.last_used_at)
            .max(row.last_used_at);
        if now.millis() - last > settings.sa_idle_secs * 1000 {
            return Some(format!(
                "unused for more than {} minutes",
                settings.sa_idle_secs / 60
            ));
        }
        None
    }
}

/// Sweep every minute, and soon after any authorization change.
pub fn spawn(gw: Arc<Gateway>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut epoch = gw.services.policy.epoch();
        let mut since_full = Duration::ZERO;
        let tick = Duration::from_secs(1);
        loop {
            tokio::time::sleep(tick).await;
            since_full += tick;
            let now_epoch = gw.services.policy.epoch();
            if (now_epoch != epoch || since_full >= Duration::from_secs(60))
                && gw.services.jobs.run("service_account_sweeper")
            {
                epoch = now_epoch;
                since_full = Duration::ZERO;
                let report = gw.sweep_now().await;
                if !report.removed.is_empty() || report.deferred > 0 {
                    tracing::debug!(
                        removed = report.removed.len(),
                        deferred = report.deferred,
                        "sweep done"
                    );
                }
            }
        }
    })
}
