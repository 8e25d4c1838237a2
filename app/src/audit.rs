//! The audit log: search with filters and keyset paging, facets with counts and a histogram
//! of the current filter. Organization auditors see every event; project auditors see their
//! projects' events.

use leptos::prelude::*;
use leptos_router::components::Form;
use leptos_router::hooks::{use_params_map, use_query_map};
use leptos_router::params::ParamsMap;
use warden_domain::dto::{
    AuditEventDetail, AuditEventDto, AuditFacets, AuditHistogram, AuditKind, AuditQuery,
    FacetCount, Outcome, Page, SessionType,
};

use crate::error::AppError;
use crate::ui::{short_time, FormErrors, LoadError, Loading};

const PAGE_SIZE: u64 = 50;

#[server(prefix = "/sfn", endpoint = "search_audit")]
pub async fn search_audit(query: AuditQuery) -> Result<Page<AuditEventDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    // The gate has audited a denial already; the caller gets a plain 403.
    let scope = warden_domain::access::audit_view(&svc.policy, &who)
        .await
        .map_err(|_| AppError::Forbidden)?;
    let mut page =
        warden_domain::audit::search_in(&svc.db, &query, &scope, svc.clock.now()).await?;
    warden_domain::recordings::mark_replayable(&svc, &who, &mut page.items).await?;
    Ok(page)
}

/// The facets and the histogram of a filter, within the caller's scope.
#[server(prefix = "/sfn", endpoint = "summarize_audit")]
pub async fn summarize_audit(query: AuditQuery) -> Result<(AuditFacets, AuditHistogram), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let scope = warden_domain::access::audit_view(&svc.policy, &who)
        .await
        .map_err(|_| AppError::Forbidden)?;
    crate::ssr::answer(
        warden_domain::audit::summary_at(&svc.db, &query, &scope, svc.clock.now())
            .await
            .map_err(AppError::from),
    )
}

/// What the viewer may read: whether only their own activity, and the people to suggest in
/// the actor filter (those whose events they may see).
#[server(prefix = "/sfn", endpoint = "audit_viewer")]
pub async fn audit_viewer() -> Result<(bool, Vec<String>), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let scope = warden_domain::access::audit_view(&svc.policy, &who)
        .await
        .map_err(|_| AppError::Forbidden)?;
    let names = warden_domain::audit::actor_suggestions(&svc.db, &scope, svc.clock.now()).await?;
    Ok((scope.own_only(), names))
}

/// One event and the events linked to it; not found when outside the caller's scope.
#[server(prefix = "/sfn", endpoint = "get_audit_event")]
pub async fn get_audit_event(id: String) -> Result<AuditEventDetail, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let scope = warden_domain::access::audit_view(&svc.policy, &who)
        .await
        .map_err(|_| AppError::Forbidden)?;
    let detail = async {
        let mut d =
            warden_domain::audit::event_detail(&svc.db, &id, &scope, svc.clock.now()).await?;
        warden_domain::recordings::mark_detail(&svc, &who, &mut d).await?;
        Ok::<_, warden_domain::error::DomainError>(d)
    };
    crate::ssr::answer(detail.await.map_err(AppError::from))
}

