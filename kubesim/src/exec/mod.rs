//! The "container runtime": real local processes for pod containers (logs, attach) and for
//! exec sessions (pipes or a pseudo-terminal), plus the WebSocket channel protocol that
//! kubectl and kube clients speak to them.

pub mod confine;
pub mod logbuf;
pub mod process;
pub mod runtime;
pub mod stream;
