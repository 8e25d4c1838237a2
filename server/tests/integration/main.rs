//! The server's integration tests, one binary: each module used to be its own test target, and
//! every target linked the whole server again (minutes of linking and gigabytes of disk per
//! build on two cores). Modules keep their own helpers; nothing is shared through globals.

mod access;
mod audit;
mod audit_scale;
mod auth;
mod chart;
mod cli;
mod clusters;
mod downloads;
mod durability;
mod gateway;
mod gateway_tls;
mod guard;
mod jit;
mod keys;
mod live_streams;
mod matrix;
mod mfa;
mod orgscale;
mod overview;
mod platform;
mod pods;
mod replicas;
mod retention;
mod schema;
mod siem;
mod sso;
mod support;
mod terminal;
