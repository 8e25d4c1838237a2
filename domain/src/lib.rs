//! Warden's domain layer.
//!
//! The DTOs in [`dto`] and the validated value types in [`types`] are plain serde types and
//! compile for the browser too. Everything else sits behind the `ssr` feature: the database
//! entities, the stores, password hashing, the session store, the access policy (the one gate
//! every entry point asks) and the audit sink.

pub mod agent_protocol;
pub mod dto;
pub mod kubeconfig;
pub mod permissions;
pub mod types;

#[cfg(feature = "ssr")]
pub mod access;
#[cfg(feature = "ssr")]
pub mod audit;
#[cfg(feature = "ssr")]
pub mod bootstrap;
#[cfg(feature = "ssr")]
pub mod clock;
#[cfg(feature = "ssr")]
pub mod entities;
#[cfg(feature = "ssr")]
pub mod error;
#[cfg(feature = "ssr")]
pub mod identity;
#[cfg(feature = "ssr")]
pub mod ids;
#[cfg(feature = "ssr")]
pub mod latency;
#[cfg(feature = "ssr")]
pub mod secrets;
#[cfg(feature = "ssr")]
pub mod settings;

#[cfg(feature = "ssr")]
pub use error::{DomainError, DomainResult};

#[cfg(feature = "ssr")]
mod services;
#[cfg(feature = "ssr")]
pub use services::Services;
#[cfg(feature = "ssr")]
pub mod admin;
#[cfg(feature = "ssr")]
pub mod clusters;
#[cfg(feature = "ssr")]
pub mod kubectl;
#[cfg(feature = "ssr")]
pub mod recordings;
#[cfg(feature = "ssr")]
pub mod seed;
#[cfg(feature = "ssr")]
pub mod streams;
