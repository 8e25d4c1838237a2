//! The console's landing page: an overview. Clusters by status (those needing attention
//! first), your access in words and in a table, recent denials and activity for those who may
//! read the audit log, and the first steps of a fresh installation for administrators.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use warden_domain::dto::{AuditEventDto, ClusterStatus, EffectiveGrant, GettingStarted, Overview};

use crate::error::AppError;
use crate::layout::MeResource;
use crate::ui::{short_time, LoadError};

/// The overview, each part through the gate that guards it.
#[server(prefix = "/sfn", endpoint = "get_overview")]
pub async fn get_overview() -> Result<Overview, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::overview::overview(&svc, &who).await?)
}

/// One grant in words, e.g. "NAMESPACE_ADMIN on namespaces a, b in project p, until …".
pub fn grant_in_words(g: &EffectiveGrant) -> String {
    let project = g.project.clone().unwrap_or_else(|| "all".into());
    let place = match g.scope.as_str() {
        "organization" => "across the whole organization".to_owned(),
        "namespace" => format!(
            "on namespace{} {} in project {project}",
            if g.namespaces.len() == 1 { "" } else { "s" },
            g.namespaces.join(", ")
        ),
        _ => format!("in project {project}"),
    };
    let until = match &g.expires_at {
        Some(at) => format!(", until {}", short_time(at)),
        None => String::new(),
    };
    let via = if g.via.is_empty() {
        String::new()
    } else {
        format!(" (via {})", g.via)
    };
    format!("You are {} {place}{until}{via}.", g.role)
}

