//! Validated value types. Each has a `parse` constructor and no public way around it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value was refused, phrased for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A normalised (trimmed, lower-cased) email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let s = raw.trim().to_ascii_lowercase();
        let bad = || InvalidValue("must be a valid email address, like name@example.com".into());
        if s.is_empty() || s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        if local.is_empty()
            || local.len() > 64
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(bad());
        }
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.0
    }
}
impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DNS-1123 label: lower-case alphanumerics and '-', starting and ending alphanumeric,
/// at most 63 characters. Used for project, cluster and namespace names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsLabel(String);

impl DnsLabel {
    pub const RULE: &'static str = "must be a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit";

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let ok = !raw.is_empty()
            && raw.len() <= 63
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidValue(Self::RULE.into()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for DnsLabel {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<DnsLabel> for String {
    fn from(value: DnsLabel) -> Self {
        value.0
    }
}
impl fmt::Display for DnsLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person's display name: 1-128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let s = raw.trim();
        if s.is_empty() || s.chars().count() > 128 || s.chars().any(char::is_control) {
            return Err(InvalidValue(
                "must be 1 to 128 characters with no control characters".into(),
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for DisplayName {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}
impl From<DisplayName> for String {
    fn from(value: DisplayName) -> Self {
        value.0
    }
}

/// A Kubernetes-style label selector over cluster labels: requirements separated by commas,
/// all of which must hold. `key=value` (or `key==value`), `key!=value`, `key` (present),
/// `!key` (absent), `key in (a,b)`, `key notin (a,b)`. Keys are `[prefix/]name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector(Vec<LabelRequirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelRequirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A label name or value (Kubernetes' rules): at most 63 letters, digits, `-`, `_` or `.`,
/// starting and ending with a letter or digit.
pub(crate) fn label_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
pub(crate) fn label_key_ok(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty() && p.len() <= 253 && p.split('.').all(|x| DnsLabel::parse(x).is_ok())
    });
    prefix_ok && label_name_ok(name)
}

fn label_key(raw: &str) -> Result<String, InvalidValue> {
    let k = raw.trim();
    if label_key_ok(k) {
        Ok(k.to_owned())
    } else {
        Err(InvalidValue(format!(
            "{k:?} is not a label key ([prefix/]name: letters, digits, '-', '_' or '.')"
        )))
    }
}

fn label_value(raw: &str) -> Result<String, InvalidValue> {
    let v = raw.trim();
    if v.is_empty() || label_name_ok(v) {
        Ok(v.to_owned())
    } else {
        Err(InvalidValue(format!("{v:?} is not a label value")))
    }
}

impl LabelSelector {
    pub const SYNTAX: &'static str =
        "key=value, key!=value, key, !key, key in (a,b), key notin (a,b), separated by commas";

    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(InvalidValue(format!(
                "an empty selector; write {}",
                Self::SYNTAX
            )));
        }
        if raw.len() > 1000 {
            return Err(InvalidValue("at most 1000 characters".into()));
        }
        // Split on the commas outside parentheses.
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in raw.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&raw[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
            if !(0..=1).contains(&depth) {
                return Err(InvalidValue(format!("unbalanced parentheses in {raw:?}")));
            }
        }
        if depth != 0 {
            return Err(InvalidValue(format!("unbalanced parentheses in {raw:?}")));
        }
        parts.push(&raw[start..]);
        let mut out = Vec::new();
        for part in parts {
            out.push(
                Self::requirement(part.trim())
                    .map_err(|e| InvalidValue(format!("{} (write {})", e.0, Self::SYNTAX)))?,
            );
        }
        Ok(Self(out))
    }

    fn requirement(p: &str) -> Result<LabelRequirement, InvalidValue> {
        if p.is_empty() {
            return Err(InvalidValue("an empty requirement".into()));
        }
        if let Some(k) = p.strip_prefix('!') {
            return Ok(LabelRequirement::Absent(label_key(k)?));
        }
        if let Some((k, v)) = p.split_once("!=") {
            return Ok(LabelRequirement::NotIn(
                label_key(k)?,
                vec![label_value(v)?],
            ));
        }
        if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            return Ok(LabelRequirement::In(label_key(k)?, vec![label_value(v)?]));
        }
        if let Some(open) = p.find('(') {
            let head = p[..open].trim();
            let Some(inner) = p[open + 1..].trim_end().strip_suffix(')') else {
                return Err(InvalidValue(format!("{p:?}: text after ')'")));
            };
            let (key, op) = head.rsplit_once(char::is_whitespace).ok_or_else(|| {
                InvalidValue(format!("{p:?}: expected key in (…) or key notin (…)"))
            })?;
            let values = inner
                .split(',')
                .map(label_value)
                .collect::<Result<Vec<_>, _>>()?;
            if values.iter().all(|v| v.is_empty()) {
                return Err(InvalidValue(format!("{p:?}: no values")));
            }
            let key = label_key(key)?;
            return match op {
                "in" => Ok(LabelRequirement::In(key, values)),
                "notin" => Ok(LabelRequirement::NotIn(key, values)),
                _ => Err(InvalidValue(format!(
                    "{p:?}: expected in or notin, not {op:?}"
                ))),
            };
        }
        if p.contains(char::is_whitespace) {
            return Err(InvalidValue(format!("{p:?} is not a requirement")));
        }
        Ok(LabelRequirement::Exists(label_key(p)?))
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::Absent(k) => !labels.contains_key(k),
        })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| match r {
                LabelRequirement::In(k, vs) if vs.len() == 1 => format!("{k}={}", vs[0]),
                LabelRequirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                LabelRequirement::NotIn(k, vs) if vs.len() == 1 => format!("{k}!={}", vs[0]),
                LabelRequirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                LabelRequirement::Exists(k) => k.clone(),
                LabelRequirement::Absent(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The password policy: at least 12 characters, at most 1024, not the email address itself.
pub const PASSWORD_MIN_LEN: usize = 12;
pub const PASSWORD_MAX_LEN: usize = 1024;

pub fn check_password_policy(password: &str, email: &str) -> Result<(), InvalidValue> {
    let n = password.chars().count();
    if n < PASSWORD_MIN_LEN {
        return Err(InvalidValue(format!(
            "must be at least {PASSWORD_MIN_LEN} characters"
        )));
    }
    if n > PASSWORD_MAX_LEN {
        return Err(InvalidValue(format!(
            "must be at most {PASSWORD_MAX_LEN} characters"
        )));
    }
    let p = password.trim().to_ascii_lowercase();
    let e = email.trim().to_ascii_lowercase();
    let local = e.split('@').next().unwrap_or_default();
    if p == e || (!local.is_empty() && p == local) {
        return Err(InvalidValue("must not be your email address".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" John@Example.com ").unwrap().as_str(),
            "john@example.com"
        );
        for bad in [
            "",
            "john",
            "john@",
            "@example.com",
            "a@b",
            "a b@example.com",
            "a@@b.com",
            "a@b..com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn dns_labels() {
        assert!(DnsLabel::parse("dev").is_ok());
        assert!(DnsLabel::parse("a-1").is_ok());
        for bad in ["", "Dev", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(DnsLabel::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn password_policy() {
        assert!(check_password_policy("short", "a@b.co").is_err());
        assert!(check_password_policy("john@example.com", "john@example.com").is_err());
        assert!(check_password_policy("JOHN@EXAMPLE.COM", "john@example.com").is_err());
        assert!(check_password_policy("correct horse battery", "john@example.com").is_ok());
    }

    #[test]
    fn label_selectors() {
        let labels: std::collections::BTreeMap<String, String> = [
            ("env".to_owned(), "production".to_owned()),
            ("team".to_owned(), "a".to_owned()),
        ]
        .into();
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&labels);
        assert!(m("env=production"));
        assert!(m(" env == production "));
        assert!(!m("env=staging"));
        assert!(m("env!=staging"));
        assert!(m("env,team=a"));
        assert!(!m("env=production,team=b"));
        assert!(m("!region"));
        assert!(!m("!env"));
        assert!(m("env in (staging, production)"));
        assert!(!m("env notin (production)"));
        assert!(m("region notin (eu)"));
        assert!(m("example.com/tier!=gold"));
        assert_eq!(
            LabelSelector::parse("env = production,team in (a,b)")
                .unwrap()
                .to_string(),
            "env=production,team in (a,b)"
        );
        for bad in [
            "",
            "env=",
            "=x",
            "env=prod uction",
            "env in (a",
            "env in a,b)",
            "env within (a)",
            "env=production,,team",
            "Env Prod",
            "-env=x",
        ] {
            let parsed = LabelSelector::parse(bad);
            // `env=` (an empty value) is legal in Kubernetes: it matches an empty label.
            if bad == "env=" {
                assert!(parsed.is_ok());
                continue;
            }
            assert!(parsed.is_err(), "{bad:?} should be refused");
        }
    }
}
