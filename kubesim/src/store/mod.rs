//! Direct access to the simulator's objects, for test assertions and set-up. Writes go through
//! the same operations as API requests (defaulting, validation, side effects) as the
//! simulator itself, never denied by RBAC.

pub mod db;

use std::sync::Arc;

use serde_json::Value;

use crate::core::Core;
use crate::error::{Error, Result, Status};
use crate::ops::{DeleteOpts, ListQuery, WriteOpts};
use crate::resources::{self, ResourceDef};

/// A handle on the store of one simulator.
#[derive(Clone)]
pub struct Store {
    core: Arc<Core>,
}

fn resource(name: &str) -> Result<&'static ResourceDef> {
    resources::by_name(name).ok_or_else(|| Error::Other(format!("unknown resource {name}")))
}

impl Store {
    pub(crate) fn new(core: Arc<Core>) -> Store {
        Store { core }
    }

    /// An object by resource (`pods`, `deployments`, `deploy`, `Pod`, `deployments.apps`),
    /// namespace (ignored for cluster-scoped kinds) and name.
    pub fn get(&self, resource_name: &str, namespace: &str, name: &str) -> Option<Value> {
        let res = resource(resource_name).ok()?;
        self.core.get(res, namespace, name).ok()
    }

    /// Every object of a resource, in one namespace or (None) all.
    pub fn list(&self, resource_name: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(res) = resource(resource_name) else {
            return Vec::new();
        };
        self.core
            .list(res, namespace, &ListQuery::default())
            .ok()
            .and_then(|l| l.get("items").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    }

    /// Create an object from its JSON (apiVersion and kind pick the resource).
    pub fn create(&self, obj: Value) -> std::result::Result<Value, Status> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let res = resources::by_kind(av, kind).ok_or_else(|| {
            Status::bad_request(format!(
                "no matches for kind \"{kind}\" in version \"{av}\""
            ))
        })?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        self.core
            .create(res, &ns, obj, &WriteOpts::default())
            .map(|r| r.object)
    }

    /// Create every document of a (multi-document) YAML text.
    pub fn create_yaml(&self, yaml: &str) -> Result<Vec<Value>> {
        use serde::Deserialize;
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(yaml) {
            let v = serde_yaml::Value::deserialize(doc)
                .map_err(|e| Error::Other(format!("yaml: {e}")))?;
            if v.is_null() {
                continue;
            }
            let j = serde_json::to_value(v).map_err(|e| Error::Other(format!("yaml: {e}")))?;
            out.push(self.create(j)?);
        }
        Ok(out)
    }

    /// Delete an object.
    pub fn delete(
        &self,
        resource_name: &str,
        namespace: &str,
        name: &str,
    ) -> std::result::Result<(), Status> {
        let res = resources::by_name(resource_name).ok_or_else(Status::path_not_found)?;
        self.core
            .delete(res, namespace, name, &DeleteOpts::default())
            .map(|_| ())
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.core.db.resource_version()
    }

    /// Append output to a pod container's log (as if the container had printed it).
    pub fn append_log(&self, namespace: &str, pod: &str, container: &str, text: &str) -> bool {
        match self
            .core
            .runtime
            .pod(namespace, pod)
            .and_then(|p| p.containers.get(container).cloned())
        {
            Some(c) => {
                c.log.append(text.as_bytes());
                true
            }
            None => false,
        }
    }

    /// The scratch directory a pod's processes run in.
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> Option<std::path::PathBuf> {
        self.core.runtime.pod(namespace, pod).map(|p| p.dir.clone())
    }
}
