//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed clients send for `create namespace|configmap|secret|...`,
//! `create token` and `auth can-i`. A schema table (field numbers from k8s.io/api
//! `generated.proto`) maps the messages kubectl sends to their JSON form; unknown fields are
//! skipped. Responses are always JSON, which those clients accept.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::{ApiResult, Status};

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Msg(&'static str),
    Time,
    Quantity,
    IntOrStr,
    MapStr,
    MapBytes,
    MapQuantity,
}

struct F {
    no: u64,
    name: &'static str,
    ty: Ty,
    repeated: bool,
    /// Pointer fields in Go: a zero value is meaningful and kept.
    keep_zero: bool,
}

const fn f(no: u64, name: &'static str, ty: Ty) -> F {
    F {
        no,
        name,
        ty,
        repeated: false,
        keep_zero: false,
    }
}
const fn r(no: u64, name: &'static str, ty: Ty) -> F {
    F {
        no,
        name,
        ty,
        repeated: true,
        keep_zero: false,
    }
}
const fn z(no: u64, name: &'static str, ty: Ty) -> F {
    F {
        no,
        name,
        ty,
        repeated: false,
        keep_zero: true,
    }
}

use Ty::*;

fn schema(msg: &str) -> &'static [F] {
    match msg {
        "ObjectMeta" => {
            const {
                &[
                    f(1, "name", Str),
                    f(2, "generateName", Str),
                    f(3, "namespace", Str),
                    f(5, "uid", Str),
                    f(6, "resourceVersion", Str),
                    f(7, "generation", Int),
                    f(8, "creationTimestamp", Time),
                    f(11, "labels", MapStr),
                    f(12, "annotations", MapStr),
                    r(13, "ownerReferences", Msg("OwnerReference")),
                    r(14, "finalizers", Str),
                ]
            }
        }
        "OwnerReference" => {
            const {
                &[
                    f(1, "kind", Str),
                    f(3, "name", Str),
                    f(4, "uid", Str),
                    f(5, "apiVersion", Str),
                    z(6, "controller", Bool),
                    z(7, "blockOwnerDeletion", Bool),
                ]
            }
        }
        "LabelSelector" => {
            const {
                &[
                    f(1, "matchLabels", MapStr),
                    r(2, "matchExpressions", Msg("LabelSelectorRequirement")),
                ]
            }
        }
        "LabelSelectorRequirement" => {
            const { &[f(1, "key", Str), f(2, "operator", Str), r(3, "values", Str)] }
        }
        "Namespace" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("NamespaceSpec")),
                    f(3, "status", Msg("Empty")),
                ]
            }
        }
        "NamespaceSpec" => const { &[r(1, "finalizers", Str)] },
        "ConfigMap" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "data", MapStr),
                    f(3, "binaryData", MapBytes),
                    z(4, "immutable", Bool),
                ]
            }
        }
        "Secret" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "data", MapBytes),
                    f(3, "type", Str),
                    f(4, "stringData", MapStr),
                    z(5, "immutable", Bool),
                ]
            }
        }
        "ServiceAccount" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    r(2, "secrets", Msg("ObjectReference")),
                    r(3, "imagePullSecrets", Msg("LocalObjectReference")),
                    z(4, "automountServiceAccountToken", Bool),
                ]
            }
        }
        "ObjectReference" => {
            const {
                &[
                    f(1, "kind", Str),
                    f(2, "namespace", Str),
                    f(3, "name", Str),
                    f(4, "uid", Str),
                    f(5, "apiVersion", Str),
                ]
            }
        }
        "LocalObjectReference" => const { &[f(1, "name", Str)] },
        "TokenRequest" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("TokenRequestSpec")),
                ]
            }
        }
        "TokenRequestSpec" => {
            const {
                &[
                    r(1, "audiences", Str),
                    z(4, "expirationSeconds", Int),
                    f(3, "boundObjectRef", Msg("BoundObjectReference")),
                ]
            }
        }
        "BoundObjectReference" => {
            const {
                &[
                    f(1, "kind", Str),
                    f(2, "apiVersion", Str),
                    f(3, "name", Str),
                    f(4, "uid", Str),
                ]
            }
        }
        "SelfSubjectAccessReview" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("SelfSubjectAccessReviewSpec")),
                ]
            }
        }
        "SelfSubjectAccessReviewSpec" => {
            const {
                &[
                    f(1, "resourceAttributes", Msg("ResourceAttributes")),
                    f(2, "nonResourceAttributes", Msg("NonResourceAttributes")),
                ]
            }
        }
        "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("SubjectAccessReviewSpec")),
                ]
            }
        }
        "SubjectAccessReviewSpec" => {
            const {
                &[
                    f(1, "resourceAttributes", Msg("ResourceAttributes")),
                    f(2, "nonResourceAttributes", Msg("NonResourceAttributes")),
                    f(3, "user", Str),
                    r(4, "groups", Str),
                    f(6, "uid", Str),
                ]
            }
        }
        "ResourceAttributes" => {
            const {
                &[
                    f(1, "namespace", Str),
                    f(2, "verb", Str),
                    f(3, "group", Str),
                    f(4, "version", Str),
                    f(5, "resource", Str),
                    f(6, "subresource", Str),
                    f(7, "name", Str),
                ]
            }
        }
        "NonResourceAttributes" => const { &[f(1, "path", Str), f(2, "verb", Str)] },
        "SelfSubjectRulesReview" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("SelfSubjectRulesReviewSpec")),
                ]
            }
        }
        "SelfSubjectRulesReviewSpec" => const { &[f(1, "namespace", Str)] },
        "SelfSubjectReview" | "TokenReview" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("TokenReviewSpec")),
                ]
            }
        }
        "TokenReviewSpec" => const { &[f(1, "token", Str), r(2, "audiences", Str)] },
        "Role" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    r(2, "rules", Msg("PolicyRule")),
                ]
            }
        }
        "ClusterRole" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    r(2, "rules", Msg("PolicyRule")),
                    f(3, "aggregationRule", Msg("AggregationRule")),
                ]
            }
        }
        "AggregationRule" => const { &[r(1, "clusterRoleSelectors", Msg("LabelSelector"))] },
        "PolicyRule" => {
            const {
                &[
                    r(1, "verbs", Str),
                    r(2, "apiGroups", Str),
                    r(3, "resources", Str),
                    r(4, "resourceNames", Str),
                    r(5, "nonResourceURLs", Str),
                ]
            }
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    r(2, "subjects", Msg("Subject")),
                    f(3, "roleRef", Msg("RoleRef")),
                ]
            }
        }
        "Subject" => {
            const {
                &[
                    f(1, "kind", Str),
                    f(2, "apiGroup", Str),
                    f(3, "name", Str),
                    f(4, "namespace", Str),
                ]
            }
        }
        "RoleRef" => const { &[f(1, "apiGroup", Str), f(2, "kind", Str), f(3, "name", Str)] },
        "Deployment" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("DeploymentSpec")),
                    f(3, "status", Msg("Empty")),
                ]
            }
        }
        "DeploymentSpec" => {
            const {
                &[
                    z(1, "replicas", Int),
                    f(2, "selector", Msg("LabelSelector")),
                    f(3, "template", Msg("PodTemplateSpec")),
                    f(4, "strategy", Msg("DeploymentStrategy")),
                    f(5, "minReadySeconds", Int),
                    z(6, "revisionHistoryLimit", Int),
                    f(7, "paused", Bool),
                    z(9, "progressDeadlineSeconds", Int),
                ]
            }
        }
        "DeploymentStrategy" => {
            const {
                &[
                    f(1, "type", Str),
                    f(2, "rollingUpdate", Msg("RollingUpdateDeployment")),
                ]
            }
        }
        "RollingUpdateDeployment" => {
            const { &[f(1, "maxUnavailable", IntOrStr), f(2, "maxSurge", IntOrStr)] }
        }
        "PodTemplateSpec" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("PodSpec")),
                ]
            }
        }
        "Pod" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("PodSpec")),
                    f(3, "status", Msg("Empty")),
                ]
            }
        }
        "PodSpec" => {
            const {
                &[
                    r(2, "containers", Msg("Container")),
                    f(3, "restartPolicy", Str),
                    z(4, "terminationGracePeriodSeconds", Int),
                    z(5, "activeDeadlineSeconds", Int),
                    f(6, "dnsPolicy", Str),
                    f(7, "nodeSelector", MapStr),
                    f(8, "serviceAccountName", Str),
                    f(9, "serviceAccount", Str),
                    f(10, "nodeName", Str),
                    f(11, "hostNetwork", Bool),
                    r(15, "imagePullSecrets", Msg("LocalObjectReference")),
                    f(16, "hostname", Str),
                    f(17, "subdomain", Str),
                    f(19, "schedulerName", Str),
                    r(20, "initContainers", Msg("Container")),
                    z(21, "automountServiceAccountToken", Bool),
                    f(24, "priorityClassName", Str),
                ]
            }
        }
        "Container" => {
            const {
                &[
                    f(1, "name", Str),
                    f(2, "image", Str),
                    r(3, "command", Str),
                    r(4, "args", Str),
                    f(5, "workingDir", Str),
                    r(6, "ports", Msg("ContainerPort")),
                    r(7, "env", Msg("EnvVar")),
                    f(8, "resources", Msg("ResourceRequirements")),
                    f(13, "terminationMessagePath", Str),
                    f(14, "imagePullPolicy", Str),
                    f(16, "stdin", Bool),
                    f(17, "stdinOnce", Bool),
                    f(18, "tty", Bool),
                    f(20, "terminationMessagePolicy", Str),
                ]
            }
        }
        "ContainerPort" => {
            const {
                &[
                    f(1, "name", Str),
                    f(2, "hostPort", Int),
                    f(3, "containerPort", Int),
                    f(4, "protocol", Str),
                    f(5, "hostIP", Str),
                ]
            }
        }
        "EnvVar" => const { &[f(1, "name", Str), f(2, "value", Str)] },
        "ResourceRequirements" => {
            const { &[f(1, "limits", MapQuantity), f(2, "requests", MapQuantity)] }
        }
        "Service" => {
            const {
                &[
                    f(1, "metadata", Msg("ObjectMeta")),
                    f(2, "spec", Msg("ServiceSpec")),
                    f(3, "status", Msg("Empty")),
                ]
            }
        }
        "ServiceSpec" => {
            const {
                &[
                    r(1, "ports", Msg("ServicePort")),
                    f(2, "selector", MapStr),
                    f(3, "clusterIP", Str),
                    f(4, "type", Str),
                    r(5, "externalIPs", Str),
                    f(7, "sessionAffinity", Str),
                    f(10, "externalName", Str),
                ]
            }
        }
        "ServicePort" => {
            const {
                &[
                    f(1, "name", Str),
                    f(2, "protocol", Str),
                    f(3, "port", Int),
                    f(4, "targetPort", IntOrStr),
                    f(5, "nodePort", Int),
                ]
            }
        }
        "DeleteOptions" => {
            const {
                &[
                    z(1, "gracePeriodSeconds", Int),
                    f(2, "preconditions", Msg("Preconditions")),
                    z(3, "orphanDependents", Bool),
                    f(4, "propagationPolicy", Str),
                    r(5, "dryRun", Str),
                ]
            }
        }
        "Preconditions" => const { &[f(1, "uid", Str), f(2, "resourceVersion", Str)] },
        _ => &[],
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.pos.checked_add(len)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn skip(&mut self, wire: u64) -> Option<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => {
                self.pos += 8;
                Some(())
            }
            2 => self.bytes().map(|_| ()),
            5 => {
                self.pos += 4;
                Some(())
            }
            _ => None,
        }
    }

    /// (field number, wire type, value bytes for wire 2, varint for wire 0)
    fn next(&mut self) -> Option<Option<(u64, Field<'a>)>> {
        if self.pos >= self.b.len() {
            return Some(None);
        }
        let key = self.varint()?;
        let (no, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(self.varint()?),
            2 => Field::Bytes(self.bytes()?),
            w => {
                self.skip(w)?;
                Field::Other
            }
        };
        Some(Some((no, field)))
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut rd = Reader { b, pos: 0 };
    let mut out = Vec::new();
    while let Some(x) = rd.next()? {
        out.push(x);
    }
    Some(out)
}

