//! What an audit event says happened, in words, as every console page that lists events shows
//! it: a Kubernetes request as its verb and resource (`list pods`, `exec pod web-0`), a
//! console action as a phrase (`create user sally@example.com`, `sign in`). Phrases are written
//! as what was attempted or what happened, so that they read true beside any outcome
//! (`delete cluster prod` next to *denied*). An action without a phrase here shows its code.

use super::{AuditEventDto, AuditKind};

/// A console action's phrase: with the event's resource name in place of `{name}`, and the one
/// used when the event names no resource.
fn phrase(action: &str) -> Option<(&'static str, &'static str)> {
    Some(match action {
        // Signing in.
        "sign_in" => ("sign in", "sign in"),
        "sign_in.password" => ("sign in with a password", "sign in with a password"),
        "sign_in.oidc" => ("sign in through {name}", "sign in through single sign-on"),
        "sign_in.groups" => (
            "sync the groups of {name} from single sign-on",
            "sync groups from single sign-on",
        ),
        "sign_in.account" => (
            "make or link the account {name} through single sign-on",
            "make or link an account through single sign-on",
        ),
        "mfa.step_up" => (
            "confirm a sign-in with a two-factor code",
            "confirm a sign-in with a two-factor code",
        ),
        "mfa.enrol" => (
            "set up two-factor sign-in for {name}",
            "set up two-factor sign-in",
        ),
        "password.change" => ("change the password of {name}", "change password"),
        "password.set_with_link" => (
            "set the password of {name} with a link",
            "set a password with a link",
        ),
        "password.chosen_for" => (
            "let {name} sign in with a password chosen for them",
            "let someone sign in with a password chosen for them",
        ),
        "session.expired" => ("session of {name} expired", "session expired"),
        // People.
        "organization.initialise" => (
            "set up the organization with administrator {name}",
            "set up the organization",
        ),
        "user.create" => ("create user {name}", "create a user"),
        "user.invite" => ("invite user {name}", "invite a user"),
        "user.update" => ("change user {name}", "change a user"),
        "user.delete" => ("delete user {name}", "delete a user"),
        "user.reset_password" => (
            "reset the password of user {name}",
            "reset a user's password",
        ),
        "user.mfa.reset" => (
            "reset the two-factor sign-in of user {name}",
            "reset a user's two-factor sign-in",
        ),
        "group.create" => ("create group {name}", "create a group"),
        "group.update" => ("change group {name}", "change a group"),
        "group.delete" => ("delete group {name}", "delete a group"),
        "group.member.add" => ("add a member to group {name}", "add a group member"),
        "group.member.remove" => ("remove a member from group {name}", "remove a group member"),
        "role.create" => ("create role {name}", "create a role"),
        "role.update" => ("change role {name}", "change a role"),
        "role.delete" => ("delete role {name}", "delete a role"),
        "binding.create" => ("grant: {name}", "grant a role"),
        "binding.delete" => ("remove the grant: {name}", "remove a grant"),
        "binding.expired" => ("grant expired: {name}", "a grant expired"),
        "api_key.create" => ("create API key {name}", "create an API key"),
        "api_key.revoke" => ("revoke API key {name}", "revoke an API key"),
        "api_key.revoke_all" => ("revoke every API key of {name}", "revoke every API key"),
        "identity_provider.create" => ("add sign-in provider {name}", "add a sign-in provider"),
        "identity_provider.update" => (
            "change sign-in provider {name}",
            "change a sign-in provider",
        ),
        "identity_provider.delete" => (
            "remove sign-in provider {name}",
            "remove a sign-in provider",
        ),
        "settings.update" => (
            "change the settings of the {name}",
            "change the organization's settings",
        ),
        "settings.jit.update" => (
            "change the just-in-time access settings",
            "change the just-in-time access settings",
        ),
        // Projects and clusters.
        "project.create" => ("create project {name}", "create a project"),
        "project.update" => ("change project {name}", "change a project"),
        "project.delete" => ("delete project {name}", "delete a project"),
        "project.approver_group.update" => (
            "change who approves access to project {name}",
            "change who approves access to a project",
        ),
        "cluster.create" => ("import cluster {name}", "import a cluster"),
        "cluster.update" => ("change cluster {name}", "change a cluster"),
        "cluster.delete" => ("delete cluster {name}", "delete a cluster"),
        "cluster.force_delete" => (
            "delete cluster {name} without its agent",
            "delete a cluster without its agent",
        ),
        "cluster.agent_revoke" => (
            "revoke the agent of cluster {name}",
            "revoke a cluster's agent",
        ),
        "cluster.bootstrap_token" => (
            "issue a bootstrap token for cluster {name}",
            "issue a bootstrap token",
        ),
        "cluster.manifest" => (
            "get the agent manifest of cluster {name}",
            "get an agent manifest",
        ),
        "agent.manifest_download" => (
            "download the agent manifest of cluster {name}",
            "download an agent manifest",
        ),
        "kubectl_settings.update" => (
            "change the kubectl settings of {name}",
            "change kubectl settings",
        ),
        // Agents (the agent is the actor; its cluster is the resource).
        "agent.bootstrap" => (
            "agent of cluster {name} registers with its bootstrap token",
            "an agent registers with a bootstrap token",
        ),
        "agent.challenge" => (
            "agent of cluster {name} proves its credential",
            "an agent proves its credential",
        ),
        "agent.connect" => (
            "agent of cluster {name} connects with its credential",
            "an agent connects with its credential",
        ),
        "agent.connected" => ("agent of cluster {name} connected", "an agent connected"),
        "agent.guard_weakened" => (
            "the admission guard of cluster {name} is no longer in force",
            "a cluster's admission guard is no longer in force",
        ),
        "agent.guard_restored" => (
            "the admission guard of cluster {name} is in force again",
            "a cluster's admission guard is in force again",
        ),
        "agent.disconnect" | "agent.disconnected" => (
            "agent of cluster {name} disconnected",
            "an agent disconnected",
        ),
        "agent.heartbeat_missed" => (
            "agent of cluster {name} missed its heartbeats",
            "an agent missed its heartbeats",
        ),
        "agent.key_rotated" => (
            "agent of cluster {name} rotated its key",
            "an agent rotated its key",
        ),
        "agent.facts_rejected" => (
            "agent of cluster {name} sent facts that were refused",
            "an agent sent facts that were refused",
        ),
        "agent.heartbeat_flood" => (
            "agent of cluster {name} sent heartbeats too often",
            "an agent sent heartbeats too often",
        ),
        "agent.oversize_message" => (
            "agent of cluster {name} sent a message over the size limit",
            "an agent sent a message over the size limit",
        ),
        // kubectl, terminals and live streams.
        "kubeconfig.download" => ("download a kubeconfig for {name}", "download a kubeconfig"),
        "kubeconfig.issue" => ("issue a kubeconfig for {name}", "issue a kubeconfig"),
        "kubeconfig.revoke" => ("revoke the kubeconfigs of {name}", "revoke kubeconfigs"),
        "terminal.open" => ("open a web terminal in pod {name}", "open a kubectl shell"),
        "terminal.close" => (
            "close a web terminal in pod {name}",
            "close a kubectl shell",
        ),
        "terminal.closed" => (
            "web terminal in pod {name} closed by Warden",
            "web terminal closed by Warden",
        ),
        "terminal.command" => (
            "run a command in a kubectl shell",
            "run a command in a kubectl shell",
        ),
        "terminal.resize_limit" => (
            "web terminal in pod {name} asked for a size over the limit",
            "web terminal asked for a size over the limit",
        ),
        "stream.end" => ("end a live stream of {name}", "end a live stream"),
        // Access requests.
        "access_request.create" => ("request access: {name}", "request access"),
        "access_request.list" => ("list access requests", "list access requests"),
        "access_request.read" => ("read access request {name}", "read an access request"),
        "access_request.roles" => (
            "list the roles one may request",
            "list the roles one may request",
        ),
        "access_request.approve" => ("approve access request {name}", "approve an access request"),
        "access_request.approved" => (
            "access request {name} approved",
            "an access request was approved",
        ),
        "access_request.deny" => ("deny access request {name}", "deny an access request"),
        "access_request.denied" => (
            "access request {name} denied",
            "an access request was denied",
        ),
        "access_request.cancel" => (
            "withdraw access request {name}",
            "withdraw an access request",
        ),
        "access_request.cancelled" => (
            "access request {name} withdrawn",
            "an access request was withdrawn",
        ),
        "access_request.revoke" => (
            "end the access granted by request {name}",
            "end granted access early",
        ),
        "access_request.revoked" => (
            "access granted by request {name} ended early",
            "granted access ended early",
        ),
        "access_request.expired" => ("access request {name} expired", "an access request expired"),
        "access_request.break_glass" => ("break-glass access: {name}", "break-glass access"),
        // Warden itself.
        "audit.retention" => (
            "delete audit events older than the retention period",
            "delete audit events older than the retention period",
        ),
        "audit.checkpoints.signed_again" => (
            "sign the audit log's checkpoints again with the master key",
            "sign the audit log's checkpoints again with the master key",
        ),
        "keys.master_rotated" => (
            "seal the data key with a new master key",
            "seal the data key with a new master key",
        ),
        "audit.export" => ("export the audit log", "export the audit log"),
        "audit.generated" => (
            "generate synthetic audit events",
            "generate synthetic audit events",
        ),
        "recording.replay" => (
            "replay terminal recording {name}",
            "replay a terminal recording",
        ),
        "audit.tampered" => (
            "find the audit log changed outside Warden",
            "find the audit log changed outside Warden",
        ),
        "siem.dropped" => ("SIEM stream dropped events", "SIEM stream dropped events"),
        "webhook.delivered" => ("deliver webhook {name}", "deliver a webhook"),
        "webhook.delivery.failed" => (
            "webhook delivery {name} failed",
            "a webhook delivery failed",
        ),
        "replica.forward" => (
            "forward a request to another replica",
            "forward a request to another replica",
        ),
        _ => return None,
    })
}

