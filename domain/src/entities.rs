//! sea-orm entities. Server-side only: never sent to a browser (see `dto`).
pub mod api_keys;
pub mod audit_events;
pub mod audit_head;
pub mod bindings;
pub mod group_members;
pub mod groups;
pub mod login_throttle;
pub mod one_time_tokens;
pub mod org_settings;
pub mod organization;
pub mod projects;
pub mod roles;
pub mod sessions;
pub mod users;
