//! Identity: who a person is to Warden and how they prove it.
//!
//! [`accounts`] (the user records: lookup, creation, passwords, one-time set-password links),
//! [`users`] (users as administrators manage them: list, explain, invite, disable, delete,
//! reset), [`password`] (hashing), [`login`] (the sign-in attempts and their throttling),
//! [`authn`] (sign-in, sign-out, API keys and sessions to a principal), [`mfa`] (TOTP second
//! factor), [`sso`] (OpenID Connect sign-in) and [`sessions`] (the session store).

pub mod accounts;
pub mod authn;
pub mod login;
pub mod mfa;
pub mod password;
pub mod sessions;
pub mod sso;
pub mod users;
