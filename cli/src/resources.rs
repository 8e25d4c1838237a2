//! `wardenctl get|create|delete` and the membership commands: the organization's objects
//! through the REST API, with the caller's own rights (Warden decides; the CLI never assumes).

use std::io::Write;

use serde_json::{json, Value};

use crate::client::{seg, Api};
use crate::output::{print_item, print_items, text_at, Column, Format};

/// What `get` and `delete` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "project")]
    Projects,
    #[value(alias = "user")]
    Users,
    #[value(alias = "group")]
    Groups,
    #[value(alias = "role")]
    Roles,
    #[value(alias = "binding")]
    Bindings,
    #[value(alias = "cluster")]
    Clusters,
    #[value(name = "api-keys", alias = "api-key")]
    ApiKeys,
    #[value(name = "access-requests", alias = "access-request")]
    AccessRequests,
    #[value(alias = "stream")]
    Streams,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Projects => "/api/v1/projects",
            Kind::Users => "/api/v1/users",
            Kind::Groups => "/api/v1/groups",
            Kind::Roles => "/api/v1/roles",
            Kind::Bindings => "/api/v1/bindings",
            Kind::Clusters => "/api/v1/clusters",
            Kind::ApiKeys => "/api/v1/api-keys",
            Kind::AccessRequests => "/api/v1/access-requests",
            Kind::Streams => "/api/v1/streams",
        }
    }

    /// Whether the API reads one object at `path/{name}`.
    fn has_item(self) -> bool {
        !matches!(self, Kind::Bindings | Kind::ApiKeys | Kind::Streams)
    }

    fn columns(self) -> &'static [Column] {
        macro_rules! col {
            ($h:literal, $p:literal) => {
                Column {
                    heading: $h,
                    read: |v| text_at(v, $p),
                }
            };
            ($h:literal, |$v:ident| $e:expr) => {
                Column {
                    heading: $h,
                    read: |$v| $e,
                }
            };
        }
        match self {
            Kind::Projects => &[
                col!("NAME", "/name"),
                col!("DESCRIPTION", "/description"),
                col!("CREATED", "/created_at"),
            ],
            Kind::Users => &[
                col!("EMAIL", "/email"),
                col!("NAME", "/name"),
                col!("STATUS", "/status"),
                col!("ORIGIN", "/origin"),
                col!("GROUPS", "/groups"),
                col!("LAST SIGN-IN", "/last_login_at"),
            ],
            Kind::Groups => &[
                col!("NAME", "/name"),
                col!("MEMBERS", "/member_count"),
                col!("BUILT-IN", "/builtin"),
                col!("DESCRIPTION", "/description"),
            ],
            Kind::Roles => &[
                col!("NAME", "/name"),
                col!("SCOPE", "/scope"),
                col!("BUILT-IN", "/builtin"),
                col!("PERMISSIONS", "/permissions"),
            ],
            Kind::Bindings => &[
                col!("ID", "/id"),
                col!("SUBJECT", |v| format!(
                    "{}:{}",
                    text_at(v, "/subject/kind"),
                    text_at(v, "/subject/name")
                )),
                col!("ROLE", "/role"),
                col!("SCOPE", "/scope"),
                col!("PROJECT", "/project"),
                col!("NAMESPACES", "/namespaces"),
                col!("EXPIRES", "/expires_at"),
            ],
            Kind::Clusters => &[
                col!("NAME", "/name"),
                col!("PROJECT", "/project"),
                col!("STATUS", "/status"),
                col!("VERSION", "/kubernetes_version"),
                col!("NODES", "/node_count"),
                col!("LAST SEEN", "/last_seen"),
            ],
            Kind::ApiKeys => &[
                col!("ID", "/id"),
                col!("NAME", "/name"),
                col!("PREFIX", "/prefix"),
                col!("EXPIRES", "/expires_at"),
                col!("LAST USED", "/last_used_at"),
                col!("REVOKED", "/revoked"),
            ],
            Kind::AccessRequests => &[
                col!("ID", "/id"),
                col!("REQUESTER", "/requester"),
                col!("PROJECT", "/project"),
                col!("ROLE", "/role"),
                col!("NAMESPACES", "/namespaces"),
                col!("FOR", |v| v["duration_secs"]
                    .as_i64()
                    .map(crate::access::duration_text)
                    .unwrap_or_default()),
                col!("STATUS", "/status"),
                col!("REASON", "/reason"),
            ],
            Kind::Streams => &[
                col!("ID", "/id"),
                col!("KIND", "/kind"),
                col!("USER", "/user"),
                col!("CLUSTER", "/cluster"),
                col!("NAMESPACE", "/namespace"),
                col!("TARGET", "/target"),
                col!("STARTED", "/started_at"),
            ],
        }
    }
}

