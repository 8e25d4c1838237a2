//! Clusters: the list (status chips that update themselves, filters by project, label and
//! status), a cluster's page (details, namespaces and nodes as its agent reports them, status
//! history, recent audit events), and the import wizard (details -> connect -> done).
//!
//! Live updates poll a server function every few seconds; the pages work without JavaScript
//! (they then show the state at load time, and the filters are a plain GET form).

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};
use std::collections::BTreeMap;
use std::time::Duration;
use warden_domain::dto::{
    AuditEventDto, ClusterBootstrap, ClusterConnect, ClusterDetail, ClusterDto, ClusterStatus,
    GuardStatus, Me,
};

use crate::error::AppError;
use crate::layout::MeResource;
use crate::terminal::TerminalLink;
use crate::ui::{
    can_in, confirm_href, confirm_open, me_of, Chips, ConfirmPanel, Field, FormAlert, FormState,
    LoadError, Loading, Submit,
};

// ---- server functions ----

/// Clusters visible to the caller, filtered.
#[server(prefix = "/sfn", endpoint = "list_clusters")]
pub async fn list_clusters(
    #[server(default)] project: String,
    #[server(default)] status: String,
    #[server(default)] label: String,
    // The page's own refresh, not the person's doing: it does not keep the session alive.
    #[server(default)] poll: bool,
) -> Result<Vec<ClusterDto>, AppError> {
    use warden_domain::dto::ClusterQuery;
    let svc = crate::ssr::services()?;
    let who = if poll {
        crate::ssr::principal_polling().await?
    } else {
        crate::ssr::principal().await?
    };
    let opt = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let status = AppError::choice(
        "status",
        status.trim(),
        ClusterStatus::parse,
        "must be pending, connected or disconnected",
    )?;
    let q = ClusterQuery {
        project: opt(project),
        status,
        label: opt(label),
        limit: Some(500),
        ..Default::default()
    };
    Ok(warden_domain::clusters::list(&svc, &who, &q).await?.items)
}

/// The names of the clusters the caller can see, for a form's choice.
#[server(prefix = "/sfn", endpoint = "cluster_names")]
pub async fn cluster_names() -> Result<Vec<String>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::clusters::names(&svc, &who).await?)
}

#[server(prefix = "/sfn", endpoint = "get_cluster")]
pub async fn get_cluster(
    name: String,
    // The page's own refresh: it does not keep the session alive.
    #[server(default)] poll: bool,
) -> Result<ClusterDetail, AppError> {
    let svc = crate::ssr::services()?;
    let who = if poll {
        crate::ssr::principal_polling().await?
    } else {
        crate::ssr::principal().await?
    };
    Ok(warden_domain::clusters::get(&svc, &who, &name).await?)
}

/// Recent audit events about a cluster (empty for callers who may not read the audit log).
#[server(prefix = "/sfn", endpoint = "cluster_events")]
pub async fn cluster_events(name: String) -> Result<Vec<AuditEventDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::clusters::recent_events(&svc, &who, &name, 20).await?)
}

/// `key=value` pairs separated by commas or new lines.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in text
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        match part.split_once('=') {
            Some((k, v)) => {
                out.insert(k.trim().to_owned(), v.trim().to_owned());
            }
            None => return Err(format!("{part:?} is not key=value")),
        }
    }
    Ok(out)
}

pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Step 1 of the wizard: import the cluster, then go on to connect it.
#[server(prefix = "/sfn", endpoint = "import_cluster")]
#[allow(clippy::too_many_arguments)]
pub async fn import_cluster(
    name: String,
    project: String,
    #[server(default)] description: String,
    #[server(default)] labels: String,
    #[server(default)] https_proxy: String,
    #[server(default)] http_proxy: String,
    #[server(default)] no_proxy: String,
    #[server(default)] proxy_ca: String,
) -> Result<ClusterDto, AppError> {
    use warden_domain::dto::{CreateClusterRequest, ProxySettings};
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = async {
        let opt = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let labels = match parse_labels(&labels) {
            Ok(l) => l,
            Err(m) => {
                // Every error of the form at once: the labels' and the other fields'.
                use warden_domain::clusters as c;
                let mut fields = BTreeMap::from([("labels".to_owned(), m)]);
                if let Err(e) = warden_domain::types::DnsLabel::parse(name.trim()) {
                    fields.insert("name".into(), e.0);
                }
                let proxy = ProxySettings {
                    https_proxy: opt(https_proxy.clone()),
                    http_proxy: opt(http_proxy.clone()),
                    no_proxy: opt(no_proxy.clone()),
                    ca_pem: opt(proxy_ca.clone()),
                };
                for e in [
                    c::check_description(&description).err(),
                    c::check_proxy(&proxy).err(),
                ]
                .into_iter()
                .flatten()
                {
                    if let warden_domain::error::DomainError::Invalid { fields: f } = e {
                        fields.extend(f);
                    }
                }
                return Err(AppError::Invalid { fields });
            }
        };
        let req = CreateClusterRequest {
            name: name.trim().to_owned(),
            project,
            description: Some(description),
            labels: Some(labels),
            shared_with: None,
            proxy: Some(ProxySettings {
                https_proxy: opt(https_proxy),
                http_proxy: opt(http_proxy),
                no_proxy: opt(no_proxy),
                ca_pem: opt(proxy_ca),
            }),
        };
        Ok(warden_domain::clusters::create(&svc, &who, req)
            .await?
            .cluster)
    }
    .await;
    let then = r
        .as_ref()
        .ok()
        .map(|c: &ClusterDto| format!("/clusters/{}/connect", c.name));
    crate::ssr::finish(r, then)
}

