//! `wardenctl`: Warden from the command line, over the REST API (`/api/v1`).
//!
//! `wardenctl login` signs in (password, and the second factor when the account has one) and
//! saves an API key of limited life; every other command sends that key (or `WARDEN_API_KEY`)
//! and does exactly what the caller could do in the console: Warden checks each request.

mod access;
mod audit;
mod client;
mod config;
mod output;
mod resources;
mod session;
mod upgrade;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use client::{seg, Api};
use output::Format;
use resources::Kind;

const DEFAULT_URL: &str = "http://127.0.0.1:3000";

#[derive(Parser)]
#[command(
    name = "wardenctl",
    version,
    about = "Warden from the command line: sign in, manage projects, users, groups, roles, bindings and clusters, download kubeconfigs, ask for access, search the audit log",
    after_help = "Credentials: `wardenctl login` saves an API key in the configuration file (mode 0600); WARDEN_API_KEY (a key made in the console) takes precedence, for scripts."
)]
struct Cli {
    /// Warden's URL (else WARDEN_URL, else the one `login` saved, else http://127.0.0.1:3000).
    #[arg(long, global = true, env = "WARDEN_URL")]
    url: Option<String>,
    /// The configuration file (else WARDENCTL_CONFIG, else ~/.config/warden/wardenctl.json).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Output: table (for people) or json (the API's own answer, for scripts).
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the audit filters' size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Sign in and save an API key for the next commands.
    Login {
        /// Your email (asked when not given).
        #[arg(long)]
        email: Option<String>,
        /// Read the password from standard input (one line), for scripts.
        #[arg(long)]
        password_stdin: bool,
        /// The second factor's code (asked when the account needs one and this is not given).
        /// Prefer WARDEN_MFA_CODE in scripts: a command line is readable by every local user.
        #[arg(long, env = "WARDEN_MFA_CODE", hide_env_values = true)]
        mfa_code: Option<String>,
        /// Days until the saved API key expires (1 to 365).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=365))]
        days: u32,
    },
    /// Revoke the saved API key and forget it.
    Logout,
    /// Who you are to Warden: your permissions and grants.
    Whoami,
    /// List objects, or show one.
    Get {
        #[arg(value_enum)]
        kind: Kind,
        /// A name (projects, users by email, groups, roles, clusters, access requests by id) or an id (bindings, API keys, streams).
        name: Option<String>,
        /// Bindings and clusters: of this project only.
        #[arg(long)]
        project: Option<String>,
        /// Users, projects, clusters: a search text.
        #[arg(long, short = 'q')]
        search: Option<String>,
        /// Streams: every user's (kubeconfig.write), not only yours.
        #[arg(long)]
        all: bool,
    },
    /// Create an object.
    Create {
        #[command(subcommand)]
        what: Create,
    },
    /// Delete an object.
    Delete {
        #[arg(value_enum)]
        kind: Kind,
        /// Its name, email or id.
        name: String,
        /// Clusters: delete even when the agent is not connected to be told.
        #[arg(long)]
        force: bool,
    },
    /// Group membership.
    Group {
        #[command(subcommand)]
        what: GroupCmd,
    },
    /// Activate or deactivate a user.
    User {
        #[command(subcommand)]
        what: UserCmd,
    },
    /// A cluster's agent manifest (a fresh one-time bootstrap token, for kubectl apply -f).
    Manifest {
        cluster: String,
        /// Write it to this file (else standard output).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    /// Download a kubeconfig for yourself (short-lived; mode 0600 when written to a file).
    Kubeconfig {
        #[command(subcommand)]
        what: Option<KubeconfigCmd>,
        /// For this cluster only.
        #[arg(long)]
        cluster: Option<String>,
        /// Write it to this file (else standard output).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
    /// Just-in-time access: ask for a role for a while, approve, deny.
    Access {
        #[command(subcommand)]
        what: AccessCmd,
    },
    /// Replace this wardenctl by the build your Warden serves for this platform (checked
    /// against the SHA-256 Warden lists before anything is replaced).
    Upgrade {
        /// Only say whether Warden serves another build.
        #[arg(long)]
        check: bool,
    },
    /// Search the audit log (the newest first), or export it.
    Audit {
        #[command(subcommand)]
        what: Option<AuditCmd>,
        #[command(flatten)]
        filters: audit::Filters,
        /// How many events at most (with --follow: shown before the new ones).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Keep printing new matching events as they happen (oldest first; -o json: one per line).
        #[arg(long)]
        follow: bool,
    },
}

#[derive(Subcommand)]
enum Create {
    Project {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// A user: with --password they choose a new one at first sign-in; without, the answer carries a one-time link to set it.
    User {
        email: String,
        #[arg(long)]
        name: String,
        /// Read a first password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    Group {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// A custom role.
    Role {
        name: String,
        /// organization, project or namespace.
        #[arg(long)]
        scope: String,
        /// A permission (repeat the flag); `wardenctl get roles` shows the built-ins' ones.
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// Import a cluster: prints the kubectl command that connects its agent.
    Cluster {
        name: String,
        #[arg(long)]
        project: String,
        #[arg(long)]
        description: Option<String>,
        /// A label KEY=VALUE (repeat the flag).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Share it with another project (repeat the flag).
        #[arg(long = "share-with")]
        shared_with: Vec<String>,
    },
    /// Bind a user or a group to a role: organization scope without --project.
    Binding {
        #[arg(long, conflicts_with = "group")]
        user: Option<String>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long)]
        role: String,
        #[arg(long)]
        project: Option<String>,
        /// A namespace, for namespace roles (repeat the flag).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// For a while only: e.g. 8h or 2d.
        #[arg(long = "for", value_parser = access::parse_duration)]
        duration: Option<i64>,
        /// Bind in kube-system and other system namespaces knowingly.
        #[arg(long)]
        confirm_system_namespaces: bool,
    },
}

#[derive(Subcommand)]
enum GroupCmd {
    AddMember { group: String, email: String },
    RemoveMember { group: String, email: String },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Deactivate: every session, API key and kubeconfig stops working at once.
    Deactivate {
        email: String,
    },
    Activate {
        email: String,
    },
}

#[derive(Subcommand)]
enum KubeconfigCmd {
    /// Revoke every kubeconfig issued so far: yours, or a user's (kubeconfig.write).
    Revoke {
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand)]
enum AccessCmd {
    /// Ask for a role in a project for a while, with a reason.
    Request {
        #[arg(long)]
        project: String,
        #[arg(long)]
        role: String,
        /// A namespace, for namespace roles (repeat the flag).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// The cluster you need it on (for the approvers).
        #[arg(long)]
        cluster: Option<String>,
        /// How long: e.g. 30m, 8h.
        #[arg(long = "for", value_parser = access::parse_duration)]
        duration: i64,
        #[arg(long)]
        reason: String,
        /// Take a break-glass role at once, without approval (every organization administrator is alerted).
        #[arg(long)]
        break_glass: bool,
    },
    /// Requests: yours, those you may decide (--approvals), or all.
    List {
        #[arg(long, value_parser = ["mine", "approvals", "all"])]
        scope: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    Approve {
        id: String,
        #[arg(long)]
        comment: Option<String>,
        /// Grant it for less time than asked.
        #[arg(long = "for", value_parser = access::parse_duration)]
        duration: Option<i64>,
    },
    Deny {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Withdraw your own pending request.
    Cancel { id: String },
    /// End an approved grant before its time.
    Revoke {
        id: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Export every matching event (CSV or NDJSON), streamed.
    Export {
        #[arg(long, value_parser = ["csv", "ndjson"], default_value = "csv")]
        format: String,
        /// Write it to this file (else standard output).
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    let signing_in = matches!(cli.command, Command::Login { .. });
    if let Err(e) = run(cli).await {
        let mut text = format!("error: {e}");
        if let Some(api) = e.downcast_ref::<client::ApiError>() {
            if matches!(api, client::ApiError::Api { status: 401, .. }) && !signing_in {
                text.push_str("\nSign in with: wardenctl login (or set WARDEN_API_KEY)");
            }
            if let client::ApiError::Api {
                fields: Some(f), ..
            } = api
            {
                if let Some(map) = f.as_object() {
                    for (k, v) in map {
                        text.push_str(&format!("\n  {k}: {}", output::text(v)));
                    }
                }
            }
        }
        eprintln!("{text}");
        std::process::exit(1);
    }
}

/// The configured URL and API key (the environment first).
fn credentials(cli: &Cli, path: &std::path::Path) -> anyhow::Result<(String, Option<String>)> {
    let saved = config::Config::load(path)?;
    let url = cli
        .url
        .clone()
        .or_else(|| saved.url.clone())
        .unwrap_or_else(|| DEFAULT_URL.to_owned());
    let env_key = std::env::var("WARDEN_API_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    if env_key.is_some() {
        let env_url = std::env::var("WARDEN_URL").ok().filter(|u| !u.is_empty());
        env_key_may_go_to(env_url.as_deref(), &url)?;
    }
    let key = env_key.or_else(|| saved_key_for(&saved, &url));
    Ok((url, key))
}

/// `WARDEN_API_KEY` set beside `WARDEN_URL` belongs to that server: a `--url` naming another
/// (a copied command, someone's look-alike) is refused rather than handed the key.
fn env_key_may_go_to(env_url: Option<&str>, url: &str) -> anyhow::Result<()> {
    match env_url {
        Some(issuer) if !same_server(issuer, url) => anyhow::bail!(
            "WARDEN_API_KEY is set for WARDEN_URL ({issuer}), and --url names another server ({url}): the key is not sent there. Unset WARDEN_API_KEY, or point WARDEN_URL at it"
        ),
        _ => Ok(()),
    }
}

fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// The saved API key, for the Warden that issued it only: a `--url` or `WARDEN_URL` naming
/// another server (a typo, a copied command, someone's look-alike) never receives it.
fn saved_key_for(saved: &config::Config, url: &str) -> Option<String> {
    let issuer = saved.url.as_deref().unwrap_or(DEFAULT_URL);
    same_server(issuer, url)
        .then(|| saved.api_key.clone())
        .flatten()
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    /// A kubeconfig (a private key) written with `-f` into a directory others write to: a link
    /// planted at the path is replaced, its target untouched; the file is the owner's only; an
    /// output not finished leaves the old file as it was.
    #[cfg(unix)]
    #[test]
    fn output_files_are_replaced_never_written_through() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let path = dir.path().join("kubeconfig");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut w = sink(Some(&path)).unwrap();
        w.write_all(b"client-key-data: secret").unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_file(), "the link was replaced");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "client-key-data: secret"
        );

        let mut cut = sink(Some(&path)).unwrap();
        cut.write_all(b"half of an exp").unwrap();
        drop(cut);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "client-key-data: secret"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary file stays behind: {left:?}");
    }

    #[test]
    fn the_environments_key_goes_only_to_the_environments_warden() {
        let issuer = Some("https://warden.example.com");
        assert!(env_key_may_go_to(issuer, "https://warden.example.com/").is_ok());
        assert!(env_key_may_go_to(issuer, "https://WARDEN.example.com").is_ok());
        let e = env_key_may_go_to(issuer, "https://warden.example.com.evil.test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not sent there"), "{e}");
        // Without WARDEN_URL the key goes where the command says (documented).
        assert!(env_key_may_go_to(None, "https://elsewhere.example.com").is_ok());
    }

    #[test]
    fn the_saved_key_goes_only_to_the_warden_that_issued_it() {
        let saved = config::Config {
            url: Some("https://warden.example.com".into()),
            api_key: Some("wk_secret".into()),
            ..Default::default()
        };
        for url in [
            "https://warden.example.com",
            "https://warden.example.com/",
            "https://WARDEN.example.com",
        ] {
            assert_eq!(
                saved_key_for(&saved, url).as_deref(),
                Some("wk_secret"),
                "{url}"
            );
        }
        for url in [
            "https://warden.example.com.evil.example",
            "http://warden.example.com",
            "https://warden.example.org",
            DEFAULT_URL,
        ] {
            assert_eq!(saved_key_for(&saved, url), None, "{url}");
        }
    }
}

/// Where output goes: standard output, or a file readable by its owner only. The file is
/// written beside its path under a new name (created for this write, `0600`) and renamed over
/// the path when complete ([`Sink::finish`]): a link planted at the path (a directory others
/// write to) is replaced, never written through, a file of someone else's there is not
/// truncated and left behind readable by them, and an output cut short (the export failed)
/// leaves the old file as it was.
fn sink(file: Option<&PathBuf>) -> anyhow::Result<Sink> {
    let Some(path) = file else {
        return Ok(Sink::Stdout(std::io::stdout().lock()));
    };
    let tmp = config::temp_beside(path)?;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(Sink::File {
        w: Some(std::io::BufWriter::new(f)),
        tmp,
        path: path.clone(),
    })
}

enum Sink {
    Stdout(std::io::StdoutLock<'static>),
    File {
        w: Option<std::io::BufWriter<std::fs::File>>,
        tmp: PathBuf,
        path: PathBuf,
    },
}

impl Sink {
    /// The output is complete: flushed, and a file synced and put at its path.
    fn finish(mut self) -> anyhow::Result<()> {
        match &mut self {
            Sink::Stdout(o) => o.flush()?,
            Sink::File { w, tmp, path } => {
                let f = w.take().expect("finished once").into_inner().map_err(|e| {
                    anyhow::anyhow!("cannot write {}: {}", path.display(), e.error())
                })?;
                f.sync_all()
                    .and_then(|_| std::fs::rename(&*tmp, &*path))
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Stdout(o) => o.write(buf),
            Sink::File { w: Some(w), .. } => w.write(buf),
            Sink::File { w: None, .. } => Err(std::io::Error::other("output already finished")),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(o) => o.flush(),
            Sink::File { w: Some(w), .. } => w.flush(),
            Sink::File { w: None, .. } => Ok(()),
        }
    }
}

impl Drop for Sink {
    /// Not finished: the new file goes, the path keeps what it had.
    fn drop(&mut self) {
        if let Sink::File {
            w: Some(_), tmp, ..
        } = self
        {
            let _ = std::fs::remove_file(&*tmp);
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let path = match &cli.config {
        Some(p) => p.clone(),
        None => config::default_path()?,
    };
    let (url, key) = credentials(&cli, &path)?;
    let format = cli.output;
    let mut out = std::io::stdout().lock();
    if let Command::Login {
        email,
        password_stdin,
        mfa_code,
        days,
    } = cli.command
    {
        return session::login(
            session::LoginArgs {
                url,
                email,
                password_stdin,
                mfa_code,
                days,
            },
            &path,
        )
        .await;
    }
    if let Command::Logout = cli.command {
        return session::logout(&path).await;
    }
    let Some(key) = key else {
        anyhow::bail!(
            "not signed in to {url}: run wardenctl login (or set WARDEN_API_KEY to a key made in the console)"
        );
    };
    let api = Api::with_key(&url, &key)?;
    match cli.command {
        Command::Login { .. } | Command::Logout => unreachable!("handled above"),
        Command::Whoami => session::whoami(&api, format, &mut out).await?,
        Command::Upgrade { check } => upgrade::upgrade(&api, check, &mut out).await?,
        Command::Get {
            kind,
            name,
            project,
            search,
            all,
        } => {
            let mut q = vec![
                ("project", project.unwrap_or_default()),
                ("q", search.unwrap_or_default()),
            ];
            if all {
                q.push(("all", "true".into()));
            }
            resources::get(&api, kind, name.as_deref(), &q, format, &mut out).await?
        }
        Command::Create { what } => create(&api, what, format, &mut out).await?,
        Command::Delete { kind, name, force } => {
            resources::delete(&api, kind, &name, force).await?
        }
        Command::Group { what } => {
            let group: Value = match what {
                GroupCmd::AddMember { group, email } => {
                    api.post(
                        &format!("/api/v1/groups/{}/members", seg(&group)),
                        &json!({"user": email}),
                    )
                    .await?
                }
                GroupCmd::RemoveMember { group, email } => {
                    api.delete_json(&format!(
                        "/api/v1/groups/{}/members/{}",
                        seg(&group),
                        seg(&email)
                    ))
                    .await?
                }
            };
            resources::get_printed(&mut out, Kind::Groups, &group, format)?;
        }
        Command::User { what } => {
            let (email, status) = match what {
                UserCmd::Deactivate { email } => (email, "deactivated"),
                UserCmd::Activate { email } => (email, "active"),
            };
            let user: Value = api
                .patch(
                    &format!("/api/v1/users/{}", seg(&email)),
                    &json!({"status": status}),
                )
                .await?;
            resources::get_printed(&mut out, Kind::Users, &user, format)?;
        }
        Command::Manifest { cluster, file } => {
            let text = api
                .get_raw(&format!("/api/v1/clusters/{}/manifest", seg(&cluster)), &[])
                .await?
                .text()
                .await?;
            let mut w = sink(file.as_ref())?;
            w.write_all(text.as_bytes())?;
            w.finish()?;
        }
        Command::Kubeconfig {
            what: Some(KubeconfigCmd::Revoke { user }),
            ..
        } => {
            let path = match &user {
                Some(u) => format!("/api/v1/users/{}/kubeconfig/revoke", seg(u)),
                None => "/api/v1/kubeconfig/revoke".to_owned(),
            };
            let answer: Value = api.post(&path, &json!({})).await?;
            if format == Format::Json {
                output::print_json(&mut out, &answer)?;
            } else {
                eprintln!(
                    "every kubeconfig issued to {} so far is revoked",
                    user.as_deref().unwrap_or("you")
                );
            }
        }
        Command::Kubeconfig {
            what: None,
            cluster,
            file,
        } => {
            let text = api
                .get_raw(
                    "/api/v1/kubeconfig",
                    &[("cluster", cluster.unwrap_or_default())],
                )
                .await?
                .text()
                .await?;
            let mut w = sink(file.as_ref())?;
            w.write_all(text.as_bytes())?;
            w.finish()?;
            if let Some(f) = file {
                eprintln!(
                    "kubeconfig written to {} (use: KUBECONFIG={} kubectl get namespaces)",
                    f.display(),
                    f.display()
                );
            }
        }
        Command::Access { what } => access_cmd(&api, what, format, &mut out).await?,
        Command::Audit {
            what: None,
            filters,
            limit,
            follow: true,
        } => audit::follow(&api, &filters, limit, format, &mut out).await?,
        Command::Audit {
            what: None,
            filters,
            limit,
            follow: false,
        } => audit::search(&api, &filters, limit, format, &mut out).await?,
        Command::Audit {
            what: Some(AuditCmd::Export { format: f, file }),
            filters,
            ..
        } => {
            let mut w = sink(file.as_ref())?;
            let n = audit::export(&api, &filters, f == "csv", &mut w).await?;
            w.finish()?;
            if let Some(file) = file {
                eprintln!("{n} bytes written to {}", file.display());
            }
        }
    }
    Ok(())
}

async fn create(
    api: &Api,
    what: Create,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (kind, path, body) = match what {
        Create::Project { name, description } => (
            Kind::Projects,
            "/api/v1/projects",
            json!({"name": name, "description": description}),
        ),
        Create::User {
            email,
            name,
            password_stdin,
        } => {
            let mut body = json!({"email": email, "name": name});
            if password_stdin {
                body["password"] = json!(session::read_stdin_line()?);
            }
            (Kind::Users, "/api/v1/users", body)
        }
        Create::Group { name, description } => (
            Kind::Groups,
            "/api/v1/groups",
            json!({"name": name, "description": description}),
        ),
        Create::Role {
            name,
            scope,
            permissions,
            description,
        } => (
            Kind::Roles,
            "/api/v1/roles",
            json!({"name": name, "scope": scope, "permissions": permissions, "description": description}),
        ),
        Create::Cluster {
            name,
            project,
            description,
            labels,
            shared_with,
        } => {
            let mut map = serde_json::Map::new();
            for l in labels {
                let (k, v) = l
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--label {l}: write KEY=VALUE"))?;
                map.insert(k.to_owned(), json!(v));
            }
            (
                Kind::Clusters,
                "/api/v1/clusters",
                json!({"name": name, "project": project, "description": description,
                       "labels": map, "shared_with": shared_with}),
            )
        }
        Create::Binding {
            user,
            group,
            role,
            project,
            namespaces,
            duration,
            confirm_system_namespaces,
        } => (
            Kind::Bindings,
            "/api/v1/bindings",
            json!({
                "subject": resources::subject(user, group)?,
                "role": role,
                "project": project,
                "namespaces": namespaces,
                "expires_in_secs": duration,
                "confirm_system_namespaces": confirm_system_namespaces,
            }),
        ),
    };
    let answer: Value = api.post(path, &body).await?;
    resources::created(out, kind, &answer, format)
}

async fn access_cmd(
    api: &Api,
    what: AccessCmd,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use warden_domain::dto::DecideAccessRequest as Decide;
    let answer = match what {
        AccessCmd::Request {
            project,
            role,
            namespaces,
            cluster,
            duration,
            reason,
            break_glass,
        } => {
            let ask = warden_domain::dto::CreateAccessRequest {
                project,
                role,
                namespaces,
                cluster,
                duration_secs: duration,
                reason,
                confirm_system_namespaces: false,
            };
            access::request(api, &ask, break_glass).await?
        }
        AccessCmd::List { scope, status } => {
            let q = [
                ("scope", scope.unwrap_or_default()),
                ("status", status.unwrap_or_default()),
            ];
            return resources::get(api, Kind::AccessRequests, None, &q, format, out).await;
        }
        AccessCmd::Approve {
            id,
            comment,
            duration,
        } => {
            access::decide(
                api,
                &id,
                "approve",
                &Decide {
                    comment,
                    duration_secs: duration,
                },
            )
            .await?
        }
        AccessCmd::Deny { id, comment } => {
            access::decide(
                api,
                &id,
                "deny",
                &Decide {
                    comment,
                    duration_secs: None,
                },
            )
            .await?
        }
        AccessCmd::Cancel { id } => access::decide(api, &id, "cancel", &Decide::default()).await?,
        AccessCmd::Revoke { id, comment } => {
            access::decide(
                api,
                &id,
                "revoke",
                &Decide {
                    comment,
                    duration_secs: None,
                },
            )
            .await?
        }
    };
    resources::get_printed(out, Kind::AccessRequests, &answer, format)
}