/// An event's detail page.
pub fn event_href(id: &str) -> String {
    format!("/audit/{}", crate::ui::encode(id))
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

/// The live tail of exactly the current filter (Server-Sent Events).
fn tail_href(q: &ParamsMap) -> String {
    let export = export_href(q, "csv");
    let query = export
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default()
        .split('&')
        .filter(|kv| *kv != "format=csv")
        .collect::<Vec<_>>()
        .join("&");
    format!("/api/v1/audit/tail?{query}")
}

/// The CSV export of exactly the current filter (every page of it, newest first).
/// The export of the current filter, as `csv` or `ndjson`.
fn export_href(q: &ParamsMap, format: &str) -> String {
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
    out.insert("format", format.to_owned());
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
    // A value the list does not offer (a facet's, e.g. the verb `watch.start`) is offered too,
    // selected: otherwise the form showed "any" and the next search dropped the filter.
    let other = current
        .clone()
        .filter(|c| !c.is_empty() && !options.iter().any(|(v, _)| v == c));
    view! {
        <div class="filter">
            <label for=for_id>{label}</label>
            <select id=id name=name>
                <option value="" selected=current.is_none()>{any}</option>
                {options.iter().map(|(v, t)| view! {
                    <option value=*v selected=current.as_deref() == Some(*v)>{*t}</option>
                }).collect_view()}
                {other.map(|v| view! { <option value=v.clone() selected=true>{v.clone()}</option> })}
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
    /// The id of a `<datalist>` of suggestions.
    #[prop(optional)]
    list: Option<&'static str>,
) -> impl IntoView {
    let id = format!("audit-{name}");
    let for_id = id.clone();
    view! {
        <div class="filter">
            <label for=for_id>{label}</label>
            <input id=id name=name type=kind.unwrap_or("text") value=current placeholder=placeholder autocomplete="off" list=list/>
        </div>
    }
}

#[component]
pub fn AuditPage() -> impl IntoView {
    let q = use_query_map();
    let events = Resource::new(move || q.with(query_of), search_audit);
    // The summary does not depend on the page of the list.
    let summary = Resource::new(
        move || {
            q.with(|q| AuditQuery {
                cursor: None,
                limit: None,
                ..query_of(q)
            })
        },
        summarize_audit,
    );
    let viewer = Resource::new(|| (), |_| audit_viewer());
    view! {
        <h1>"Audit log"</h1>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                let result = events.await;
                let (own_only, actors) = viewer.await.unwrap_or_default();
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
                let export = export_href(&current, "csv");
                let export_ndjson = export_href(&current, "ndjson");
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
                        <TextFilter name="actor" label="Who (email starts with)" current=aq.actor.clone() placeholder="sally@" list="audit-actors"/>
                        <datalist id="audit-actors" data-testid="audit-actors">
                            {actors.into_iter().map(|a| view! { <option value=a></option> }).collect_view()}
                        </datalist>
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
                            <a class="btn" href=export_ndjson data-testid="audit-export-ndjson" rel="external" download="">"Export NDJSON"</a>
                        </div>
                    </Form>
                    {own_only.then(|| view! {
                        <p class="hint" data-testid="audit-own-only">"You see your own activity: what you did. Refusals and other people's events are for those with audit.read on a project or the organization."</p>
                    })}
                    <div class="audit-body">
                    <div class="audit-results">
                    <LiveTail url=tail_href(&current)/>
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
                    </div>
                    // The histogram and facets come after the list in the document (the grid
                    // shows them above and beside it): the page is streamed in order, so the
                    // list is on screen while they are still being counted, which over a
                    // large log with free text or several filters takes longer than the list.
                    <Transition fallback=|| view! {
                        <p class="summary-pending muted" aria-busy="true" data-testid="audit-summary-pending">"Counting the matching events…"</p>
                    }>
                        {move || Suspend::new(async move {
                            let current = q.get_untracked();
                            summary.await.ok().map(|(f, h)| view! {
                                <Histogram histogram=h params=current.clone()/>
                                <Facets facets=f params=current/>
                            })
                        })}
                    </Transition>
                    </div>
                }.into_any()
            })}
        </Transition>
    }
}

/// The page's URL with `changes` applied (`None` removes a key), back on the newest page.
fn href_with(params: &ParamsMap, changes: &[(&str, Option<String>)]) -> String {
    let mut p = params.clone();
    p.remove("cursor");
    for (k, v) in changes {
        match v {
            Some(v) => p.replace(k.to_string(), v.clone()),
            None => {
                p.remove(k);
            }
        }
    }
    format!("/audit{}", p.to_query_string())
}

/// Each facet: its filter parameter, heading, and how a value reads.
const FACETS: &[(&str, &str)] = &[
    ("actor", "Who"),
    ("kind", "Kind"),
    ("cluster", "Cluster"),
    ("namespace", "Namespace"),
    ("verb", "Verb"),
    ("outcome", "Outcome"),
];

fn facet_label(key: &str, value: &str) -> String {
    let table = match key {
        "kind" => KINDS,
        "outcome" => OUTCOMES,
        "verb" => VERBS,
        _ => return value.to_owned(),
    };
    table
        .iter()
        .find(|(v, _)| *v == value)
        .map(|(_, t)| (*t).to_owned())
        .unwrap_or_else(|| value.to_owned())
}