/// Step 2 of the wizard: the cluster's one pending manifest (the same link again while it is
/// live; a new one only when none is pending), and what the wizard must say about this
/// installation.
#[server(prefix = "/sfn", endpoint = "connect_cluster")]
pub async fn connect_cluster(name: String) -> Result<ClusterConnect, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::clusters::connect(&svc, &who, &name).await?)
}

/// A new one-time manifest URL and manifest; the earlier ones not yet used stop working.
#[server(prefix = "/sfn", endpoint = "bootstrap_cluster")]
pub async fn bootstrap_cluster(name: String) -> Result<ClusterBootstrap, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::clusters::bootstrap(&svc, &who, &name).await?)
}

#[server(prefix = "/sfn", endpoint = "update_cluster")]
pub async fn update_cluster(
    name: String,
    #[server(default)] new_name: String,
    #[server(default)] description: String,
    #[server(default)] labels: String,
) -> Result<ClusterDto, AppError> {
    use warden_domain::dto::UpdateClusterRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = async {
        let labels = parse_labels(&labels).map_err(|m| AppError::Invalid {
            fields: BTreeMap::from([("labels".to_owned(), m)]),
        })?;
        let new_name = new_name.trim();
        let req = UpdateClusterRequest {
            name: (!new_name.is_empty() && new_name != name).then(|| new_name.to_owned()),
            description: Some(description),
            labels: Some(labels),
            ..Default::default()
        };
        Ok(warden_domain::clusters::update(&svc, &who, &name, req).await?)
    }
    .await;
    // A plain form lands on the cluster's page under its (new) name.
    let then = r.as_ref().ok().map(|c| format!("/clusters/{}", c.name));
    crate::ssr::finish(r, then)
}

#[server(prefix = "/sfn", endpoint = "delete_cluster")]
pub async fn delete_cluster(
    name: String,
    #[server(default)] force: String,
) -> Result<String, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let force = matches!(force.as_str(), "true" | "on" | "1");
    let r = warden_domain::clusters::delete(&svc, &who, &name, force)
        .await
        .map_err(AppError::from);
    let then = r
        .is_ok()
        .then(|| format!("/clusters?deleted={}", crate::ui::encode(&name)));
    crate::ssr::finish(r, then)
}

/// Revoke the cluster's agent (a credential or key that may have leaked).
#[server(prefix = "/sfn", endpoint = "revoke_cluster_agent")]
pub async fn revoke_cluster_agent(name: String) -> Result<u64, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::clusters::revoke_agent(&svc, &who, &name)
        .await
        .map_err(AppError::from);
    crate::ssr::finish(r, None)
}

// ---- shared pieces ----

/// A counter that goes up every `every` in the browser (never on the server), to refetch a
/// resource keyed on it.
fn ticker(every: Duration) -> ReadSignal<u32> {
    let (tick, set_tick) = signal(0u32);
    Effect::new(move |_| {
        let handle =
            set_interval_with_handle(move || set_tick.update(|t| *t = t.wrapping_add(1)), every)
                .ok();
        on_cleanup(move || {
            if let Some(h) = handle {
                h.clear();
            }
        });
    });
    tick
}

/// Whether the user may import clusters into some project.
pub(crate) fn can_import(me: &Me) -> bool {
    me.has_org("cluster.write")
        || me.grants.iter().any(|g| {
            g.scope == warden_domain::dto::Scope::Project
                && g.permissions.iter().any(|p| p == "cluster.write")
        })
}

/// Projects the user may import clusters into.
fn import_projects(me: &Me) -> Vec<String> {
    me.projects
        .iter()
        .filter(|p| can_in(me, "cluster.write", p))
        .cloned()
        .collect()
}

#[component]
pub(crate) fn StatusChip(
    status: ClusterStatus,
    #[prop(optional, into)] testid: Option<String>,
) -> impl IntoView {
    view! { <span class=format!("status status-{status}") data-testid=testid data-status=status.as_str()>{status.label()}</span> }
}

fn ago(rfc3339: &Option<String>) -> String {
    rfc3339
        .as_deref()
        .map(crate::ui::short_time)
        .unwrap_or_else(|| "never".into())
}

// ---- the list ----

