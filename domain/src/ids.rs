//! Newtypes for identifiers. They wrap a UUID and are stored as its text form.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn new() -> Self { Self(uuid::Uuid::new_v4()) }
            pub fn parse(s: &str) -> Option<Self> { uuid::Uuid::parse_str(s).ok().map(Self) }
            pub fn as_uuid(&self) -> uuid::Uuid { self.0 }
        }
        impl Default for $name { fn default() -> Self { Self::new() } }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { self.0.hyphenated().fmt(f) }
        }
    )*};
}

id_type!(
    UserId,
    ProjectId,
    GroupId,
    RoleId,
    BindingId,
    OrgId,
    AuditEventId,
    ApiKeyId,
    TokenId,
    ClusterId
);