/// The most frequent values of the current filter, with counts; each a link that narrows the
/// filter to it (or, when the filter holds it already, widens it again).
#[component]
fn Facets(facets: AuditFacets, params: ParamsMap) -> impl IntoView {
    let groups: Vec<(&str, &str, Vec<FacetCount>)> = FACETS
        .iter()
        .map(|(key, title)| {
            let values = match *key {
                "actor" => facets.actors.clone(),
                "kind" => facets.kinds.clone(),
                "cluster" => facets.clusters.clone(),
                "namespace" => facets.namespaces.clone(),
                "verb" => facets.verbs.clone(),
                _ => facets.outcomes.clone(),
            };
            (*key, *title, values)
        })
        .filter(|(_, _, values)| !values.is_empty())
        .collect();
    view! {
        <aside class="facets" aria-label="Narrow the filter" data-testid="audit-facets">
            <p class="facets-total"><strong>{facets.total}</strong>{if facets.total == 1 { " event" } else { " events" }}</p>
            {groups.into_iter().map(|(key, title, values)| {
                let current = params.get(key);
                view! {
                    <section class="facet" data-facet=key>
                        <h2>{title}</h2>
                        <ul>
                            {values.into_iter().map(|f| {
                                let selected = current.as_deref() == Some(f.value.as_str());
                                let href = href_with(&params, &[(key, (!selected).then(|| f.value.clone()))]);
                                let label = facet_label(key, &f.value);
                                let title = if selected { format!("Remove the filter {key}={}", f.value) } else { format!("Only {key}={}", f.value) };
                                view! {
                                    <li>
                                        <a href=href class:selected=selected title=title data-testid=format!("facet-{key}-{}", f.value)>
                                            <span class="facet-value">{label}</span>
                                            <span class="facet-count">{f.count}</span>
                                        </a>
                                    </li>
                                }
                            }).collect_view()}
                        </ul>
                    </section>
                }
            }).collect_view()}
        </aside>
    }
    .into_any()
}

/// `2026-11-30T17:00:00Z` -> `2026-11-30T17:00` (what the date pickers show, read as UTC).
fn picker_time(rfc3339: &str) -> String {
    rfc3339.chars().take(16).collect()
}

/// A bucket's width in words.
fn width_words(secs: i64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s => format!("{} min", s / 60),
    }
}

/// Allowed vs denied events per bucket of the range, as inline SVG bars; each bucket is a link
/// that zooms the range to it.
#[component]
fn Histogram(histogram: AuditHistogram, params: ParamsMap) -> impl IntoView {
    if histogram.buckets.is_empty() {
        return ().into_any();
    }
    let max = histogram
        .buckets
        .iter()
        .map(|b| b.allowed + b.denied + b.error)
        .max()
        .unwrap_or(0)
        .max(1);
    let (allowed, denied, error) = histogram.buckets.iter().fold((0, 0, 0), |(a, d, e), b| {
        (a + b.allowed, d + b.denied, e + b.error)
    });
    let first = histogram
        .buckets
        .first()
        .map(|b| short_time(&b.start))
        .unwrap_or_default();
    let last = histogram
        .buckets
        .last()
        .map(|b| short_time(&b.end))
        .unwrap_or_default();
    let width = width_words(histogram.bucket_seconds);
    view! {
        <figure class="histogram" data-testid="audit-histogram">
            <figcaption>
                <span class="legend allowed">{format!("{allowed} allowed")}</span>
                <span class="legend denied">{format!("{denied} denied")}</span>
                {(error > 0).then(|| view! { <span class="legend error">{format!("{error} errors")}</span> })}
                <small class="muted">{format!(" · one bar per {width}; click a bar to zoom in")}</small>
            </figcaption>
            <div class="bars">
                {histogram.buckets.into_iter().enumerate().map(|(i, b)| {
                    // Heights in a 100-unit box, stacked from the bottom: allowed, errors, denied.
                    let h = |n: u64| n as f64 * 100.0 / max as f64;
                    let (ha, he, hd) = (h(b.allowed), h(b.error), h(b.denied));
                    let total = b.allowed + b.denied + b.error;
                    let href = href_with(&params, &[
                        ("range", None),
                        ("since", Some(picker_time(&b.start))),
                        ("until", Some(picker_time(&b.end))),
                    ]);
                    let title = format!("{} – {}: {} allowed, {} denied{}", short_time(&b.start), short_time(&b.end), b.allowed, b.denied, if b.error > 0 { format!(", {} errors", b.error) } else { String::new() });
                    view! {
                        <a class="bar" href=href title=title.clone() aria-label=title data-testid=format!("bucket-{i}") data-count=total>
                            <svg viewBox="0 0 10 100" preserveAspectRatio="none" aria-hidden="true">
                                <rect class="allowed" x="0" width="10" y=format!("{:.2}", 100.0 - ha) height=format!("{ha:.2}")/>
                                <rect class="error" x="0" width="10" y=format!("{:.2}", 100.0 - ha - he) height=format!("{he:.2}")/>
                                <rect class="denied" x="0" width="10" y=format!("{:.2}", 100.0 - ha - he - hd) height=format!("{hd:.2}")/>
                            </svg>
                        </a>
                    }
                }).collect_view()}
            </div>
            <div class="axis"><span>{first}</span><span>{last}</span></div>
        </figure>
    }
    .into_any()
}

