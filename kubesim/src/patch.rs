//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge patch (the
//! directives kubectl sends) and server-side apply (merge plus field ownership and conflicts).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::store::db::ManagerEntry;

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or_else(|| {
        "json: cannot unmarshal object into Go value of type jsonpatch.Patch".to_string()
    })?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        let path = op.get("path").and_then(Value::as_str).unwrap_or("");
        match kind {
            "add" => add(target, path, value_of(op)?)?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(target, path, value_of(op)?)?;
            }
            "test" => {
                let v = target.pointer(path);
                if v != Some(&value_of(op)?) {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            "move" => {
                let from = op.get("from").and_then(Value::as_str).unwrap_or("");
                let v = remove(target, from)?;
                add(target, path, v)?;
            }
            "copy" => {
                let from = op.get("from").and_then(Value::as_str).unwrap_or("");
                let v = target
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("copy from {from}: missing value"))?;
                add(target, path, v)?;
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}

fn value_of(op: &Value) -> Result<Value, String> {
    op.get("value")
        .cloned()
        .ok_or_else(|| "missing value".to_string())
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn parent_and_key(path: &str) -> Result<(String, String), String> {
    let idx = path
        .rfind('/')
        .ok_or_else(|| format!("invalid path {path}"))?;
    Ok((path[..idx].to_string(), unescape(&path[idx + 1..])))
}

fn add(target: &mut Value, path: &str, v: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = v;
        return Ok(());
    }
    let (parent, key) = parent_and_key(path)?;
    let p = target.pointer_mut(&parent).ok_or_else(|| {
        format!("add operation does not apply: doc is missing path: \"{path}\": missing value")
    })?;
    match p {
        Value::Object(m) => {
            m.insert(key, v);
            Ok(())
        }
        Value::Array(a) => {
            if key == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = key.parse().map_err(|_| format!("invalid index {key}"))?;
            if i > a.len() {
                return Err(format!(
                    "add operation does not apply: index {i} out of bounds"
                ));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err(format!(
            "add operation does not apply: doc is missing path: \"{path}\""
        )),
    }
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, key) = parent_and_key(path)?;
    let missing = || {
        format!("remove operation does not apply: doc is missing path: \"{path}\": missing value")
    };
    match target.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&key).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = key.parse().map_err(|_| missing())?;
            if i >= a.len() {
                return Err(missing());
            }
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// The merge key of a list field (`None`: atomic list, replaced as a whole).
pub fn merge_key(path: &[String], field: &str) -> Option<&'static str> {
    let in_container = path
        .iter()
        .any(|p| p == "containers" || p == "initContainers" || p == "ephemeralContainers");
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "ports" if in_container => Some("containerPort"),
        "ports" => Some("port"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Lists of scalars merged as sets by strategic merge patch.
fn is_set_list(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn key_of<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.get(key)
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Strategic merge patch (maps merge, keyed lists merge by key, `$patch`, `$setElementOrder`,
/// `$retainKeys` and `$deleteFromPrimitiveList` directives).
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    smp(target, patch, &mut Vec::new());
}

fn smp(target: &mut Value, patch: &Value, path: &mut Vec<String>) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: BTreeSet<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(k.as_str()));
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            if let Some(a) = v.as_array() {
                orders.push((field.to_string(), a.clone()));
            }
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) =
                (t.get_mut(field).and_then(Value::as_array_mut), v.as_array())
            {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match v {
            Value::Object(inner) => {
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") {
                    t.remove(k);
                    continue;
                }
                path.push(k.clone());
                smp(t.entry(k.clone()).or_insert(Value::Null), v, path);
                path.pop();
            }
            Value::Array(items) => {
                if let Some(mk) = merge_key(path, k) {
                    path.push(k.clone());
                    let cur = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                    merge_keyed_list(cur, items, mk, path);
                    path.pop();
                } else if is_set_list(k) {
                    let cur = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                    if let Some(list) = cur.as_array_mut() {
                        for i in items {
                            if !list.contains(i) {
                                list.push(i.clone());
                            }
                        }
                    } else {
                        *cur = v.clone();
                    }
                } else {
                    t.insert(k.clone(), strip_directives(v));
                }
            }
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        let mk = merge_key(path, &field);
        if let Some(list) = t.get_mut(&field).and_then(Value::as_array_mut) {
            let pos = |item: &Value| {
                order.iter().position(|o| match mk {
                    Some(k) => key_of(o, k).is_some() && key_of(o, k) == key_of(item, k),
                    None => o == item,
                })
            };
            let mut items: Vec<Value> = std::mem::take(list);
            items.sort_by_key(|i| pos(i).unwrap_or(usize::MAX));
            *list = items;
        }
    }
}

fn merge_keyed_list(cur: &mut Value, items: &[Value], mk: &str, path: &mut Vec<String>) {
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *cur = Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        );
        return;
    }
    if !cur.is_array() {
        *cur = Value::Array(Vec::new());
    }
    let Some(list) = cur.as_array_mut() else {
        return;
    };
    for item in items {
        let Some(kv) = key_of(item, mk).cloned() else {
            list.push(strip_directives(item));
            continue;
        };
        let idx = list.iter().position(|x| key_of(x, mk) == Some(&kv));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = idx {
                list.remove(i);
            }
            continue;
        }
        match idx {
            Some(i) => smp(&mut list[i], item, path),
            None => list.push(strip_directives(item)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server-side apply

/// Leaf fields of an object in structured-merge-diff path notation, with their values.
/// Keyed list items also appear as their own entry (the item's identity).
pub fn leaves(obj: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            if k == "apiVersion" || k == "kind" || k == "status" {
                continue;
            }
            if k == "metadata" {
                if let Some(md) = v.as_object() {
                    for (mk, mv) in md {
                        if matches!(
                            mk.as_str(),
                            "name"
                                | "namespace"
                                | "uid"
                                | "resourceVersion"
                                | "creationTimestamp"
                                | "generation"
                                | "managedFields"
                                | "deletionTimestamp"
                                | "selfLink"
                        ) {
                            continue;
                        }
                        walk(
                            mv,
                            &format!(".metadata.{mk}"),
                            &mut vec!["metadata".into(), mk.clone()],
                            &mut out,
                        );
                    }
                }
                continue;
            }
            walk(v, &format!(".{k}"), &mut vec![k.clone()], &mut out);
        }
    }
    out
}

