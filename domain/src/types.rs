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
}
