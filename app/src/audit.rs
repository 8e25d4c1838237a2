//! The audit log: search with filters and keyset paging. Organization auditors see every
//! event; project auditors see their projects' events.

use leptos::prelude::*;
use leptos_router::components::Form;
use leptos_router::hooks::use_query_map;
use leptos_router::params::ParamsMap;
use warden_domain::dto::{AuditEventDto, AuditQuery, Page};

use crate::error::AppError;
use crate::ui::{short_time, FormErrors, LoadError, Loading};

const PAGE_SIZE: u64 = 50;

#[server(prefix = "/sfn", endpoint = "search_audit")]
pub async fn search_audit(query: AuditQuery) -> Result<Page<AuditEventDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    // The gate has audited a denial already; the caller gets a plain 403.
    let scope = warden_domain::access::audit_scope(&svc.policy, &who)
        .await
        .map_err(|_| AppError::Forbidden)?;
    Ok(warden_domain::audit::search_at(&svc.db, &query, scope.as_deref(), svc.clock.now()).await?)
}

fn query_of(q: &ParamsMap) -> AuditQuery {
    let get = |k: &str| {
        q.get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    AuditQuery {
        kind: get("kind"),
        actor: get("actor"),
        outcome: get("outcome"),
        action: get("action"),
        project: get("project"),
        cluster: get("cluster"),
        namespace: get("namespace"),
        since: get("since"),
        until: get("until"),
        q: get("q"),
        range: get("range"),
        verb: get("verb"),
        resource: get("resource"),
        status: get("status").and_then(|s| s.parse().ok()),
        source_ip: get("source_ip"),
        // Discovery and health requests are folded away unless asked for.
        discovery: Some(get("discovery").as_deref() == Some("true")),
        limit: Some(PAGE_SIZE),
        cursor: get("cursor"),
    }
}

/// The filter keys the page carries in its URL.
const FILTER_KEYS: &[&str] = &[
    "range",
    "since",
    "until",
    "kind",
    "outcome",
    "actor",
    "action",
    "project",
    "cluster",
    "namespace",
    "verb",
    "resource",
    "status",
    "source_ip",
    "q",
    "discovery",
];

/// The CSV export of exactly the current filter (every page of it, newest first).
fn export_href(q: &ParamsMap) -> String {
    let mut out = ParamsMap::new();
    for k in FILTER_KEYS {
        if let Some(v) = q
            .get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
        {
            out.insert(*k, v);
        }
    }
    if out.get("discovery").is_none() {
        out.insert("discovery", "false".to_owned());
    }
    out.insert("format", "csv".to_owned());
    format!("/api/v1/audit/export{}", out.to_query_string())
}

const RANGES: &[(&str, &str)] = &[
    ("15m", "Last 15 minutes"),
    ("1h", "Last hour"),
    ("24h", "Last 24 hours"),
    ("7d", "Last 7 days"),
    ("30d", "Last 30 days"),
];
const VERBS: &[(&str, &str)] = &[
    ("get", "get"),
    ("list", "list"),
    ("watch", "watch"),
    ("create", "create"),
    ("update", "update"),
    ("patch", "patch"),
    ("delete", "delete"),
    ("deletecollection", "deletecollection"),
    ("exec", "exec"),
    ("attach", "attach"),
    ("portforward", "port-forward"),
];

const KINDS: &[(&str, &str)] = &[
    ("console", "Console"),
    ("sign_in", "Sign-in"),
    ("kube_api", "Kubernetes API"),
    ("terminal", "Terminal"),
    ("agent", "Agent"),
    ("system", "System"),
];
const OUTCOMES: &[(&str, &str)] = &[
    ("allowed", "Allowed"),
    ("denied", "Denied"),
    ("error", "Error"),
];

#[component]
fn Select(
    name: &'static str,
    label: &'static str,
    any: &'static str,
    options: &'static [(&'static str, &'static str)],
    current: Option<String>,
) -> impl IntoView {
    let id = format!("audit-{name}");
    let for_id = id.clone();
    view! {
        <div class="filter">
            <label for=for_id>{label}</label>
            <select id=id name=name>
                <option value="" selected=current.is_none()>{any}</option>
                {options.iter().map(|(v, t)| view! {
                    <option value=*v selected=current.as_deref() == Some(*v)>{*t}</option>
                }).collect_view()}
            </select>
        </div>
    }
}

#[component]
fn TextFilter(
    name: &'static str,
    label: &'static str,
    current: Option<String>,
    #[prop(optional)] placeholder: Option<&'static str>,
    #[prop(optional)] kind: Option<&'static str>,
) -> impl IntoView {
    let id = format!("audit-{name}");
    let for_id = id.clone();
    view! {
        <div class="filter">
            <label for=for_id>{label}</label>
            <input id=id name=name type=kind.unwrap_or("text") value=current placeholder=placeholder autocomplete="off"/>
        </div>
    }
}

#[component]
pub fn AuditPage() -> impl IntoView {
    let q = use_query_map();
    let events = Resource::new(move || q.with(query_of), search_audit);
    view! {
        <h1>"Audit log"</h1>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                let result = events.await;
                if let Err(AppError::Forbidden) = &result {
                    return view! { <LoadError err=AppError::Forbidden/> }.into_any();
                }
                let current = q.get_untracked();
                let aq = query_of(&current);
                let filtered = [&aq.kind, &aq.actor, &aq.outcome, &aq.action, &aq.project, &aq.cluster, &aq.namespace, &aq.since, &aq.until, &aq.q, &aq.range, &aq.verb, &aq.resource, &aq.source_ip]
                    .iter()
                    .any(|f| f.is_some())
                    || aq.status.is_some();
                let show_discovery = aq.discovery == Some(true);
                let export = export_href(&current);
                let next_href = result.as_ref().ok().and_then(|p| p.next.clone()).map(|n| {
                    let mut p = current.clone();
                    p.replace("cursor", n);
                    format!("/audit{}", p.to_query_string())
                });
                let newest_href = aq.cursor.is_some().then(|| {
                    let mut p = current.clone();
                    p.remove("cursor");
                    format!("/audit{}", p.to_query_string())
                });
                view! {
                    <Form method="GET" action="/audit" attr:class="filters" attr:role="search" attr:aria-label="Filter the audit log">
                        <Select name="range" label="When" any="Any time" options=RANGES current=aq.range.clone()/>
                        <TextFilter name="since" label="From (UTC)" current=aq.since.clone() kind="datetime-local"/>
                        <TextFilter name="until" label="To (UTC)" current=aq.until.clone() kind="datetime-local"/>
                        <Select name="kind" label="Kind" any="Any kind" options=KINDS current=aq.kind.clone()/>
                        <Select name="outcome" label="Outcome" any="Any outcome" options=OUTCOMES current=aq.outcome.clone()/>
                        <TextFilter name="actor" label="Who (email starts with)" current=aq.actor.clone() placeholder="sally@"/>
                        <TextFilter name="project" label="Project" current=aq.project.clone()/>
                        <TextFilter name="cluster" label="Cluster" current=aq.cluster.clone()/>
                        <TextFilter name="namespace" label="Namespace" current=aq.namespace.clone()/>
                        <Select name="verb" label="Verb (Kubernetes)" any="Any verb" options=VERBS current=aq.verb.clone()/>
                        <TextFilter name="resource" label="Resource (Kubernetes)" current=aq.resource.clone() placeholder="pods"/>
                        <TextFilter name="status" label="HTTP status" current=aq.status.map(|s| s.to_string()) placeholder="403"/>
                        <TextFilter name="source_ip" label="Source address" current=aq.source_ip.clone()/>
                        <TextFilter name="action" label="Action starts with" current=aq.action.clone() placeholder="user."/>
                        <TextFilter name="q" label="Text" current=aq.q.clone() placeholder="resource, path, reason"/>
                        <div class="filter">
                            <label class="check">
                                <input type="checkbox" name="discovery" value="true" checked=show_discovery data-testid="audit-discovery"/>
                                " Show discovery and health requests"
                            </label>
                        </div>
                        <div class="filter-actions">
                            <button type="submit" class="btn btn-primary">"Search"</button>
                            {filtered.then(|| view! { <a class="btn" href="/audit">"Clear"</a> })}
                            <a class="btn" href=export data-testid="audit-export" rel="external" download="">"Export CSV"</a>
                        </div>
                    </Form>
                    {match result {
                        Ok(page) if page.items.is_empty() => view! {
                            <p class="empty">{if filtered { "No event matches these filters. Widen the time range or clear a filter." } else { "No events yet." }}</p>
                        }.into_any(),
                        Ok(page) => view! { <EventsTable events=page.items/> }.into_any(),
                        Err(AppError::Invalid { fields }) => view! {
                            <div class="form-error" role="alert">
                                {fields.into_iter().map(|(k, v)| view! { <p>{format!("{k}: {v}")}</p> }).collect_view()}
                            </div>
                        }.into_any(),
                        Err(e) => view! { <p class="form-error" role="alert">{FormErrors::from_app(&e).general.unwrap_or_default()}</p> }.into_any(),
                    }}
                    <nav class="pager" aria-label="Pages">
                        <span>{newest_href.map(|h| view! { <a href=h>"← Newest"</a> })}</span>
                        <span>{next_href.map(|h| view! { <a href=h data-testid="audit-next">"Older events →"</a> })}</span>
                    </nav>
                }.into_any()
            })}
        </Transition>
    }
}