impl AuditEventDto {
    /// What happened, in a few words (see the module's documentation).
    pub fn what(&self) -> String {
        if self.kind == AuditKind::KubeApi {
            return self.kube_request();
        }
        let name = self.resource_name.as_deref().filter(|n| !n.is_empty());
        // kubectl settings name their level in the kind: `kubectl_settings.cluster`, `demo`.
        let level = match self.resource_kind.as_deref() {
            Some("kubectl_settings.organization") => Some("the organization".to_owned()),
            Some(k) => match (k.strip_prefix("kubectl_settings."), name) {
                (Some(level), Some(n)) => Some(format!("{level} {n}")),
                _ => None,
            },
            None => None,
        };
        let name = level.as_deref().or(name);
        match (phrase(&self.action), name) {
            (Some((with, _)), Some(n)) if with.contains("{name}") => with.replace("{name}", n),
            (Some((with, without)), _) => {
                if name.is_some() {
                    with.to_owned()
                } else {
                    without.to_owned()
                }
            }
            (None, _) => match (&self.resource_kind, name) {
                (Some(k), Some(n)) => format!("{} ({k} {n})", self.action),
                (None, Some(n)) => format!("{} ({n})", self.action),
                _ => self.action.clone(),
            },
        }
    }

    /// A Kubernetes request: its verb (for exec, attach, port-forward and logs, the
    /// subresource's, naming the pod) and resource, or for discovery and health checks the API
    /// path on the cluster; a stream says when it opened (`.start`) and when Warden closed it
    /// (`.closed`).
    fn kube_request(&self) -> String {
        let verb = self.action.strip_prefix("kube.").unwrap_or(&self.action);
        let (verb, suffix) = if let Some(v) = verb.strip_suffix(".closed") {
            (v, ": closed by Warden")
        } else if let Some(v) = verb.strip_suffix(".start") {
            (v, ": opened")
        } else {
            (verb, "")
        };
        let (verb, kind) = match self.resource_kind.as_deref() {
            Some("pods/exec") => ("exec", Some("pod")),
            Some("pods/attach") => ("attach", Some("pod")),
            Some("pods/portforward") => ("port-forward", Some("pod")),
            Some("pods/log") => ("logs of", Some("pod")),
            k => (verb, k),
        };
        let name = self.resource_name.as_ref().filter(|n| !n.is_empty());
        let request = match (kind, name) {
            (Some(k), Some(n)) => format!("{verb} {k} {n}"),
            (Some(k), None) => format!("{verb} {k}"),
            _ => format!(
                "{verb} {}",
                self.path.as_deref().map(cluster_path).unwrap_or_default()
            ),
        };
        format!("{request}{suffix}")
    }
}