fn walk(v: &Value, p: &str, path: &mut Vec<String>, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(k.clone());
                walk(c, &format!("{p}.{k}"), path, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            let field = path.last().cloned().unwrap_or_default();
            let parent: Vec<String> = path[..path.len().saturating_sub(1)].to_vec();
            match merge_key(&parent, &field) {
                Some(mk) if items.iter().all(|i| i.get(mk).is_some()) => {
                    for item in items {
                        let kv = item.get(mk).cloned().unwrap_or(Value::Null);
                        let ip = format!("{p}[{mk}={kv}]");
                        out.insert(ip.clone(), Value::Bool(true));
                        if let Some(m) = item.as_object() {
                            for (k, c) in m {
                                path.push(k.clone());
                                walk(c, &format!("{ip}.{k}"), path, out);
                                path.pop();
                            }
                        }
                    }
                }
                _ => {
                    out.insert(p.to_string(), v.clone());
                }
            }
        }
        other => {
            out.insert(p.to_string(), other.clone());
        }
    }
}

/// Merge an applied configuration into a live object (keyed lists by key, atomic lists
/// replaced, maps merged).
fn apply_merge(live: &mut Value, config: &Value) {
    strategic_merge(live, config);
}

/// Remove one leaf (or keyed item) path from an object.
fn remove_path(obj: &mut Value, p: &str) {
    let segs = split_path(p);
    remove_segs(obj, &segs);
}

#[derive(Debug)]
enum Seg {
    Field(String),
    Item(String, Value),
}

fn split_path(p: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            segs.push(Seg::Field(r[..end].to_string()));
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = find_close(r);
            let inner = &r[..end];
            if let Some((k, v)) = inner.split_once('=') {
                let val = serde_json::from_str(v).unwrap_or(Value::String(v.to_string()));
                segs.push(Seg::Item(k.to_string(), val));
            }
            rest = r.get(end + 1..).unwrap_or("");
        } else {
            break;
        }
    }
    segs
}