/// What happened, in a few words: a Kubernetes request's verb and resource, or the action.
fn what(e: &AuditEventDto) -> String {
    if e.kind == "kube_api" {
        let verb = e.action.strip_prefix("kube.").unwrap_or(&e.action);
        let verb = match e.resource_kind.as_deref() {
            Some("pods/exec") => "exec",
            Some("pods/attach") => "attach",
            Some("pods/portforward") => "port-forward",
            _ => verb,
        };
        return match (&e.resource_kind, &e.resource_name) {
            (Some(k), Some(n)) => format!("{verb} {k} {n}"),
            (Some(k), None) => format!("{verb} {k}"),
            // Discovery and health: the API path on the cluster (without `/clusters/<name>`).
            _ => format!(
                "{verb} {}",
                e.path.as_deref().map(api_path).unwrap_or_default()
            ),
        };
    }
    match (&e.resource_kind, &e.resource_name) {
        (Some(k), Some(n)) => format!("{} ({k} {n})", e.action),
        (None, Some(n)) => format!("{} ({n})", e.action),
        _ => e.action.clone(),
    }
}

/// A gateway path as the cluster sees it: `/clusters/demo/apis?timeout=32s` -> `/apis`.
fn api_path(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    match path
        .strip_prefix("/clusters/")
        .and_then(|p| p.split_once('/'))
    {
        Some((_, rest)) => format!("/{rest}"),
        None => path.to_owned(),
    }
}