/// `/audit/:id`: every field of one event, its raw JSON, and links to its user, cluster,
/// project, terminal recording, and the other events of its request and terminal.
#[component]
pub fn AuditEventPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let detail = Resource::new(id, get_audit_event);
    view! {
        <p class="crumbs"><a href="/audit">"Audit log"</a></p>
        <h1>"Audit event"</h1>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match detail.await {
                    Ok(d) => view! { <EventDetail detail=d/> }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn EventDetail(detail: AuditEventDetail) -> impl IntoView {
    let e = detail.event;
    let raw = serde_json::to_string_pretty(&e).unwrap_or_default();
    let user_href = e
        .actor_id
        .as_ref()
        .map(|id| format!("/users/{}", crate::ui::encode(id)));
    let activity_href = format!(
        "/audit?actor={}",
        crate::ui::encode(e.actor_id.as_deref().unwrap_or(&e.actor))
    );
    let what = e.what();
    let via = via(e.session_type);
    let outcome_class = format!("chip outcome-{}", e.outcome);
    let fact = |label: &'static str, value: Option<String>| {
        value
            .filter(|v| !v.is_empty())
            .map(|v| view! { <dt>{label}</dt><dd>{v}</dd> })
    };
    let request_href = e
        .request_id
        .as_ref()
        .map(|r| format!("/audit?q={}", crate::ui::encode(r)));
    view! {
        <section class="card" data-testid="audit-event">
            <p class="event-headline">
                <span class=outcome_class>{e.outcome.as_str()}</span>" "
                <span data-testid="audit-event-what">{what}</span>
            </p>
            {e.reason.clone().map(|r| view! { <p class="event-reason" data-testid="audit-event-reason">{r}</p> })}
            <dl class="facts">
                <dt>"Time (UTC)"</dt><dd>{e.time.clone()}</dd>
                <dt>"Who"</dt>
                <dd>
                    {match user_href {
                        Some(h) => view! { <a href=h data-testid="audit-event-user">{e.actor.clone()}</a> }.into_any(),
                        None => view! { <span>{e.actor.clone()}</span> }.into_any(),
                    }}
                    " " <small class="muted">{format!("through {via}")}</small>
                    " · " <a href=activity_href data-testid="audit-event-activity">"their activity"</a>
                </dd>
                <dt>"Kind"</dt><dd>{e.kind.label()}</dd>
                <dt>"Action"</dt><dd><code>{e.action.clone()}</code></dd>
                {e.project.clone().map(|p| view! { <dt>"Project"</dt><dd><a href=format!("/projects/{}", crate::ui::encode(&p))>{p.clone()}</a></dd> })}
                {e.cluster.clone().map(|c| view! { <dt>"Cluster"</dt><dd><a href=format!("/clusters/{}", crate::ui::encode(&c)) data-testid="audit-event-cluster">{c.clone()}</a></dd> })}
                {fact("Namespace", e.namespace.clone())}
                {fact("Resource", match (&e.resource_kind, &e.resource_name) {
                    (Some(k), Some(n)) => Some(format!("{k} {n}")),
                    (Some(k), None) => Some(k.clone()),
                    (None, Some(n)) => Some(n.clone()),
                    _ => None,
                })}
                {fact("HTTP status", e.status.map(|s| s.to_string()))}
                {e.path.clone().map(|p| view! { <dt>"Request"</dt><dd><code>{format!("{} {p}", e.method.clone().unwrap_or_default())}</code></dd> })}
                {fact("Source address", e.source_ip.clone())}
                {fact("User agent", e.user_agent.clone())}
                {e.request_id.clone().map(|r| view! { <dt>"Request id (Audit-ID)"</dt><dd><code>{r}</code></dd> })}
                {fact("Duration", e.duration_ms.map(|d| format!("{d} ms")))}
                <dt>"Event"</dt><dd><code>{format!("#{} {}", e.seq, e.id)}</code></dd>
            </dl>
            {detail.recording.clone().map(|r| view! {
                <p><a class="btn" href=crate::recordings::player_href(&r) data-testid="audit-event-recording">"▶ Play the terminal's recording"</a></p>
            })}
        </section>
        {(!detail.same_request.is_empty()).then(|| view! {
            <section class="card" data-testid="audit-same-request">
                <h2>"The same request"</h2>
                <p class="muted small">"Other events with this request id: a stream's start and end, or what one console action did."</p>
                <EventsTable events=detail.same_request.clone()/>
            </section>
        })}
        {detail.terminal_id.clone().map(|t| view! {
            <section class="card" data-testid="audit-same-terminal">
                <h2>"The same web terminal"</h2>
                <p class="muted small">{format!("Terminal {t}: its opening, its closing and the requests of its shell.")}</p>
                {if detail.same_terminal.is_empty() {
                    view! { <p class="empty">"No other event of this terminal."</p> }.into_any()
                } else {
                    view! { <EventsTable events=detail.same_terminal.clone()/> }.into_any()
                }}
            </section>
        })}
        {request_href.map(|h| view! { <p><a href=h>"Search the log for this request id"</a></p> })}
        <section class="card">
            <h2>"Raw event"</h2>
            <pre class="details" data-testid="audit-event-json">{raw}</pre>
        </section>
    }
}

/// Through what: console, kubectl, API key, web terminal.
fn via(session_type: SessionType) -> &'static str {
    match session_type {
        SessionType::Browser => "console",
        SessionType::Api => "API key",
        SessionType::Cli => "kubectl",
        SessionType::WebShell => "web terminal",
        SessionType::Agent => "agent",
        SessionType::System => "system",
    }
}