fn find_close(s: &str) -> usize {
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            ']' if !in_str => return i,
            _ => {}
        }
    }
    s.len()
}

fn remove_segs(obj: &mut Value, segs: &[Seg]) {
    match segs {
        [] => {}
        [Seg::Field(f)] => {
            if let Some(m) = obj.as_object_mut() {
                m.remove(f);
            }
        }
        [Seg::Field(f), Seg::Item(k, v)] => {
            if let Some(list) = obj.get_mut(f).and_then(Value::as_array_mut) {
                list.retain(|i| i.get(k) != Some(v));
            }
        }
        [Seg::Field(f), Seg::Item(k, v), rest @ ..] => {
            if let Some(list) = obj.get_mut(f).and_then(Value::as_array_mut) {
                for i in list.iter_mut().filter(|i| i.get(k) == Some(v)) {
                    remove_segs(i, rest);
                }
            }
        }
        [Seg::Field(f), rest @ ..] => {
            if let Some(c) = obj.get_mut(f) {
                remove_segs(c, rest);
            }
        }
        [Seg::Item(..), ..] => {}
    }
}

/// One apply conflict.
pub struct Conflict {
    pub manager: String,
    pub path: String,
}

/// The outcome of a server-side apply.
pub struct Applied {
    pub object: Value,
    pub managers: BTreeMap<String, ManagerEntry>,
}