#[component]
pub fn ClustersPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let q = use_query_map();
    let get = move |k: &str| q.with(|q| q.get(k).unwrap_or_default());
    let tick = ticker(Duration::from_secs(3));
    let clusters = Resource::new(
        move || (get("project"), get("status"), get("label"), tick.get()),
        |(p, s, l, t)| list_clusters(p, s, l, t > 0),
    );
    let deleted = move || q.with(|q| q.get("deleted"));
    // The clusters the caller reaches with kubectl (for the kubeconfig links).
    let mine = Resource::new(|| (), |_| crate::kubectl::get_my_kubectl());
    view! {
        <div class="page-head">
            <h1>"Clusters"</h1>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    can_import(&me).then(|| view! { <a class="btn btn-primary" href="/clusters/new" data-testid="import-cluster">"Import cluster"</a> })
                })}
            </Transition>
        </div>
        {move || deleted().map(|d| view! {
            <p class="notice" role="status">{format!("Cluster {d} was deleted and its agent's credential revoked. Remove the agent from the cluster with: ")}
                <code>{warden_domain::agent_protocol::CLEANUP_COMMAND}</code></p>
        })}
        <form class="filters" method="get" action="/clusters" aria-label="Filter clusters">
            <div class="filter">
                <label for="filter-project">"Project"</label>
                <Transition fallback=|| ()>
                    {move || Suspend::new(async move {
                        let projects = me_of(me.await).map(|m| m.projects).unwrap_or_default();
                        let current = get("project");
                        view! {
                            <select id="filter-project" name="project">
                                <option value="">"All"</option>
                                {projects.into_iter().map(|p| { let sel = p == current; view! { <option value=p.clone() selected=sel>{p.clone()}</option> } }).collect_view()}
                            </select>
                        }
                    })}
                </Transition>
            </div>
            <div class="filter">
                <label for="filter-status">"Status"</label>
                <select id="filter-status" name="status">
                    {[("", "Any")].into_iter().chain(ClusterStatus::ALL.map(|s| (s.as_str(), s.label()))).map(|(v, l)| {
                        view! { <option value=v selected=move || get("status") == v>{l}</option> }
                    }).collect_view()}
                </select>
            </div>
            <div class="filter">
                <label for="filter-label">"Label"</label>
                <input id="filter-label" name="label" placeholder="env=prod" value=move || get("label")/>
            </div>
            <button type="submit" class="btn">"Filter"</button>
        </form>
        <section class="card" aria-labelledby="clusters-title">
            <h2 id="clusters-title" class="visually-hidden">"Clusters"</h2>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    match clusters.await {
                        Ok(list) if list.is_empty() => view! {
                            <p class="empty" data-testid="no-clusters">"No clusters match. Import one to reach it through Warden: its agent dials out, so the cluster needs no inbound port."</p>
                        }.into_any(),
                        Ok(list) => {
                            // The console's terminal does not depend on the kubectl CLI setting.
                            let (reachable, terminals): (Vec<String>, Vec<String>) = mine.await.map(|m| {
                                let all: Vec<String> = m.clusters.into_iter().map(|c| c.name).collect();
                                (if m.cli_disabled { Vec::new() } else { all.clone() }, all)
                            }).unwrap_or_default();
                            view! { <ClustersTable clusters=list reachable terminals/> }.into_any()
                        }
                        Err(e) => view! { <LoadError err=e/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn ClustersTable(
    clusters: Vec<ClusterDto>,
    reachable: Vec<String>,
    terminals: Vec<String>,
) -> impl IntoView {
    view! {
        <div class="table-scroll">
        <table class="table" data-testid="clusters">
            <thead><tr>
                <th scope="col">"Name"</th><th scope="col">"Status"</th><th scope="col">"Project"</th>
                <th scope="col">"Kubernetes"</th><th scope="col">"Nodes"</th><th scope="col">"Last heartbeat"</th><th scope="col">"Labels"</th>
                <th scope="col"><span class="visually-hidden">"kubectl"</span></th>
            </tr></thead>
            <tbody>
                {clusters.into_iter().map(|c| {
                    let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let shared = (!c.shared_with.is_empty()).then(|| format!(" (shared with {})", c.shared_with.join(", ")));
                    view! {
                        <tr data-testid=format!("cluster-row-{}", c.name)>
                            <td><a href=format!("/clusters/{}", c.name)>{c.name.clone()}</a></td>
                            <td>
                                <StatusChip status=c.status testid=format!("status-{}", c.name)/>
                                {c.guard.filter(|g| *g != GuardStatus::Enforced).map(|g| view! {
                                    <span class="tag tag-warn" title=format!("Admission guard {}", g.describe()) data-testid=format!("guard-{}", c.name)>{if matches!(g, GuardStatus::Unreadable | GuardStatus::Unknown) { "guard unknown" } else { "guard off" }}</span>
                                })}
                            </td>
                            <td>{c.project.clone()}{shared}</td>
                            <td>{c.kubernetes_version.clone().unwrap_or_else(|| "—".into())}</td>
                            <td>{c.node_count.map(|n| n.to_string()).unwrap_or_else(|| "—".into())}</td>
                            <td>{ago(&c.last_seen)}</td>
                            <td><Chips items=labels/></td>
                            <td class="actions">
                                {reachable.contains(&c.name).then(|| view! {
                                    <a href=format!("/api/v1/kubeconfig?cluster={}", crate::ui::encode(&c.name)) download=format!("warden-{}.kubeconfig", c.name) rel="external" data-testid=format!("kubeconfig-{}", c.name)>"kubeconfig"</a>
                                    " "
                                })}
                                {(terminals.contains(&c.name) && c.status == ClusterStatus::Connected).then(|| view! {
                                    <TerminalLink cluster=c.name.clone() label="Terminal" testid=format!("terminal-{}", c.name)/>
                                })}
                                {(!reachable.contains(&c.name)).then(|| view! {
                                    <a href=crate::access_requests::request_href(&c.project, "", &[], Some(&c.name)) data-testid=format!("request-access-{}", c.name)>"Request access"</a>
                                })}
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
}

// ---- the import wizard ----

#[component]
fn WizardSteps(current: u8) -> impl IntoView {
    let steps = [(1u8, "Details"), (2, "Connect"), (3, "Done")];
    view! {
        <ol class="steps" aria-label="Import steps">
            {steps.into_iter().map(|(n, label)| {
                let class = if n < current { "done" } else if n == current { "current" } else { "" };
                view! { <li class=class aria-current=(n == current).then_some("step")>{format!("{n}. {label}")}</li> }
            }).collect_view()}
        </ol>
    }
}

/// The browser's check of a DNS-1123 label (the server checks it again).
const DNS_LABEL_PATTERN: &str = "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?";

#[component]
pub fn ImportClusterPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let action = ServerAction::<ImportCluster>::new();
    let state = FormState::new(action, "new-cluster");
    view! {
        <p class="crumbs"><a href="/clusters">"Clusters"</a></p>
        <h1>"Import a cluster"</h1>
        <WizardSteps current=1/>
        <section class="card" aria-labelledby="details-title">
            <h2 id="details-title">"Details"</h2>
            <p class="muted">"Warden gives you a manifest to apply to the cluster. Its agent dials out to Warden; the cluster needs no inbound port and its credentials never leave it."</p>
            <ActionForm action attr:class="form" attr:data-testid="import-form">
                <Field state name="name" label="Name" required=true autocomplete="off" pattern=DNS_LABEL_PATTERN maxlength=63 hint="At most 63 lower-case letters, digits and '-', starting and ending with a letter or digit, e.g. prod-eu-1."/>
                <label for="new-cluster-project">"Project"</label>
                <Transition fallback=Loading>
                    {move || Suspend::new(async move {
                        let projects = me_of(me.await).map(|m| import_projects(&m)).unwrap_or_default();
                        view! {
                            <select id="new-cluster-project" name="project" required=true aria-describedby="new-cluster-project-error">
                                {projects.into_iter().map(|p| view! { <option value=p.clone() selected=p == "default">{p.clone()}</option> }).collect_view()}
                            </select>
                        }
                    })}
                </Transition>
                <crate::ui::FieldError state field="project"/>
                <Field state name="description" label="Description (optional)" autocomplete="off"/>
                <Field state name="labels" label="Labels (optional)" autocomplete="off" placeholder="env=prod, region=eu" hint="key=value pairs separated by commas."/>
                <details class="proxy">
                    <summary>"The agent reaches Warden through a proxy (optional)"</summary>
                    <Field state name="https_proxy" field="proxy.https_proxy" label="HTTPS proxy" autocomplete="off" placeholder="http://proxy.internal:3128" hint="For an https:// Warden URL; the proxy must allow CONNECT."/>
                    <Field state name="http_proxy" field="proxy.http_proxy" label="HTTP proxy" autocomplete="off" placeholder="http://proxy.internal:3128"/>
                    <Field state name="no_proxy" field="proxy.no_proxy" label="No proxy for" autocomplete="off" placeholder="localhost, .internal"/>
                    <label for="new-cluster-proxy_ca">"Extra CA certificate (PEM, for a TLS-inspecting proxy)"</label>
                    <textarea id="new-cluster-proxy_ca" name="proxy_ca" rows="4" class="mono"></textarea>
                    <crate::ui::FieldError state field="proxy.ca_pem"/>
                </details>
                <Submit state label="Import and continue" testid="import-submit"/>
            </ActionForm>
            <FormAlert state fields=&["name", "project", "description", "labels", "proxy.https_proxy", "proxy.http_proxy", "proxy.no_proxy", "proxy.ca_pem"]/>
        </section>
    }
}

/// Steps 2 and 3: the manifest and the one-line command, then a checklist that follows the
/// agent as it registers, connects and reports its first heartbeat.
#[component]
pub fn ConnectClusterPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.with(|p| p.get("name").unwrap_or_default());
    let renew = ServerAction::<BootstrapCluster>::new();
    let boot = Resource::new(
        move || (name(), renew.version().get()),
        |(n, _)| connect_cluster(n),
    );
    let tick = ticker(Duration::from_secs(2));
    let cluster = Resource::new(move || (name(), tick.get()), |(n, t)| get_cluster(n, t > 0));
    view! {
        <p class="crumbs"><a href="/clusters">"Clusters"</a></p>
        <h1>"Connect " {name}</h1>
        <Transition fallback=|| view! { <WizardSteps current=2/> }>
            {move || Suspend::new(async move {
                let done = matches!(cluster.await, Ok(c) if c.cluster.status == ClusterStatus::Connected && c.cluster.last_seen.is_some());
                view! { <WizardSteps current=if done { 3 } else { 2 }/> }
            })}
        </Transition>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                // A new link: the answer itself (the page's resource would show it too, as the
                // process remembers it, but another process may serve the next request).
                let fresh = renew.value().get().and_then(Result::ok);
                match boot.await {
                    Ok(c) => view! { <ConnectCard connect=c fresh renew name=name()/> }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
        <Checklist cluster tick/>
    }
}

#[component]
fn CopyButton(value: String, #[prop(optional)] testid: Option<&'static str>) -> impl IntoView {
    let (copied, set_copied) = signal(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let _ = window().navigator().clipboard().write_text(&value);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = &value;
        set_copied.set(true);
    };
    view! { <button type="button" class="btn" data-testid=testid on:click=copy>{move || if copied.get() { "Copied" } else { "Copy" }}</button> }
}

/// Warnings, then the pending manifest (or why it is not shown), and a way to a new link.
#[component]
fn ConnectCard(
    connect: ClusterConnect,
    fresh: Option<ClusterBootstrap>,
    renew: ServerAction<BootstrapCluster>,
    name: String,
) -> impl IntoView {
    let warnings = (!connect.warnings.is_empty()).then(|| {
        view! {
            <section class="card notice-warn" role="note" aria-labelledby="connect-warn-title" data-testid="connect-warnings">
                <h2 id="connect-warn-title">"Before you apply the manifest"</h2>
                <ul>
                    {connect.warnings.into_iter().map(|w| view! {
                        <li data-testid=format!("warning-{}", w.code)>{w.message}</li>
                    }).collect_view()}
                </ul>
            </section>
        }
    });
    let boot = fresh.or(connect.bootstrap);
    let pending = connect.pending;
    let new_link = {
        let name = name.clone();
        move |label: &'static str| {
            view! {
                <ActionForm action=renew attr:class="inline-form">
                    <input type="hidden" name="name" value=name.clone()/>
                    <button type="submit" class="btn" data-testid="new-manifest-link">{label}</button>
                </ActionForm>
            }
        }
    };
    view! {
        {warnings}
        {match (boot, pending) {
            (Some(b), _) => view! {
                <ManifestCard boot=b name=name.clone()/>
                <p class="hint">"Lost the command, or applied it to the wrong cluster? A new link stops this one (and its manifest) from working."</p>
                {new_link("New link")}
            }.into_any(),
            (None, Some(p)) => view! {
                <section class="card" aria-labelledby="connect-title" data-testid="manifest-pending">
                    <h2 id="connect-title">"A manifest is already pending"</h2>
                    <p>{format!(
                        "A manifest for this cluster was issued at {} and works until {}. Its link was used, or another Warden process issued it, so it cannot be shown again. If the agent is on its way, wait for it below; otherwise get a new link, which stops the earlier one from working.",
                        crate::ui::short_time(&p.issued_at),
                        crate::ui::short_time(&p.expires_at)
                    )}</p>
                    {new_link("New link (revokes the earlier one)")}
                </section>
            }.into_any(),
            (None, None) => view! { <p class="empty">"No manifest is pending."</p> {new_link("New link")} }.into_any(),
        }}
    }
}

/// A data URL that downloads the manifest shown (no new token, unlike the REST download).
fn data_url(text: &str) -> String {
    let mut out = String::from("data:application/yaml;charset=utf-8,");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[component]
fn ManifestCard(boot: ClusterBootstrap, name: String) -> impl IntoView {
    let command = boot.apply_command.clone();
    let manifest = boot.manifest.clone();
    view! {
        <section class="card" aria-labelledby="connect-title">
            <h2 id="connect-title">"Apply the agent's manifest to the cluster"</h2>
            <p>"Run this once with a kubeconfig for the cluster (it needs to create a namespace, RBAC and a Deployment):"</p>
            <div class="secret-row">
                <label class="visually-hidden" for="apply-command">"Command"</label>
                <input id="apply-command" class="mono" type="text" readonly value=command.clone() data-testid="apply-command"/>
                <CopyButton value=command testid="copy-command"/>
            </div>
            <p class="hint">{format!(
                "The link works once and until {}; the bootstrap token inside the manifest is accepted once, until {}, and only from the first cluster that uses it.",
                crate::ui::short_time(&boot.manifest_url_expires_at),
                crate::ui::short_time(&boot.bootstrap_expires_at)
            )}</p>
            <details class="manifest">
                <summary>"Or copy or download the manifest"</summary>
                <p>
                    <CopyButton value=manifest.clone() testid="copy-manifest"/>
                    " "
                    <a class="btn" href=data_url(&manifest) download=format!("warden-agent-{name}.yaml") data-testid="download-manifest">"Download"</a>
                </p>
                <pre class="mono manifest" data-testid="manifest">{manifest}</pre>
            </details>
        </section>
    }
}

#[component]
fn CheckItem(
    done: bool,
    testid: &'static str,
    label: &'static str,
    #[prop(optional_no_strip)] detail: Option<String>,
) -> impl IntoView {
    view! {
        <li class=if done { "check done" } else { "check" } data-testid=testid data-done=done.to_string()>
            <span class="mark" aria-hidden="true">{if done { "✓" } else { "…" }}</span>
            <span class="visually-hidden">{if done { "Done: " } else { "Waiting: " }}</span>
            {label}
            {detail.map(|d| view! { <span class="muted">" — " {d}</span> })}
        </li>
    }
}

#[component]
fn Checklist(
    cluster: Resource<Result<ClusterDetail, AppError>>,
    tick: ReadSignal<u32>,
) -> impl IntoView {
    // After about a minute without a connection, open the guidance.
    let waited_long = move || tick.get() >= 30;
    view! {
        <section class="card" aria-labelledby="checklist-title" aria-live="polite">
            <h2 id="checklist-title">"Progress"</h2>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    match cluster.await {
                        Ok(d) => {
                            let c = d.cluster;
                            let registered = c.registered_at.is_some();
                            let connected = c.status == ClusterStatus::Connected;
                            let heartbeat = c.last_seen.is_some() && c.kubernetes_version.is_some();
                            let facts = heartbeat.then(|| format!(
                                "Kubernetes {}, {} node(s), {} namespace(s)",
                                c.kubernetes_version.clone().unwrap_or_default(),
                                c.node_count.unwrap_or_default(),
                                c.namespaces.len()
                            ));
                            let all = registered && connected && heartbeat;
                            let name = c.name.clone();
                            view! {
                                <ul class="checklist" data-testid="checklist">
                                    <CheckItem done=registered testid="check-registered" label="The agent registered with its bootstrap token"/>
                                    <CheckItem done=connected testid="check-connected" label="The agent's tunnel is connected" detail=(!connected && registered).then(|| format!("status: {}", c.status))/>
                                    <CheckItem done=heartbeat testid="check-heartbeat" label="First heartbeat with the cluster's facts" detail=facts/>
                                </ul>
                                {all.then(|| view! {
                                    <div class="notice" role="status" data-testid="connect-done">
                                        <p><strong>"Done. "</strong>"The cluster is connected."</p>
                                        <ul>
                                            <li><a href=format!("/clusters/{name}") data-testid="open-cluster">"Open the cluster's page"</a></li>
                                            <li><a href=format!("/api/v1/kubeconfig?cluster={name}") download=format!("warden-{name}.kubeconfig") rel="external">"Download a kubeconfig for it"</a></li>
                                            <li><a href=format!("/clusters/{name}/terminal")>"Open a terminal on it (kubectl, or exec into a pod)"</a></li>
                                        </ul>
                                    </div>
                                })}
                            }.into_any()
                        }
                        Err(e) => view! { <LoadError err=e/> }.into_any(),
                    }
                })}
            </Transition>
            <details class="guidance" open=waited_long data-testid="guidance">
                <summary>"Nothing happening?"</summary>
                <ul>
                    <li>"Check that the agent runs: " <code>"kubectl -n warden-system get pods"</code></li>
                    <li>"Read its log, which says why it cannot connect or was refused: " <code>"kubectl -n warden-system logs deploy/warden-agent"</code></li>
                    <li>"The cluster must reach Warden's URL (outbound HTTPS, through the proxy if you set one). A refusal such as \"token_used\" or \"fingerprint_mismatch\" means the manifest was already used, or applied to another cluster: ask for a new link above."</li>
                    <li>"Outside a cluster (development): " <code>"warden-agent --kubeconfig KUBECONFIG --manifest MANIFEST.yaml"</code></li>
                </ul>
            </details>
        </section>
    }
}

// ---- a cluster's page ----

#[component]
pub fn ClusterPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.with(|p| p.get("name").unwrap_or_default());
    let update = ServerAction::<UpdateCluster>::new();
    // Saved: refetch. Renamed: the page moves to the new name (and fetches it there).
    let (updated, set_updated) = signal(0u32);
    let navigate = leptos_router::hooks::use_navigate();
    crate::ui::on_success(update, move |c: &ClusterDto| {
        if c.name != params.with_untracked(|p| p.get("name").unwrap_or_default()) {
            navigate(&format!("/clusters/{}", c.name), Default::default());
        } else {
            set_updated.update(|n| *n += 1);
        }
    });
    let tick = ticker(Duration::from_secs(5));
    let cluster = Resource::new(
        move || (name(), updated.get(), tick.get()),
        |(n, _, t)| get_cluster(n, t > 0),
    );
    let events = Resource::new(move || (name(), updated.get()), |(n, _)| cluster_events(n));
    view! {
        <p class="crumbs"><a href="/clusters">"Clusters"</a></p>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match cluster.await {
                    Ok(d) => view! { <ClusterView detail=d update/> }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
        <crate::pods::PodPicker cluster=Signal::derive(name) param="namespace" card=true/>
        <crate::kubectl::KubectlSettingsCard scope="cluster" subject=Signal::derive(name)/>
        <section class="card" aria-labelledby="events-title">
            <h2 id="events-title">"Recent audit events"</h2>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    match events.await {
                        Ok(list) if list.is_empty() => view! { <p class="empty">"No events you may see."</p> }.into_any(),
                        Ok(list) => view! {
                            <div class="table-scroll">
                            <table class="table" data-testid="cluster-events">
                                <thead><tr><th scope="col">"Time"</th><th scope="col">"Who"</th><th scope="col">"What"</th><th scope="col">"Outcome"</th><th scope="col">"Reason"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|e| view! {
                                        <tr>
                                            <td>{crate::ui::short_time(&e.time)}</td>
                                            <td>{e.actor.clone()}</td>
                                            <td>{e.what()}</td>
                                            <td><span class=format!("chip outcome-{}", e.outcome)>{e.outcome.as_str()}</span></td>
                                            <td>{e.reason.clone().unwrap_or_default()}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                            </div>
                        }.into_any(),
                        Err(e) => view! { <LoadError err=e/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
    }
}

#[component]
fn ClusterView(detail: ClusterDetail, update: ServerAction<UpdateCluster>) -> impl IntoView {
    let me = expect_context::<MeResource>();
    let c = detail.cluster.clone();
    let project = c.project.clone();
    let row = |label: &'static str, value: String| view! { <dt>{label}</dt><dd>{value}</dd> };
    let c2 = c.clone();
    view! {
        <h1>"Cluster " <span data-testid="cluster-name">{c.name.clone()}</span> " " <StatusChip status=c.status testid="cluster-status"/></h1>
        <p class="muted">{if c.description.is_empty() { "No description.".to_owned() } else { c.description.clone() }}</p>
        <section class="card" aria-labelledby="details-title">
            <h2 id="details-title">"Details"</h2>
            <dl class="facts">
                {row("Project", c.project.clone())}
                {row("Shared with", if c.shared_with.is_empty() { "no other project".into() } else { c.shared_with.join(", ") })}
                {row("Status", format!("{}{}", c.status, c.status_reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()))}
                {row("Last heartbeat", ago(&c.last_seen))}
                {row("Connected since", ago(&c.connected_at))}
                {row("Registered", ago(&c.registered_at))}
                {row("Kubernetes", c.kubernetes_version.clone().unwrap_or_else(|| "unknown".into()))}
                {row("Nodes", c.node_count.map(|n| n.to_string()).unwrap_or_else(|| "unknown".into()))}
                {row("Agent", c.agent_version.clone().unwrap_or_else(|| "unknown".into()))}
                <dt>"Admission guard"</dt>
                <dd data-testid="cluster-guard">{match c.guard {
                    None => view! { <span class="muted">"not reported by this agent"</span> }.into_any(),
                    Some(GuardStatus::Enforced) => view! { <span>"enforced"</span> }.into_any(),
                    Some(g) => view! {
                        <span class="hint warn">{g.describe()}". A cluster-wide write grant can reach warden-system (the agent's token) until the manifest is applied again."</span>
                    }.into_any(),
                }}</dd>
                {row("Fingerprint (kube-system UID)", c.fingerprint.clone().unwrap_or_else(|| "not registered yet".into()))}
                {row("Labels", if c.labels.is_empty() { "none".into() } else { format_labels(&c.labels) })}
            </dl>
        </section>
        <div class="columns">
            <section class="card grow" aria-labelledby="nodes-title">
                <h2 id="nodes-title">"Nodes"</h2>
                {if c.nodes.is_empty() {
                    view! { <p class="empty">"Not reported yet."</p> }.into_any()
                } else {
                    view! {
                        <div class="table-scroll">
                        <table class="table" data-testid="cluster-nodes">
                            <thead><tr><th scope="col">"Name"</th><th scope="col">"Ready"</th><th scope="col">"Kubelet"</th></tr></thead>
                            <tbody>
                                {c.nodes.iter().map(|n| view! {
                                    <tr><td>{n.name.clone()}</td><td>{if n.ready { "yes" } else { "no" }}</td><td>{n.kubelet_version.clone().unwrap_or_default()}</td></tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                        </div>
                    }.into_any()
                }}
            </section>
            <section class="card side" aria-labelledby="namespaces-title">
                <h2 id="namespaces-title">"Namespaces"</h2>
                {if c.namespaces.is_empty() {
                    view! { <p class="empty">"Not reported yet."</p> }.into_any()
                } else {
                    view! { <Chips items=c.namespaces.clone() label="Namespaces"/> }.into_any()
                }}
            </section>
        </div>
        <section class="card" aria-labelledby="history-title">
            <h2 id="history-title">"Status history"</h2>
            {if detail.history.is_empty() {
                view! { <p class="empty">"No changes yet: the agent has not connected."</p> }.into_any()
            } else {
                view! {
                    <div class="table-scroll">
                    <table class="table" data-testid="cluster-history">
                        <thead><tr><th scope="col">"Time"</th><th scope="col">"Status"</th><th scope="col">"Why"</th></tr></thead>
                        <tbody>
                            {detail.history.iter().map(|h| view! {
                                <tr><td>{crate::ui::short_time(&h.at)}</td><td><StatusChip status=h.status/></td><td>{h.reason.clone()}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    </div>
                }.into_any()
            }}
        </section>
        <Transition fallback=|| ()>
            {move || {
                let (c, project, cleanup) = (c2.clone(), project.clone(), detail.cleanup_command.clone());
                Suspend::new(async move {
                    let me = me_of(me.await)?;
                    let writable = can_in(&me, "cluster.write", &project);
                    let name = c.name.clone();
                    Some(view! {
                        <section class="card" aria-labelledby="kubectl-title">
                            <h2 id="kubectl-title">"Use it with kubectl"</h2>
                            <p>"Your kubeconfig reaches this cluster through Warden's gateway when your roles grant kubectl access here: "
                                <a href=format!("/api/v1/kubeconfig?cluster={}", crate::ui::encode(&name)) download=format!("warden-{name}.kubeconfig") rel="external" data-testid="cluster-kubeconfig">"download a kubeconfig for this cluster"</a>
                                ", or see " <a href="/me/tools">"My tools"</a> " for all of yours."</p>
                            <p>"Or in the browser: "
                                <TerminalLink cluster=name.clone() label="Terminal (kubectl shell)" class="btn" testid="cluster-terminal"/>
                                " or exec into a pod below."</p>
                            <p>"Need more than you hold here? "
                                <a href=crate::access_requests::request_href(&project, "", &[], Some(&name)) data-testid="cluster-request-access">"Request access"</a>
                                " for as long as you need it."</p>
                        </section>
                        {writable.then(|| view! { <ManageCluster cluster=c cleanup update/> })}
                    })
                })
            }}
        </Transition>
    }
}

#[component]
fn ManageCluster(
    cluster: ClusterDto,
    cleanup: String,
    update: ServerAction<UpdateCluster>,
) -> impl IntoView {
    let state = FormState::new(update, "edit-cluster");
    let delete = ServerAction::<DeleteCluster>::new();
    let delete_state = FormState::new(delete, "delete-cluster");
    let revoke = ServerAction::<RevokeClusterAgent>::new();
    let revoke_state = FormState::new(revoke, "revoke-agent");
    let revoke_open = confirm_open("revoke-agent", None);
    let revoke_href = confirm_href("revoke-agent", None);
    crate::ui::close_confirm_on_success(revoke);
    let name = StoredValue::new(cluster.name.clone());
    let open = confirm_open("delete-cluster", None);
    let href = confirm_href("delete-cluster", None);
    let disconnected = cluster.status == ClusterStatus::Disconnected;
    let cluster_name = cluster.name.clone();
    let description = cluster.description.clone();
    let labels = format_labels(&cluster.labels);
    let connect_href = format!("/clusters/{}/connect", cluster.name);
    view! {
        <details class="card">
            <summary>"Edit name, description and labels"</summary>
            <ActionForm action=update attr:class="form">
                <input type="hidden" name="name" value=cluster_name.clone()/>
                <Field state name="new_name" label="Name" value=cluster_name autocomplete="off" pattern=DNS_LABEL_PATTERN maxlength=63 hint="Renaming reconnects the agent under the new name and cuts open sessions; kubeconfigs downloaded for this cluster alone must be downloaded again."/>
                <Field state name="description" label="Description" value=description autocomplete="off"/>
                <Field state name="labels" label="Labels" value=labels autocomplete="off" hint="key=value pairs separated by commas."/>
                <Submit state label="Save"/>
            </ActionForm>
            <FormAlert state fields=&["new_name", "description", "labels"] ok="Saved."/>
        </details>
        <section class="card" aria-labelledby="agent-title">
            <h2 id="agent-title">"Agent"</h2>
            <p>"To install the agent again (a new cluster-side Secret, a lost credential), get a fresh manifest: "
                <a href=connect_href data-testid="reconnect">"Connect the agent"</a></p>
            <p>"To remove the agent and everything it created from the cluster:"</p>
            <crate::ui::CommandBox command=cleanup testid="cleanup-command"/>
            <FormAlert state=revoke_state ok="The agent is revoked and its tunnel closed. Connect the agent with a fresh manifest to reach the cluster again."/>
            <Show when=move || revoke_open.get() fallback=move || view! {
                <p>"If the agent's credential or its cluster-side Secret may have leaked, revoke the agent: nobody reaches the cluster through Warden until a fresh manifest is applied."</p>
                <a class="btn btn-danger-outline" href=revoke_href.clone() data-testid="revoke-agent">"Revoke the agent…"</a>
            }>
                <ConfirmPanel title=format!("Revoke the agent of {}?", name.get_value())>
                    <p>"Its credential stops working and its tunnel closes at once; manifests not applied yet expire. The cluster, its project, sharing and settings stay."</p>
                    <ActionForm action=revoke>
                        <input type="hidden" name="name" value=name.get_value()/>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-revoke-agent">"Revoke the agent"</button>
                    </ActionForm>
                </ConfirmPanel>
            </Show>
        </section>
        <section class="card danger-zone" aria-labelledby="delete-title">
            <h2 id="delete-title">"Delete cluster"</h2>
            <Show when=move || open.get() fallback=move || view! {
                <p>"Deleting the cluster revokes its agent's credential at once and closes its tunnel; nobody reaches it through Warden any more."</p>
                <a class="btn btn-danger-outline" href=href.clone() data-testid="delete-cluster">"Delete cluster…"</a>
            }>
                <ConfirmPanel title=format!("Delete cluster {}?", name.get_value())>
                    <ActionForm action=delete>
                        <input type="hidden" name="name" value=name.get_value()/>
                        {disconnected.then(|| view! {
                            <p>"The agent is not connected, so it cannot be told to stop. Its credential is revoked all the same; remove it from the cluster with the cleanup command shown after deletion."</p>
                            <input type="hidden" name="force" value="true"/>
                        })}
                        <button type="submit" class="btn btn-danger" data-testid="confirm-delete-cluster">"Delete cluster"</button>
                    </ActionForm>
                    <FormAlert state=delete_state/>
                </ConfirmPanel>
            </Show>
        </section>
    }
}