/// The live tail: with the toggle on, new events of the current filter arrive at the top (an
/// `EventSource` on `GET /api/v1/audit/tail`; it needs JavaScript). The stream ends, saying
/// why, when the sign-in no longer holds.
#[component]
fn LiveTail(url: String) -> impl IntoView {
    let (on, set_on) = signal(false);
    let (events, set_events) = signal(Vec::<AuditEventDto>::new());
    let (status, set_status) = signal(String::new());
    #[cfg(feature = "hydrate")]
    {
        let source = StoredValue::new_local(None::<wasm_bindgen::JsValue>);
        let close = move || {
            if let Some(es) = source.try_update_value(|s| s.take()).flatten() {
                live::close(&es);
            }
        };
        Effect::new(move |_| {
            if on.get() {
                set_status.set("Connecting…".into());
                let es = live::open(
                    &url,
                    move |json| {
                        if let Ok(e) = serde_json::from_str::<AuditEventDto>(&json) {
                            set_events.update(|v| {
                                v.insert(0, e);
                                v.truncate(200);
                            });
                        }
                    },
                    move || set_status.set("Live: new events appear here as they happen".into()),
                    move |reason| {
                        set_on.set(false);
                        set_status.set(format!("Stopped: {reason}"));
                    },
                );
                source.set_value(es);
            } else {
                close();
                if status.get_untracked().starts_with("Live")
                    || status.get_untracked().starts_with("Connecting")
                {
                    set_status.set(String::new());
                }
            }
        });
        on_cleanup(close);
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = (&url, set_events, set_status);
    view! {
        <div class="live-tail">
            <label class="check">
                <input type="checkbox" data-testid="audit-live" prop:checked=move || on.get() on:change=move |ev| set_on.set(event_target_checked(&ev))/>
                " Live tail"
            </label>
            " " <span class="muted" data-testid="audit-live-status" role="status">{move || status.get()}</span>
            <Show when=move || !events.with(|e| e.is_empty())>
                <section class="live-events" data-testid="audit-live-events" aria-label="New events">
                    {move || view! { <EventsTable events=events.get()/> }}
                </section>
            </Show>
        </div>
    }
    .into_any()
}

#[cfg(feature = "hydrate")]
mod live {
    //! An `EventSource`, reached through `js_sys` (no extra web-sys feature).
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;

    fn listen(
        target: &web_sys::EventTarget,
        name: &str,
        f: impl FnMut(web_sys::MessageEvent) + 'static,
    ) {
        let cb = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(f);
        let _ = target.add_event_listener_with_callback(name, cb.as_ref().unchecked_ref());
        cb.forget();
    }

    pub fn open(
        url: &str,
        on_event: impl Fn(String) + 'static,
        on_open: impl Fn() + 'static,
        on_end: impl Fn(String) + 'static,
    ) -> Option<JsValue> {
        let window = web_sys::window()?;
        let ctor: js_sys::Function = js_sys::Reflect::get(&window, &"EventSource".into())
            .ok()?
            .dyn_into()
            .ok()?;
        let es = js_sys::Reflect::construct(&ctor, &js_sys::Array::of1(&url.into())).ok()?;
        let target: web_sys::EventTarget = es.clone().unchecked_into();
        listen(&target, "audit", move |e| {
            if let Some(t) = e.data().as_string() {
                on_event(t)
            }
        });
        listen(&target, "open", move |_| on_open());
        let this = es.clone();
        listen(&target, "end", move |e| {
            // The server ended it: do not let the browser reconnect.
            close(&this);
            on_end(e.data().as_string().unwrap_or_default());
        });
        Some(es)
    }

    pub fn close(es: &JsValue) {
        if let Some(f) = js_sys::Reflect::get(es, &"close".into())
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        {
            let _ = f.call0(es);
        }
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
                    let what = e.what();
                    let place = place(&e);
                    let via = via(e.session_type);
                    let open_href = event_href(&e.id);
                    let details = serde_json::to_string_pretty(&e.details).unwrap_or_default();
                    // Break-glass access is marked in red.
                    let alert = e.details.get("break_glass").and_then(|v| v.as_bool()).unwrap_or(false);
                    let outcome_title = e.reason.clone().unwrap_or_default();
                    view! {
                        <tr class:row-alert=alert data-break-glass=alert.then_some("true")>
                            <td class="nowrap"><a href=open_href title="Open the event" data-testid="audit-open">{short_time(&e.time)}</a></td>
                            <td><span data-testid="audit-who">{e.actor.clone()}</span><br/><small class="muted">{via}</small></td>
                            <td>
                                <span data-testid="audit-what">{what}</span>
                                {(e.kind != AuditKind::KubeApi).then(|| view! { <br/><small class="muted"><code>{e.action.clone()}</code></small> })}
                                {(e.outcome == Outcome::Allowed && e.action.starts_with("terminal.") && e.replayable != Some(false)).then(|| crate::recordings::recording_of(&e.details)).flatten().map(|r| view! {
                                    " " <a class="chip" href=crate::recordings::player_href(&r) data-testid=format!("play-{}", e.id)>"▶ Recording"</a>
                                })}
                            </td>
                            <td data-testid="audit-where">{place}<br/><small class="muted">{e.project.clone().unwrap_or_default()}</small></td>
                            <td><span class=outcome_class title=outcome_title>{e.outcome.as_str()}</span>{e.status.map(|s| view! { " " <small class="muted">{s}</small> })}</td>
                            <td>
                                <details>
                                    <summary>"More"</summary>
                                    <dl class="facts small">
                                        <dt>"Kind"</dt><dd>{e.kind.label()}</dd>
                                        <dt>"Action"</dt><dd><code>{e.action.clone()}</code></dd>
                                        {e.reason.clone().map(|r| view! { <dt>"Reason"</dt><dd>{r}</dd> })}
                                        {e.path.clone().map(|p| view! { <dt>"Request"</dt><dd><code>{format!("{} {p}", e.method.clone().unwrap_or_default())}</code></dd> })}
                                        {e.source_ip.clone().map(|ip| view! { <dt>"Source"</dt><dd>{ip}</dd> })}
                                        <dt>"Session"</dt><dd>{e.session_type.label()}</dd>
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