/// Server-side apply of `config` by `manager` onto `live` (None: create).
pub fn server_side_apply(
    live: Option<&Value>,
    managers: &BTreeMap<String, ManagerEntry>,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
) -> Result<Applied, Vec<Conflict>> {
    let cfg_leaves = leaves(config);
    let live_leaves = live.map(leaves).unwrap_or_default();
    let mut managers = managers.clone();

    // Conflicts: a field the config sets to a different value, owned by another manager.
    let mut conflicts = Vec::new();
    for (p, v) in &cfg_leaves {
        let Some(lv) = live_leaves.get(p) else {
            continue;
        };
        if lv == v {
            continue;
        }
        for (name, m) in &managers {
            if name != manager && m.fields.contains(p) {
                conflicts.push(Conflict {
                    manager: name.clone(),
                    path: p.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }

    let mut obj = live.cloned().unwrap_or_else(|| {
        let mut o = Map::new();
        for k in ["apiVersion", "kind"] {
            if let Some(v) = config.get(k) {
                o.insert(k.into(), v.clone());
            }
        }
        Value::Object(o)
    });

    // Fields this manager applied before and no longer applies are removed, unless another
    // manager also owns them.
    let previous: BTreeSet<String> = managers
        .get(manager)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let mut dropped: Vec<&String> = previous
        .iter()
        .filter(|p| !cfg_leaves.contains_key(*p))
        .filter(|p| {
            !managers.iter().any(|(n, m)| {
                n != manager
                    && m.fields
                        .iter()
                        .any(|f| f == *p || f.starts_with(p.as_str()))
            })
        })
        .collect();
    // Remove keyed items before their fields (a field removed first would lose the key).
    dropped.sort_by_key(|p| p.len());
    for p in dropped {
        remove_path(&mut obj, p);
    }

    apply_merge(&mut obj, config);

    // Ownership: the applier owns exactly what it applied; forced fields leave other owners.
    for (name, m) in managers.iter_mut() {
        if name != manager {
            m.fields
                .retain(|f| !cfg_leaves.contains_key(f) || live_leaves.get(f) == cfg_leaves.get(f));
        }
    }
    managers.retain(|n, m| n == manager || !m.fields.is_empty());
    managers.insert(
        manager.to_string(),
        ManagerEntry {
            apply: true,
            api_version: api_version.to_string(),
            fields: cfg_leaves.keys().cloned().collect(),
            applied: Some(config.clone()),
        },
    );
    Ok(Applied {
        object: obj,
        managers,
    })
}

/// Ownership after an Update-style write (create, update, patch) by `manager`.
pub fn track_update(
    old: Option<&Value>,
    new: &Value,
    managers: &BTreeMap<String, ManagerEntry>,
    manager: &str,
    api_version: &str,
) -> BTreeMap<String, ManagerEntry> {
    let before = old.map(leaves).unwrap_or_default();
    let after = leaves(new);
    let mut managers = managers.clone();
    let changed: BTreeSet<String> = after
        .iter()
        .filter(|(p, v)| before.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    for m in managers.values_mut() {
        m.fields
            .retain(|f| after.contains_key(f) && !changed.contains(f));
    }
    if !changed.is_empty() {
        let e = managers.entry(manager.to_string()).or_default();
        e.apply = false;
        e.api_version = api_version.to_string();
        e.fields.extend(changed);
    }
    managers.retain(|_, m| !m.fields.is_empty());
    managers
}

/// The apiserver's message for apply conflicts.
pub fn conflict_message(
    conflicts: &[Conflict],
    managers: &BTreeMap<String, ManagerEntry>,
) -> String {
    let show = |name: &str| match managers.get(name) {
        Some(m) if !m.apply => format!("\"{}\" using {}", name, m.api_version),
        _ => format!("\"{name}\""),
    };
    if conflicts.len() == 1 {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            show(&conflicts[0].manager),
            conflicts[0].path
        );
    }
    let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in conflicts {
        by.entry(&c.manager).or_default().push(&c.path);
    }
    let mut lines = Vec::new();
    for (m, paths) in by {
        lines.push(format!("conflicts with {}:", show(m)));
        for p in paths {
            lines.push(format!("- {p}"));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// A manager's display name for conflict causes.
pub fn conflict_cause(c: &Conflict, managers: &BTreeMap<String, ManagerEntry>) -> Value {
    let who = match managers.get(&c.manager) {
        Some(m) if !m.apply => format!("\"{}\" using {}", c.manager, m.api_version),
        _ => format!("\"{}\"", c.manager),
    };
    serde_json::json!({"reason": "FieldManagerConflict", "message": format!("conflict with {who}"), "field": c.path})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn smp_containers_and_order() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}, "metadata": {"labels": {"k": "v", "d": "e"}}});
        let p = json!({"metadata": {"labels": {"d": null}}, "spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "z"}]}});
        strategic_merge(&mut t, &p);
        assert_eq!(t["spec"]["containers"][0]["name"], "b");
        assert_eq!(t["spec"]["containers"][1]["image"], "z");
        assert!(t["metadata"]["labels"].get("d").is_none());
        let p2 = json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}});
        strategic_merge(&mut t, &p2);
        assert_eq!(t["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn json_patch_ops() {
        let mut t = json!({"a": [1, 2]});
        json_patch(&mut t, &json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/a/0", "value": 9}, {"op": "add", "path": "/b", "value": "x"}])).unwrap();
        assert_eq!(t, json!({"a": [9, 2, 3], "b": "x"}));
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/zz"}])).is_err());
    }

    #[test]
    fn ssa_conflicts_and_removal() {
        let cfg1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}}, "data": {"x": "1", "y": "2"}});
        let r = server_side_apply(None, &BTreeMap::new(), &cfg1, "kubectl", "v1", false)
            .ok()
            .unwrap();
        // Another manager changes data.x.
        let mut changed = r.object.clone();
        changed["data"]["x"] = json!("9");
        let m2 = track_update(Some(&r.object), &changed, &r.managers, "kubectl-edit", "v1");
        // Re-apply with y dropped and x still "1": conflict on .data.x.
        let cfg2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "1"}});
        let err = server_side_apply(Some(&changed), &m2, &cfg2, "kubectl", "v1", false)
            .err()
            .unwrap();
        assert_eq!(
            conflict_message(&err, &m2),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.x"
        );
        let ok = server_side_apply(Some(&changed), &m2, &cfg2, "kubectl", "v1", true)
            .ok()
            .unwrap();
        assert_eq!(ok.object["data"], json!({"x": "1"}));
        assert!(ok.object["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("a").is_none()));
    }
}
