//! What the agent knows about its cluster: its fingerprint (the UID of `kube-system`) and the
//! facts it reports with each heartbeat.

use k8s_openapi::api::admissionregistration::v1::{
    NamedRuleWithOperations, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingAdmissionPolicySpec,
};
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, ListParams};
use warden_domain::dto::{ClusterFacts, GuardStatus, NodeFact};

/// UID of the `kube-system` namespace: stable for the life of a cluster, different between
/// clusters.
pub async fn fingerprint(kube: &kube::Client) -> Result<String, kube::Error> {
    let ns: Api<Namespace> = Api::all(kube.clone());
    let ks = ns.get("kube-system").await?;
    Ok(ks.metadata.uid.unwrap_or_default())
}

/// Version, nodes and namespaces, as far as the agent can read them. A part that cannot be
/// read is left out rather than failing the heartbeat.
pub async fn gather(kube: &kube::Client) -> ClusterFacts {
    let mut facts = ClusterFacts {
        agent_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        ..Default::default()
    };
    match kube.apiserver_version().await {
        Ok(v) => facts.kubernetes_version = Some(v.git_version),
        Err(e) => tracing::debug!(error = %e, "cannot read the Kubernetes version"),
    }
    let nodes: Api<Node> = Api::all(kube.clone());
    match nodes.list(&ListParams::default()).await {
        Ok(list) => {
            facts.node_count = list.items.len() as u32;
            facts.nodes = list
                .items
                .iter()
                .take(500)
                .map(|n| NodeFact {
                    name: n.metadata.name.clone().unwrap_or_default(),
                    ready: n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        }),
                    kubelet_version: n
                        .status
                        .as_ref()
                        .and_then(|s| s.node_info.as_ref())
                        .map(|i| i.kubelet_version.clone()),
                })
                .collect();
        }
        Err(e) => tracing::debug!(error = %e, "cannot list nodes"),
    }
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    match namespaces.list(&ListParams::default()).await {
        Ok(list) => {
            facts.namespace_count = list.items.len() as u32;
            let mut names: Vec<String> = list
                .items
                .into_iter()
                .filter_map(|n| n.metadata.name)
                .collect();
            names.sort();
            names.truncate(1000);
            facts.namespaces = names;
        }
        Err(e) => tracing::debug!(error = %e, "cannot list namespaces"),
    }
    facts.guard = guard(kube).await;
    facts
}

/// Whether the admission guard is in force: the policy as the manifest ships it (its rules,
/// conditions, variables and validations; what the API server fills in by default aside),
/// and a binding of it that denies. None when the API server could not answer just now (a
/// timeout, throttling, an error of its own): that says nothing about the guard.
pub async fn guard(kube: &kube::Client) -> Option<GuardStatus> {
    match guard_status(kube).await {
        Ok(g) => Some(g),
        Err(known) => known,
    }
}

async fn guard_status(kube: &kube::Client) -> Result<GuardStatus, Option<GuardStatus>> {
    use warden_domain::agent_protocol::GUARD_POLICY;
    // Refused (the manifest from before the report): unreadable. Anything else: not known now.
    let unreadable = |e: kube::Error| {
        tracing::debug!(error = %e, "cannot read the admission guard");
        match e {
            kube::Error::Api(s) if s.code == 401 || s.code == 403 => Some(GuardStatus::Unreadable),
            _ => None,
        }
    };
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(kube.clone());
    let policy = match policies.get_opt(GUARD_POLICY).await {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(GuardStatus::PolicyMissing),
        Err(e) => return Err(unreadable(e)),
    };
    match (policy.spec.as_ref(), shipped_policy()) {
        (Some(live), Some(shipped)) if same_rules(live, &shipped) => {}
        _ => return Ok(GuardStatus::PolicyAltered),
    }
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(kube.clone());
    match bindings.get_opt(GUARD_POLICY).await {
        Ok(Some(b)) => {
            let spec = b.spec;
            // Resources matched by the binding narrow the policy's: none, or every one.
            let narrowed = spec.match_resources.as_ref().is_some_and(|m| {
                !selects_all(&m.namespace_selector)
                    || !selects_all(&m.object_selector)
                    || m.resource_rules.as_ref().is_some_and(|r| !r.is_empty())
                    || m.exclude_resource_rules
                        .as_ref()
                        .is_some_and(|r| !r.is_empty())
            });
            if spec.policy_name == GUARD_POLICY
                && spec.validation_actions.iter().any(|a| a == "Deny")
                && spec.param_ref.is_none()
                && !narrowed
            {
                Ok(GuardStatus::Enforced)
            } else {
                Ok(GuardStatus::BindingAltered)
            }
        }
        Ok(None) => Ok(GuardStatus::BindingMissing),
        Err(e) => Err(unreadable(e)),
    }
}

/// The policy's spec as this agent's manifest ships it.
fn shipped_policy() -> Option<ValidatingAdmissionPolicySpec> {
    use serde::Deserialize;
    let yaml = warden_domain::agent_protocol::guard_policy("");
    let first = serde_yaml::Deserializer::from_str(&yaml).next()?;
    ValidatingAdmissionPolicy::deserialize(first).ok()?.spec
}