#[component]
pub fn HomePage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let q = use_query_map();
    let changed = move || q.with(|q| q.get("password_changed").is_some());
    let overview = Resource::new(|| (), |_| get_overview());
    view! {
        <Show when=changed>
            <p class="notice" role="status">"Your password has been changed."</p>
        </Show>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || me.get().map(|r| match r {
                Ok(Some(m)) => {
                    let importer = crate::clusters::can_import(&m);
                    view! {
                    <h1>"Welcome, " {m.user.name.clone()}</h1>
                    <Suspense fallback=|| ()>
                        {move || overview.get().map(|o| match o {
                            Ok(o) => view! { <OverviewPanels overview=o importer/> }.into_any(),
                            Err(e) => view! { <LoadError err=e/> }.into_any(),
                        })}
                    </Suspense>
                    <section class="card" aria-labelledby="access-title">
                        <h2 id="access-title">"Your access"</h2>
                        {if m.grants.is_empty() {
                            view! { <p class="empty">"You have no roles yet. Ask an administrator to add you to a project, or "<a href="/access">"request access"</a>"."</p> }.into_any()
                        } else {
                            view! {
                                <ul class="access-words" data-testid="my-access-words">
                                    {m.grants.iter().map(|g| view! { <li>{grant_in_words(g)}</li> }).collect_view()}
                                </ul>
                                <table class="table" data-testid="my-grants">
                                    <thead><tr><th>"Role"</th><th>"Scope"</th><th>"Project"</th><th>"Namespaces"</th><th>"Via"</th><th>"Time left"</th></tr></thead>
                                    <tbody>
                                        {m.grants.iter().map(|g| view! {
                                            <tr>
                                                <td>{g.role.clone()}</td>
                                                <td>{g.scope.as_str()}</td>
                                                <td>{g.project.clone().unwrap_or_else(|| "all".into())}</td>
                                                <td>{g.namespaces.join(", ")}</td>
                                                <td>{g.via.clone()}</td>
                                                <td data-testid="grant-time-left">{match &g.expires_at {
                                                    Some(at) => view! { <span class="tag tag-warn" title=at.clone()>{crate::bindings::time_left_rfc3339(at)}</span> }.into_any(),
                                                    None => view! { <span class="muted">"permanent"</span> }.into_any(),
                                                }}</td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                                <p><a href="/access" data-testid="request-more-access">"Request more access…"</a></p>
                            }.into_any()
                        }}
                    </section>
                    <section class="card" aria-labelledby="projects-title">
                        <h2 id="projects-title">"Projects"</h2>
                        {if m.projects.is_empty() {
                            view! { <p class="empty">"No projects are visible to you. Ask an administrator to add you to one, or "<a href="/access">"request access"</a>"."</p> }.into_any()
                        } else {
                            view! { <ul class="chips" data-testid="my-projects">{m.projects.iter().map(|p| view! { <li class="chip"><a href=format!("/projects/{p}")>{p.clone()}</a></li> }).collect_view()}</ul> }.into_any()
                        }}
                    </section>
                }.into_any()},
                Ok(None) => view! { <p>"Please " <a href="/login">"sign in"</a> "."</p> }.into_any(),
                Err(e) => view! { <p class="form-error">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn OverviewPanels(overview: Overview, importer: bool) -> impl IntoView {
    let Overview {
        clusters,
        cluster_counts,
        recent_denials,
        recent_activity,
        getting_started,
    } = overview;
    let total: u64 = cluster_counts.values().sum();
    let counts = [
        ClusterStatus::Pending,
        ClusterStatus::Disconnected,
        ClusterStatus::Connected,
    ]
    .into_iter()
    .filter_map(|s| cluster_counts.get(&s).map(|n| format!("{n} {s}")))
    .collect::<Vec<_>>()
    .join(", ");
    let shown = clusters.len() as u64;
    view! {
        {getting_started.filter(|g| !g.done()).map(|g| view! { <GettingStartedCard steps=g/> })}
        <section class="card" aria-labelledby="clusters-title" data-testid="overview-clusters">
            <h2 id="clusters-title">"Clusters"</h2>
            {if clusters.is_empty() {
                if importer {
                    view! { <p class="empty">"No clusters yet. "<a href="/clusters/new" data-testid="overview-import">"Import a cluster"</a>": Warden gives you a manifest to apply to it, and its agent dials out to Warden."</p> }.into_any()
                } else {
                    view! { <p class="empty">"No clusters are visible to you. Ask an administrator to add you to a project that has one, or "<a href="/access">"request access"</a>"."</p> }.into_any()
                }
            } else {
                view! {
                    <p data-testid="cluster-counts">{format!("{total} cluster{}: {counts}.", if total == 1 { "" } else { "s" })}</p>
                    <table class="table">
                        <thead><tr><th scope="col">"Name"</th><th scope="col">"Project"</th><th scope="col">"Status"</th><th scope="col">"Last seen"</th></tr></thead>
                        <tbody>
                            {clusters.into_iter().map(|c| {
                                let needs = c.status != ClusterStatus::Connected;
                                let href = if c.status == ClusterStatus::Pending && importer { format!("/clusters/{}/connect", c.name) } else { format!("/clusters/{}", c.name) };
                                view! {
                                    <tr data-testid=format!("overview-cluster-{}", c.name)>
                                        <td><a href=href>{c.name.clone()}</a></td>
                                        <td>{c.project.clone()}</td>
                                        <td>
                                            <crate::clusters::StatusChip status=c.status/>
                                            {needs.then(|| c.status_reason.clone()).flatten().map(|r| view! { <span class="muted">" — " {r}</span> })}
                                        </td>
                                        <td>{c.last_seen.as_deref().map(short_time).unwrap_or_else(|| "never".into())}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                    {(total > shown).then(|| view! { <p><a href="/clusters">{format!("All {total} clusters…")}</a></p> })}
                }.into_any()
            }}
        </section>
        {recent_denials.map(|d| view! {
            <EventsCard title="Recent denials" testid="recent-denials" more="/audit?outcome=denied" events=d
                empty="No requests were refused recently."/>
        })}
        {recent_activity.map(|a| view! {
            <EventsCard title="Recent activity" testid="recent-activity" more="/audit" events=a
                empty="Nothing has happened yet. Activity appears here as people sign in and use clusters."/>
        })}
    }
}

#[component]
fn GettingStartedCard(steps: GettingStarted) -> impl IntoView {
    let items: [(bool, &str, &str, &str); 4] = [
        (
            steps.cluster_imported,
            "start-cluster",
            "/clusters/new",
            "Import a cluster",
        ),
        (
            steps.project_created,
            "start-project",
            "/projects",
            "Create a project for a team",
        ),
        (
            steps.people_added,
            "start-people",
            "/users/new",
            "Add people, and give them roles in the project",
        ),
        (
            steps.kubeconfig_downloaded,
            "start-kubeconfig",
            "/me/tools",
            "Download a kubeconfig and use kubectl through Warden",
        ),
    ];
    view! {
        <section class="card" aria-labelledby="start-title" data-testid="getting-started">
            <h2 id="start-title">"Getting started"</h2>
            <ol class="checklist">
                {items.into_iter().map(|(done, testid, href, label)| view! {
                    <li class=if done { "check done" } else { "check" } data-testid=testid data-done=done.to_string()>
                        <span class="mark" aria-hidden="true">{if done { "✓" } else { "…" }}</span>
                        <span class="visually-hidden">{if done { "Done: " } else { "To do: " }}</span>
                        <a href=href>{label}</a>
                    </li>
                }).collect_view()}
            </ol>
        </section>
    }
}

#[component]
fn EventsCard(
    title: &'static str,
    testid: &'static str,
    more: &'static str,
    events: Vec<AuditEventDto>,
    empty: &'static str,
) -> impl IntoView {
    let id = format!("{testid}-title");
    let labelled = id.clone();
    view! {
        <section class="card" aria-labelledby=labelled data-testid=testid>
            <h2 id=id>{title}</h2>
            {if events.is_empty() {
                view! { <p class="empty">{empty}</p> }.into_any()
            } else {
                view! {
                    <table class="table">
                        <thead><tr><th scope="col">"When"</th><th scope="col">"Who"</th><th scope="col">"What"</th><th scope="col">"Where"</th><th scope="col">"Outcome"</th></tr></thead>
                        <tbody>
                            {events.into_iter().map(|e| {
                                let what = e.what();
                                let place = [e.project.clone(), e.cluster.clone(), e.namespace.clone()]
                                    .into_iter()
                                    .flatten()
                                    .collect::<Vec<_>>()
                                    .join(" / ");
                                view! {
                                    <tr>
                                        <td>{short_time(&e.time)}</td>
                                        <td>{e.actor.clone()}</td>
                                        <td>{what}</td>
                                        <td>{place}</td>
                                        <td>{e.outcome.as_str()}{e.reason.clone().map(|r| view! { <span class="muted">" — " {r}</span> })}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                    <p><a href=more>"More in the audit log…"</a></p>
                }.into_any()
            }}
        </section>
    }
}