/// A gateway path as the cluster sees it: `/clusters/demo/apis?timeout=32s` -> `/apis`.
fn cluster_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    match path
        .strip_prefix("/clusters/")
        .and_then(|p| p.split_once('/'))
    {
        Some((_, rest)) => format!("/{rest}"),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dto::{Outcome, SessionType};

    fn event(kind: AuditKind, action: &str, resource: Option<(&str, &str)>) -> AuditEventDto {
        AuditEventDto {
            seq: 1,
            id: "e".into(),
            time: "2026-12-04T10:00:00Z".into(),
            kind,
            actor_id: None,
            actor: "sally@example.com".into(),
            session_type: SessionType::Browser,
            project: None,
            cluster: None,
            namespace: None,
            action: action.into(),
            resource_kind: resource.map(|(k, _)| k.to_owned()),
            resource_name: resource.map(|(_, n)| n.to_owned()),
            outcome: Outcome::Allowed,
            reason: None,
            method: None,
            path: None,
            status: None,
            source_ip: None,
            user_agent: None,
            request_id: None,
            duration_ms: None,
            details: serde_json::Value::Null,
            replayable: None,
        }
    }

    #[test]
    fn console_actions_read_as_phrases_with_their_resource() {
        let c = AuditKind::Console;
        let cases = [
            (
                event(c, "user.create", Some(("user", "jo@x.io"))),
                "create user jo@x.io",
            ),
            (event(c, "user.create", None), "create a user"),
            (event(AuditKind::SignIn, "sign_in", None), "sign in"),
            (
                event(AuditKind::SignIn, "sign_in", Some(("user", "jo@x.io"))),
                "sign in",
            ),
            (event(c, "password.change", None), "change password"),
            (
                event(
                    c,
                    "binding.create",
                    Some(("binding", "user jo holds viewer on project p")),
                ),
                "grant: user jo holds viewer on project p",
            ),
            (
                event(
                    AuditKind::Agent,
                    "agent.connected",
                    Some(("cluster", "demo")),
                ),
                "agent of cluster demo connected",
            ),
            (
                event(
                    AuditKind::Terminal,
                    "terminal.open",
                    Some(("pods/exec", "web-0")),
                ),
                "open a web terminal in pod web-0",
            ),
            (
                event(AuditKind::Terminal, "terminal.open", None),
                "open a kubectl shell",
            ),
            // No phrase: the code, with the resource.
            (
                event(c, "thing.frob", Some(("thing", "t1"))),
                "thing.frob (thing t1)",
            ),
            (event(c, "thing.frob", None), "thing.frob"),
            (
                event(
                    c,
                    "kubectl_settings.update",
                    Some(("kubectl_settings.cluster", "demo")),
                ),
                "change the kubectl settings of cluster demo",
            ),
            (
                event(
                    c,
                    "kubectl_settings.update",
                    Some(("kubectl_settings.organization", "organization")),
                ),
                "change the kubectl settings of the organization",
            ),
            // An empty name is no name.
            (
                event(c, "group.delete", Some(("group", ""))),
                "delete a group",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.what(), want, "{}", e.action);
        }
    }

    #[test]
    fn kubernetes_requests_read_as_verb_and_resource() {
        let k = AuditKind::KubeApi;
        assert_eq!(
            event(k, "kube.list", Some(("namespaces", ""))).what(),
            "list namespaces"
        );
        assert_eq!(
            event(k, "kube.get", Some(("pods", "web-0"))).what(),
            "get pods web-0"
        );
        assert_eq!(
            event(k, "kube.create", Some(("pods/exec", "web-0"))).what(),
            "exec pod web-0"
        );
        assert_eq!(
            event(k, "kube.get.start", Some(("pods/log", "web-0"))).what(),
            "logs of pod web-0: opened"
        );
        assert_eq!(
            event(k, "kube.logs.closed", Some(("pods/log", "web-0"))).what(),
            "logs of pod web-0: closed by Warden"
        );
        assert_eq!(
            event(k, "kube.watch.start", Some(("pods", ""))).what(),
            "watch pods: opened"
        );
        assert_eq!(
            event(k, "kube.watch.closed", Some(("configmaps", "a"))).what(),
            "watch configmaps a: closed by Warden"
        );
        let mut discovery = event(k, "kube.get", None);
        discovery.path = Some("/clusters/demo/apis?timeout=32s".into());
        assert_eq!(discovery.what(), "get /apis");
    }

    #[test]
    fn every_action_warden_records_has_a_phrase_with_a_place_for_its_name_or_none() {
        // Each phrase with a resource names it once at most; the one without names none.
        for action in ACTIONS {
            let (with, without) = phrase(action).unwrap_or_else(|| panic!("{action}: no phrase"));
            assert!(with.matches("{name}").count() <= 1, "{action}");
            assert!(!without.contains('{'), "{action}");
        }
    }

    /// The actions Warden records (kept by hand; a new action without a phrase still shows
    /// its code).
    const ACTIONS: &[&str] = &[
        "sign_in",
        "sign_in.password",
        "sign_in.oidc",
        "sign_in.groups",
        "sign_in.account",
        "mfa.step_up",
        "mfa.enrol",
        "password.change",
        "password.set_with_link",
        "password.chosen_for",
        "organization.initialise",
        "user.create",
        "user.update",
        "user.delete",
        "user.reset_password",
        "user.mfa.reset",
        "group.create",
        "group.update",
        "group.delete",
        "group.member.add",
        "group.member.remove",
        "role.create",
        "role.update",
        "role.delete",
        "binding.create",
        "binding.delete",
        "binding.expired",
        "api_key.create",
        "api_key.revoke",
        "api_key.revoke_all",
        "identity_provider.create",
        "identity_provider.update",
        "identity_provider.delete",
        "settings.update",
        "settings.jit.update",
        "project.create",
        "project.update",
        "project.delete",
        "project.approver_group.update",
        "cluster.create",
        "cluster.update",
        "cluster.delete",
        "cluster.force_delete",
        "cluster.agent_revoke",
        "cluster.bootstrap_token",
        "cluster.manifest",
        "agent.manifest_download",
        "kubectl_settings.update",
        "agent.bootstrap",
        "agent.challenge",
        "agent.connect",
        "agent.connected",
        "agent.disconnected",
        "agent.facts_rejected",
        "agent.guard_restored",
        "agent.guard_weakened",
        "agent.heartbeat_flood",
        "agent.oversize_message",
        "kubeconfig.download",
        "kubeconfig.revoke",
        "terminal.open",
        "terminal.close",
        "terminal.closed",
        "terminal.command",
        "stream.end",
        "access_request.create",
        "access_request.list",
        "access_request.read",
        "access_request.roles",
        "access_request.approve",
        "access_request.approved",
        "access_request.deny",
        "access_request.denied",
        "access_request.cancel",
        "access_request.cancelled",
        "access_request.revoke",
        "access_request.revoked",
        "access_request.expired",
        "access_request.break_glass",
        "audit.retention",
        "audit.checkpoints.signed_again",
        "keys.master_rotated",
        "audit.export",
        "audit.generated",
        "recording.replay",
        "audit.tampered",
        "siem.dropped",
        "webhook.delivery.failed",
        "replica.forward",
    ];
}
