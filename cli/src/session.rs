//! `wardenctl login`, `logout` and `whoami`: a sign-in with email and password (and the second
//! factor when the account has one) that leaves an API key of limited life in the
//! configuration file, and nothing else: the password is never stored, the session is ended
//! at once, and the key is revoked by `logout` (or replaced by the next `login`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use serde_json::json;
use warden_domain::dto::{CreatedApiKey, Me};

use crate::client::{Api, ApiError};
use crate::config::Config;

pub struct LoginArgs {
    pub url: String,
    pub email: Option<String>,
    pub password_stdin: bool,
    pub mfa_code: Option<String>,
    pub days: u32,
}

/// One line of standard input, without its line break.
pub fn read_stdin_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Read one line: from the terminal with `prompt` (without echo when `secret`), or from
/// standard input when it is not a terminal.
fn ask(prompt: &str, secret: bool) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        if secret {
            return Ok(rpassword::prompt_password(prompt)?);
        }
        eprint!("{prompt}");
        std::io::stderr().flush()?;
    }
    let line = read_stdin_line()?;
    if line.is_empty() {
        anyhow::bail!("{} was empty", prompt.trim().trim_end_matches(':'));
    }
    Ok(line)
}

pub async fn login(args: LoginArgs, config_path: &Path) -> anyhow::Result<()> {
    let email = match args.email {
        Some(e) => e,
        None => ask("Email: ", false)?,
    };
    let password = if args.password_stdin {
        read_stdin_line()?
    } else {
        ask("Password: ", true)?
    };
    let api = Api::with_session(&args.url)?;
    let signed_in: Result<Me, ApiError> = api
        .post(
            "/api/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await;
    drop(password);
    let me = match signed_in {
        Ok(me) => me,
        Err(e) if e.code() == Some("mfa_required") => {
            let code = match args.mfa_code {
                Some(c) => c,
                None => ask(
                    "Code from your authenticator app (or a recovery code): ",
                    false,
                )?,
            };
            api.post("/api/v1/auth/mfa", &json!({"code": code.trim()}))
                .await?
        }
        Err(e) if e.code() == Some("local_sign_in_disabled") => {
            anyhow::bail!(
                "{e}\nThis account signs in with single sign-on: create an API key in the console (your user menu, API keys) and set WARDEN_API_KEY"
            )
        }
        Err(e) => return Err(e.into()),
    };
    if me.must_change_password {
        let _ = api.post_empty("/api/v1/auth/logout", &json!({})).await;
        anyhow::bail!(
            "your password must be changed first: sign in to the console at {} and choose a new one, then run wardenctl login again",
            api.base()
        );
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "this machine".into());
    let name: String = format!("wardenctl on {host}").chars().take(60).collect();
    let created: Result<CreatedApiKey, ApiError> = api
        .post(
            "/api/v1/api-keys",
            &json!({"name": name, "expires_in_days": args.days}),
        )
        .await;
    // The session has done its job whatever happened.
    let _ = api.post_empty("/api/v1/auth/logout", &json!({})).await;
    let created = created?;
    let previous = Config::load(config_path).unwrap_or_default();
    let config = Config {
        url: Some(api.base().to_owned()),
        api_key: Some(created.secret),
        api_key_id: Some(created.key.id.clone()),
        email: Some(me.user.email.clone()),
    };
    config.save(config_path)?;
    // The key this one replaces (same Warden) is revoked with itself.
    if let (Some(old_key), Some(old_id), Some(old_url)) =
        (previous.api_key, previous.api_key_id, previous.url)
    {
        if old_url == api.base() && old_id != created.key.id {
            if let Ok(old) = Api::with_key(&old_url, &old_key) {
                let _ = old
                    .delete(&format!("/api/v1/api-keys/{}", crate::client::seg(&old_id)))
                    .await;
            }
        }
    }
    eprintln!(
        "Signed in to {} as {}. API key \"{}\" ({}…) expires {}; saved in {}.",
        api.base(),
        me.user.email,
        created.key.name,
        created.key.prefix,
        created.key.expires_at,
        config_path.display()
    );
    Ok(())
}

/// Revoke the saved key and forget it.
pub async fn logout(config_path: &Path) -> anyhow::Result<()> {
    let mut config = Config::load(config_path)?;
    let (Some(url), Some(key)) = (config.url.clone(), config.api_key.clone()) else {
        eprintln!(
            "Not signed in (nothing saved in {}).",
            config_path.display()
        );
        return Ok(());
    };
    let api = Api::with_key(&url, &key)?;
    // A key saved without its id (by hand, or by an older wardenctl): found by its prefix.
    let id = match config.api_key_id.clone() {
        Some(id) => Some(id),
        None => match api.get::<serde_json::Value>("/api/v1/api-keys").await {
            Ok(page) => page["items"].as_array().and_then(|items| {
                items.iter().find_map(|k| {
                    let prefix = k["prefix"].as_str().filter(|p| !p.is_empty())?;
                    key.starts_with(&format!("{prefix}_"))
                        .then(|| k["id"].as_str().map(str::to_owned))
                        .flatten()
                })
            }),
            Err(ApiError::Api { status: 401, .. }) => None,
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "{e}\nThe key was not revoked and is still saved; try again, or revoke it in the console"
                ))
            }
        },
    };
    let revoked = match &id {
        Some(id) => match api
            .delete(&format!("/api/v1/api-keys/{}", crate::client::seg(id)))
            .await
        {
            Ok(()) => "the API key is revoked",
            // Already revoked or expired: nothing left to revoke.
            Err(ApiError::Api { status: 401, .. }) => "the API key had already ended",
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "{e}\nThe key was not revoked and is still saved; try again, or revoke it in the console"
                ))
            }
        },
        None => "the API key had already ended (or is not one of yours: check the console)",
    };
    config.api_key = None;
    config.api_key_id = None;
    config.email = None;
    config.save(config_path)?;
    eprintln!("Signed out of {url}; {revoked}.");
    Ok(())
}

pub async fn whoami(
    api: &Api,
    format: crate::output::Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let me: serde_json::Value = api.get("/api/v1/me").await?;
    if format == crate::output::Format::Json {
        crate::output::print_json(out, &me)?;
        return Ok(());
    }
    let t = crate::output::text_at;
    writeln!(out, "{} ({})", t(&me, "/user/email"), t(&me, "/user/name"))?;
    writeln!(out, "Warden:       {}", api.base())?;
    writeln!(out, "Through:      {}", t(&me, "/session_type"))?;
    writeln!(
        out,
        "Organization: {}",
        match t(&me, "/org_permissions") {
            p if p.is_empty() => "(no permissions)".to_owned(),
            p => p,
        }
    )?;
    let grants = me["grants"].as_array().cloned().unwrap_or_default();
    if grants.is_empty() {
        writeln!(out, "Grants:       none")?;
    } else {
        writeln!(out, "Grants:")?;
        for g in grants {
            let mut line = format!("  {} at {} scope", t(&g, "/role"), t(&g, "/scope"));
            if let Some(p) = g["project"].as_str() {
                line.push_str(&format!(", project {p}"));
            }
            let ns = t(&g, "/namespaces");
            if !ns.is_empty() {
                line.push_str(&format!(", namespaces {ns}"));
            }
            let via = t(&g, "/via");
            if !via.is_empty() {
                line.push_str(&format!(" (via {via})"));
            }
            let until = t(&g, "/expires_at");
            if !until.is_empty() {
                line.push_str(&format!(", until {until}"));
            }
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