/// What decides the policy's verdicts is the same in both: the failure policy, the rules it
/// matches, its conditions, variables and validations (messages aside).
fn same_rules(
    live: &ValidatingAdmissionPolicySpec,
    shipped: &ValidatingAdmissionPolicySpec,
) -> bool {
    let fail = |f: &Option<String>| f.as_deref().unwrap_or("Fail") == "Fail";
    let rules = |s: &ValidatingAdmissionPolicySpec| {
        s.match_constraints
            .as_ref()
            .and_then(|m| m.resource_rules.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|r: NamedRuleWithOperations| {
                (
                    r.api_groups.unwrap_or_default(),
                    r.api_versions.unwrap_or_default(),
                    r.operations.unwrap_or_default(),
                    r.resources.unwrap_or_default(),
                    r.resource_names.unwrap_or_default(),
                    // The API server's default.
                    r.scope.unwrap_or_else(|| "*".to_owned()),
                )
            })
            .collect::<Vec<_>>()
    };
    let everything = |s: &ValidatingAdmissionPolicySpec| {
        s.match_constraints.as_ref().is_some_and(|m| {
            m.exclude_resource_rules
                .as_ref()
                .is_none_or(|r| r.is_empty())
                && selects_all(&m.namespace_selector)
                && selects_all(&m.object_selector)
        })
    };
    let conditions = |s: &ValidatingAdmissionPolicySpec| {
        s.match_conditions
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.expression.clone()))
            .collect::<Vec<_>>()
    };
    let variables = |s: &ValidatingAdmissionPolicySpec| {
        s.variables
            .iter()
            .flatten()
            .map(|v| (v.name.clone(), v.expression.clone()))
            .collect::<Vec<_>>()
    };
    let validations = |s: &ValidatingAdmissionPolicySpec| {
        s.validations
            .iter()
            .flatten()
            .map(|v| v.expression.clone())
            .collect::<Vec<_>>()
    };
    fail(&live.failure_policy)
        && fail(&shipped.failure_policy)
        && live.param_kind.is_none()
        && rules(live) == rules(shipped)
        && everything(live)
        && conditions(live) == conditions(shipped)
        && variables(live) == variables(shipped)
        && validations(live) == validations(shipped)
}

/// A label selector that selects everything (absent, or empty as the API server defaults it).
fn selects_all(s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>) -> bool {
    s.as_ref().is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(|l| l.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy as a real API server returns it (its defaults filled in: every rule's scope,
    /// empty selectors, the match policy) is the shipped one; any change to what decides a
    /// verdict is not.
    #[test]
    fn the_shipped_policy_with_the_servers_defaults_is_as_shipped_and_no_edit_is() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let shipped = shipped_policy().expect("the manifest's policy parses");
        assert!(same_rules(&shipped, &shipped));
        let mut defaulted = shipped.clone();
        let m = defaulted.match_constraints.as_mut().unwrap();
        m.match_policy = Some("Equivalent".into());
        m.namespace_selector = Some(LabelSelector::default());
        m.object_selector = Some(LabelSelector::default());
        for r in m.resource_rules.iter_mut().flatten() {
            r.scope.get_or_insert_with(|| "*".into());
        }
        assert!(same_rules(&defaulted, &shipped));

        let edits: Vec<(&str, Box<dyn Fn(&mut ValidatingAdmissionPolicySpec)>)> = vec![
            (
                "ignore failures",
                Box::new(|s: &mut ValidatingAdmissionPolicySpec| {
                    s.failure_policy = Some("Ignore".into())
                }),
            ),
            (
                "a validation that always holds",
                Box::new(|s: &mut ValidatingAdmissionPolicySpec| {
                    s.validations.as_mut().unwrap()[0].expression = "true".into()
                }),
            ),
            (
                "a condition that never matches",
                Box::new(|s: &mut ValidatingAdmissionPolicySpec| {
                    s.match_conditions.as_mut().unwrap()[0].expression = "false".into()
                }),
            ),
            (
                "a rule less",
                Box::new(|s: &mut ValidatingAdmissionPolicySpec| {
                    s.match_constraints
                        .as_mut()
                        .unwrap()
                        .resource_rules
                        .as_mut()
                        .unwrap()
                        .pop();
                }),
            ),
            (
                "only some namespaces",
                Box::new(|s: &mut ValidatingAdmissionPolicySpec| {
                    s.match_constraints.as_mut().unwrap().namespace_selector = Some(LabelSelector {
                        match_labels: Some([("x".to_owned(), "y".to_owned())].into()),
                        ..Default::default()
                    })
                }),
            ),
            (
                "a variable changed",
                Box::new(|s: &mut ValidatingAdmissionPolicySpec| {
                    s.variables.as_mut().unwrap()[0].expression = "false".into()
                }),
            ),
        ];
        for (what, edit) in edits {
            let mut s = shipped.clone();
            edit(&mut s);
            assert!(!same_rules(&s, &shipped), "{what}");
        }
    }
}
