//! A cluster's fields as administrators write them: description, labels, proxy.

use super::*;

pub fn check_description(d: &str) -> DomainResult<String> {
    let d = d.trim();
    if d.chars().count() > 1024 || d.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(
            "description",
            "must be at most 1024 characters without control characters",
        ));
    }
    Ok(d.to_owned())
}

/// Labels follow Kubernetes' rules: `[prefix/]name` keys, values of at most 63 characters.
pub fn check_labels(labels: &BTreeMap<String, String>) -> DomainResult<BTreeMap<String, String>> {
    if labels.len() > 64 {
        return Err(DomainError::invalid("labels", "at most 64 labels"));
    }
    for (k, v) in labels {
        if !label_key_ok(k) {
            return Err(DomainError::invalid(
                "labels",
                format!("label key {k:?} must be [prefix/]name: a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            ));
        }
        if !(v.is_empty() || label_name_ok(v)) {
            return Err(DomainError::invalid(
                "labels",
                format!("label value {v:?} must be empty or at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"),
            ));
        }
    }
    Ok(labels.clone())
}

fn clean(o: &Option<String>) -> Option<String> {
    o.as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub fn check_proxy(p: &ProxySettings) -> DomainResult<ProxySettings> {
    let mut fields = BTreeMap::new();
    let out = ProxySettings {
        http_proxy: clean(&p.http_proxy),
        https_proxy: clean(&p.https_proxy),
        no_proxy: clean(&p.no_proxy),
        ca_pem: p
            .ca_pem
            .as_ref()
            .map(|s| s.trim().to_owned() + "\n")
            .filter(|s| !s.trim().is_empty()),
    };
    for (field, v) in [
        ("proxy.http_proxy", &out.http_proxy),
        ("proxy.https_proxy", &out.https_proxy),
    ] {
        if let Some(v) = v {
            let host = v
                .strip_prefix("http://")
                .map(|r| r.rsplit('@').next().unwrap_or_default());
            let ok = v.len() <= 1024
                && !v.chars().any(|c| c.is_control() || c.is_whitespace())
                && host.is_some_and(|h| !h.is_empty() && !h.starts_with(':'));
            if !ok {
                fields.insert(
                    field.to_owned(),
                    "must be an http://host:port URL (an HTTP proxy that supports CONNECT)"
                        .to_owned(),
                );
            }
        }
    }
    if let Some(n) = &out.no_proxy {
        if n.len() > 2048 || n.chars().any(|c| c.is_control()) {
            fields.insert(
                "proxy.no_proxy".into(),
                "must be a comma-separated list of hosts of at most 2048 characters".into(),
            );
        }
    }
    if let Some(ca) = &out.ca_pem {
        if ca.len() > 65_536
            || !ca.contains("-----BEGIN CERTIFICATE-----")
            || !ca.contains("-----END CERTIFICATE-----")
        {
            fields.insert(
                "proxy.ca_pem".into(),
                "must be one or more PEM certificates".into(),
            );
        }
    }
    if fields.is_empty() {
        Ok(out)
    } else {
        Err(DomainError::Invalid { fields })
    }
}