/// `wardenctl get KIND [NAME]`.
pub async fn get(
    api: &Api,
    kind: Kind,
    name: Option<&str>,
    query: &[(&str, String)],
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    match name {
        Some(name) if kind.has_item() => {
            let item: Value = api.get(&format!("{}/{}", kind.path(), seg(name))).await?;
            // A cluster's detail nests the cluster beside its history.
            let shown = item
                .get("cluster")
                .filter(|_| kind == Kind::Clusters)
                .unwrap_or(&item);
            print_item(out, shown, kind.columns(), format)?;
            if format == Format::Table && kind == Kind::Groups {
                let members: Vec<String> = item["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| text_at(m, "/email"))
                    .collect();
                writeln!(out, "MEMBERS:      {}", members.join(", "))?;
            }
        }
        Some(name) => {
            // No single read: the list, narrowed to that id.
            let items = api.list_all(kind.path(), query, 100_000).await?;
            let found: Vec<Value> = items
                .into_iter()
                .filter(|i| text_at(i, "/id") == name)
                .collect();
            let Some(item) = found.first() else {
                anyhow::bail!("no {} with id {name}", kind_word(kind));
            };
            print_item(out, item, kind.columns(), format)?;
        }
        None => {
            let items = api.list_all(kind.path(), query, 100_000).await?;
            print_items(out, &items, kind.columns(), format)?;
        }
    }
    Ok(())
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Projects => "project",
        Kind::Users => "user",
        Kind::Groups => "group",
        Kind::Roles => "role",
        Kind::Bindings => "binding",
        Kind::Clusters => "cluster",
        Kind::ApiKeys => "API key",
        Kind::AccessRequests => "access request",
        Kind::Streams => "stream",
    }
}

/// `wardenctl delete KIND NAME` (`force`: a cluster whose agent is not connected).
pub async fn delete(api: &Api, kind: Kind, name: &str, force: bool) -> anyhow::Result<()> {
    if kind == Kind::AccessRequests {
        anyhow::bail!("access requests are not deleted: wardenctl access cancel|revoke ID");
    }
    let mut path = format!("{}/{}", kind.path(), seg(name));
    if force && kind == Kind::Clusters {
        path.push_str("?force=true");
    }
    api.delete(&path).await?;
    eprintln!("{} {name} deleted", kind_word(kind));
    Ok(())
}

/// One object an update answered, as `get KIND NAME` shows it.
pub fn get_printed(
    out: &mut impl Write,
    kind: Kind,
    item: &Value,
    format: Format,
) -> anyhow::Result<()> {
    print_item(out, item, kind.columns(), format)?;
    Ok(())
}

/// A subject of a binding: exactly one of a user and a group.
pub fn subject(user: Option<String>, group: Option<String>) -> anyhow::Result<Value> {
    match (user, group) {
        (Some(u), None) => Ok(json!({"kind": "user", "name": u})),
        (None, Some(g)) => Ok(json!({"kind": "group", "name": g})),
        _ => anyhow::bail!("name exactly one subject: --user EMAIL or --group NAME"),
    }
}

/// Print what a create answered: the object, plus what only this answer carries.
pub fn created(
    out: &mut impl Write,
    kind: Kind,
    answer: &Value,
    format: Format,
) -> anyhow::Result<()> {
    if format == Format::Json {
        crate::output::print_json(out, answer)?;
        return Ok(());
    }
    match kind {
        Kind::Users => {
            writeln!(out, "user {} created", text_at(answer, "/user/email"))?;
            if let Some(url) = answer["set_password_url"].as_str() {
                writeln!(
                    out,
                    "one-time link to set the password (give it to the user): {url}"
                )?;
            }
        }
        Kind::Clusters => {
            writeln!(out, "cluster {} created", text_at(answer, "/cluster/name"))?;
            writeln!(
                out,
                "connect it: {} (the link works once, until {})",
                text_at(answer, "/apply_command"),
                text_at(answer, "/manifest_url_expires_at")
            )?;
        }
        Kind::Bindings => {
            writeln!(out, "binding {} created", text_at(answer, "/id"))?;
            for w in answer["warnings"].as_array().into_iter().flatten() {
                writeln!(out, "warning: {}", crate::output::text(w))?;
            }
        }
        _ => writeln!(
            out,
            "{} {} created",
            kind_word(kind),
            text_at(answer, "/name")
        )?,
    }
    Ok(())
}