/// Where it happened: cluster and namespace.
fn place(e: &AuditEventDto) -> String {
    match (&e.cluster, &e.namespace) {
        (Some(c), Some(n)) => format!("{c} / {n}"),
        (Some(c), None) => c.clone(),
        (None, Some(n)) => n.clone(),
        _ => String::new(),
    }
}

#[component]
fn EventsTable(events: Vec<AuditEventDto>) -> impl IntoView {
    view! {
        <div class="table-scroll">
        <table class="table" data-testid="audit-events">
            <thead><tr>
                <th scope="col">"Time (UTC)"</th><th scope="col">"Who"</th><th scope="col">"What"</th>
                <th scope="col">"Where"</th><th scope="col">"Outcome"</th><th scope="col">"Details"</th>
            </tr></thead>
            <tbody>
                {events.into_iter().map(|e| {
                    let outcome_class = format!("chip outcome-{}", e.outcome);
                    let what = what(&e);
                    let place = place(&e);
                    let via = match e.session_type.as_str() {
                        "browser" => "console",
                        "api" => "API key",
                        "cli" => "kubectl",
                        "web_shell" => "web terminal",
                        other => other,
                    }.to_owned();
                    let details = serde_json::to_string_pretty(&e.details).unwrap_or_default();
                    // Break-glass access is marked in red.
                    let alert = e.details.get("break_glass").and_then(|v| v.as_bool()).unwrap_or(false);
                    let outcome_title = e.reason.clone().unwrap_or_default();
                    view! {
                        <tr class:row-alert=alert data-break-glass=alert.then_some("true")>
                            <td class="nowrap">{short_time(&e.time)}</td>
                            <td><span data-testid="audit-who">{e.actor.clone()}</span><br/><small class="muted">{via}</small></td>
                            <td>
                                <code data-testid="audit-what">{what}</code>
                                {(e.outcome == "allowed" && e.action.starts_with("terminal.")).then(|| crate::recordings::recording_of(&e.details)).flatten().map(|r| view! {
                                    " " <a class="chip" href=crate::recordings::player_href(&r) data-testid=format!("play-{}", e.id)>"▶ Recording"</a>
                                })}
                            </td>
                            <td data-testid="audit-where">{place}<br/><small class="muted">{e.project.clone().unwrap_or_default()}</small></td>
                            <td><span class=outcome_class title=outcome_title>{e.outcome.clone()}</span>{e.status.map(|s| view! { " " <small class="muted">{s}</small> })}</td>
                            <td>
                                <details>
                                    <summary>"More"</summary>
                                    <dl class="facts small">
                                        <dt>"Kind"</dt><dd>{e.kind.clone()}</dd>
                                        <dt>"Action"</dt><dd><code>{e.action.clone()}</code></dd>
                                        {e.reason.clone().map(|r| view! { <dt>"Reason"</dt><dd>{r}</dd> })}
                                        {e.path.clone().map(|p| view! { <dt>"Request"</dt><dd><code>{format!("{} {p}", e.method.clone().unwrap_or_default())}</code></dd> })}
                                        {e.source_ip.clone().map(|ip| view! { <dt>"Source"</dt><dd>{ip}</dd> })}
                                        <dt>"Session"</dt><dd>{e.session_type.clone()}</dd>
                                        <dt>"Event"</dt><dd><code>{format!("#{} {}", e.seq, e.id)}</code></dd>
                                    </dl>
                                    {(details != "null").then(|| view! { <pre class="details">{details.clone()}</pre> })}
                                </details>
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
}