fn string(b: &[u8]) -> Option<String> {
    String::from_utf8(b.to_vec()).ok()
}

fn map_entry(b: &[u8]) -> Option<(String, Option<&[u8]>)> {
    let mut key = String::new();
    let mut val = None;
    for (no, fv) in fields(b)? {
        match (no, fv) {
            (1, Field::Bytes(k)) => key = string(k)?,
            (2, Field::Bytes(v)) => val = Some(v),
            _ => {}
        }
    }
    Some((key, val))
}

fn scalar(ty: Ty, fv: &Field<'_>) -> Option<Value> {
    Some(match (ty, fv) {
        (Str, Field::Bytes(b)) => Value::String(string(b)?),
        (Int, Field::Varint(v)) => json!(*v as i64),
        (Bool, Field::Varint(v)) => Value::Bool(*v != 0),
        (Msg(m), Field::Bytes(b)) => message(m, b)?,
        (Time, Field::Bytes(b)) => {
            let mut secs = 0i64;
            for (no, fv) in fields(b)? {
                if let (1, Field::Varint(v)) = (no, fv) {
                    secs = v as i64;
                }
            }
            if secs <= 0 {
                return Some(Value::Null);
            }
            let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
            Value::String(
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()?,
            )
        }
        (Quantity, Field::Bytes(b)) => {
            let mut s = String::new();
            for (no, fv) in fields(b)? {
                if let (1, Field::Bytes(v)) = (no, fv) {
                    s = string(v)?;
                }
            }
            Value::String(s)
        }
        (IntOrStr, Field::Bytes(b)) => {
            let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
            for (no, fv) in fields(b)? {
                match (no, fv) {
                    (1, Field::Varint(v)) => ty = v,
                    (2, Field::Varint(v)) => i = v as i64,
                    (3, Field::Bytes(v)) => s = string(v)?,
                    _ => {}
                }
            }
            if ty == 1 {
                Value::String(s)
            } else {
                json!(i)
            }
        }
        _ => return None,
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Null => true,
        _ => false,
    }
}

fn message(name: &str, b: &[u8]) -> Option<Value> {
    let sch = schema(name);
    let mut out = Map::new();
    for (no, fv) in fields(b)? {
        let Some(fd) = sch.iter().find(|x| x.no == no) else {
            continue;
        };
        match fd.ty {
            MapStr | MapBytes | MapQuantity => {
                let Field::Bytes(entry) = fv else { continue };
                let (k, v) = map_entry(entry)?;
                let val = match (fd.ty, v) {
                    (MapStr, Some(v)) => Value::String(string(v)?),
                    (MapStr, None) => Value::String(String::new()),
                    (MapBytes, v) => Value::String(
                        base64::engine::general_purpose::STANDARD.encode(v.unwrap_or(&[])),
                    ),
                    (_, Some(v)) => scalar(Quantity, &Field::Bytes(v))?,
                    (_, None) => Value::String("0".into()),
                };
                let m = out.entry(fd.name).or_insert_with(|| json!({}));
                if let Some(m) = m.as_object_mut() {
                    m.insert(k, val);
                }
            }
            _ => {
                let v = scalar(fd.ty, &fv)?;
                if fd.repeated {
                    let a = out.entry(fd.name).or_insert_with(|| json!([]));
                    if let Some(a) = a.as_array_mut() {
                        a.push(v);
                    }
                } else if !is_zero(&v) || fd.keep_zero && !v.is_null() {
                    out.insert(fd.name.to_string(), v);
                }
            }
        }
    }
    Some(Value::Object(out))
}

const MAGIC: &[u8] = b"k8s\x00";

/// Decode a protobuf-encoded Kubernetes object (with its `runtime.Unknown` envelope).
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let bad = || Status::bad_request("unable to decode the protobuf body");
    let rest = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (no, fv) in fields(rest).ok_or_else(bad)? {
        match (no, fv) {
            (1, Field::Bytes(tm)) => {
                for (n2, f2) in fields(tm).ok_or_else(bad)? {
                    match (n2, f2) {
                        (1, Field::Bytes(v)) => api_version = string(v).ok_or_else(bad)?,
                        (2, Field::Bytes(v)) => kind = string(v).ok_or_else(bad)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    if schema(&kind).is_empty() {
        return Err(Status::unsupported_media_type(&format!(
            "application/vnd.kubernetes.protobuf for {kind}"
        )));
    }
    let mut obj = message(&kind, raw).ok_or_else(bad)?;
    obj["apiVersion"] = Value::String(api_version);
    obj["kind"] = Value::String(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(no: u64, wire: u64) -> u8 {
        ((no << 3) | wire) as u8
    }

    fn ld(no: u64, data: &[u8]) -> Vec<u8> {
        let mut v = vec![key(no, 2), data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn decodes_a_namespace() {
        let meta = ld(1, b"team-a");
        let obj = ld(1, &meta);
        let mut tm = ld(1, b"v1");
        tm.extend(ld(2, b"Namespace"));
        let mut unknown = ld(1, &tm);
        unknown.extend(ld(2, &obj));
        let mut body = MAGIC.to_vec();
        body.extend(unknown);
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
        );
    }
}
