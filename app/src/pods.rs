//! The pod picker: a cluster's namespaces and pods **as the user sees them** (read on the
//! cluster with their own service account, never Warden's view), with "Exec" into a pod's
//! container where they may (read-only access never execs). Shown on a cluster's page and on
//! the terminal page; works without JavaScript (links and GET forms).

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};
use warden_domain::dto::{NamespaceAccessDto, PodDto, PodListDto};

use crate::error::AppError;
use crate::ui::{encode, LoadError, Loading};

/// What the picker shows: the namespaces, the one picked, and its pods (or why not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodPickerView {
    pub cluster: String,
    /// The caller reaches the cluster with kubectl (else nothing else is read).
    pub reachable: bool,
    pub namespaces: Vec<NamespaceAccessDto>,
    /// The namespace whose pods are listed (none when the user may see none).
    pub namespace: Option<String>,
    pub pods: Option<PodListDto>,
    /// Why the pods of `namespace` cannot be listed, in words.
    pub refused: Option<String>,
}

/// The namespaces of `cluster` the caller may look into, and the pods of `namespace` (empty:
/// `default` when visible, else the first), both read on the cluster as the caller.
#[server(prefix = "/sfn", endpoint = "pod_picker")]
pub async fn pod_picker(
    cluster: String,
    #[server(default)] namespace: String,
) -> Result<PodPickerView, AppError> {
    use warden_domain::clusters::reads;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let empty = |cluster: String, reachable: bool, refused: Option<String>| PodPickerView {
        cluster,
        reachable,
        namespaces: vec![],
        namespace: None,
        pods: None,
        refused,
    };
    // Not even asked (nor audited as a refusal) for clusters the caller does not reach with
    // kubectl: the cluster page shows no picker then.
    let mine = warden_domain::kubectl::my_kubectl(&svc, &who).await?;
    if !mine.clusters.iter().any(|c| c.name == cluster) {
        let why = format!("you have no kubectl access to cluster {cluster}");
        return Ok(empty(cluster, false, Some(why)));
    }
    // Refusals are answers the picker shows (a clear message), not failed calls.
    let ns = match reads::list_namespaces(&svc, &who, &cluster).await {
        Ok(ns) => ns,
        Err(e) => {
            return Ok(PodPickerView {
                cluster,
                reachable: true,
                namespaces: vec![],
                namespace: None,
                pods: None,
                refused: Some(e.to_string()),
            })
        }
    };
    let wanted = namespace.trim();
    let namespace = if !wanted.is_empty() {
        Some(wanted.to_owned())
    } else if ns.items.iter().any(|n| n.name == "default") {
        Some("default".to_owned())
    } else {
        ns.items.first().map(|n| n.name.clone())
    };
    let (pods, refused) = match &namespace {
        Some(n) => match reads::list_pods(&svc, &who, &cluster, n).await {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e.to_string())),
        },
        None => (None, None),
    };
    Ok(PodPickerView {
        cluster: ns.cluster,
        reachable: true,
        namespaces: ns.items,
        namespace,
        pods,
        refused,
    })
}

/// The picker. `param` is the query parameter that picks the namespace (`namespace` on a
/// cluster's page; `browse` on the terminal page, whose `namespace` belongs to the terminal).
/// As a `card` (a cluster's page) it shows nothing to those who do not reach the cluster with
/// kubectl.
#[component]
pub fn PodPicker(
    cluster: Signal<String>,
    param: &'static str,
    #[prop(optional)] card: bool,
) -> impl IntoView {
    let query = use_query_map();
    let chosen = move || query.read().get(param).unwrap_or_default();
    let (refreshed, set_refreshed) = signal(0u32);
    let view_res = Resource::new(
        move || (cluster.get(), chosen(), refreshed.get()),
        |(c, n, _)| pod_picker(c, n),
    );
    view! {
        <div class="pod-picker" data-testid="pod-picker">
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    match view_res.await {
                        Ok(v) if card && !v.reachable => ().into_any(),
                        Ok(v) if card => view! {
                            <section class="card" aria-labelledby="pods-title">
                                <h2 id="pods-title">"Pods"</h2>
                                <p class="muted">"Listed on the cluster as you (your own service account): what you see is what your access lets you see."</p>
                                <PickerBody view=v param on_refresh=move || set_refreshed.update(|n| *n += 1)/>
                            </section>
                        }.into_any(),
                        Ok(v) => view! { <PickerBody view=v param on_refresh=move || set_refreshed.update(|n| *n += 1)/> }.into_any(),
                        Err(e @ (AppError::Refused(_) | AppError::Unavailable(_))) => view! {
                            <p class="form-error" role="alert" data-testid="pods-refused">{e.to_string()}</p>
                        }.into_any(),
                        Err(e) => view! { <LoadError err=e/> }.into_any(),
                    }
                })}
            </Transition>
        </div>
    }
}

#[component]
fn PickerBody(
    view: PodPickerView,
    param: &'static str,
    on_refresh: impl Fn() + Send + Sync + 'static,
) -> impl IntoView {
    let query = use_query_map();
    let current = view.namespace.clone().unwrap_or_default();
    let href_for = move |ns: &str| {
        let mut q = query.get_untracked();
        q.replace(param, ns.to_owned());
        q.to_query_string()
    };
    let chips = view
        .namespaces
        .iter()
        .map(|n| {
            let selected = n.name == current;
            let label = if n.can_exec {
                n.name.clone()
            } else {
                format!("{} (read-only)", n.name)
            };
            view! {
                <li><a class="chip" class:selected=selected href=href_for(&n.name) aria-current=selected.then_some("true") data-testid=format!("ns-{}", n.name)>{label}</a></li>
            }
        })
        .collect_view();
    let body = match (&view.namespace, view.pods, view.refused) {
        (_, _, Some(why)) => view! {
            <p class="form-error" role="alert" data-testid="pods-refused">{why}</p>
        }
        .into_any(),
        (None, _, None) => view! {
            <p class="empty" data-testid="no-namespaces">"You may not look into any namespace of this cluster. A project administrator grants access with a role binding."</p>
        }
        .into_any(),
        (Some(ns), Some(list), None) if list.items.is_empty() => view! {
            <p class="empty" data-testid="no-pods">{format!("No pods in namespace {ns}.")}</p>
        }
        .into_any(),
        (Some(_), Some(list), None) => view! { <PodTable list/> }.into_any(),
        (Some(_), None, None) => ().into_any(),
    };
    view! {
        <div class="picker-head">
            <ul class="chips namespaces" aria-label="Pick a namespace">{chips}</ul>
            <button type="button" class="btn btn-ghost btn-small" on:click=move |_| on_refresh() data-testid="pods-refresh">"Refresh"</button>
        </div>
        {body}
    }
}

#[component]
fn PodTable(list: PodListDto) -> impl IntoView {
    let PodListDto {
        cluster,
        namespace,
        can_exec,
        items,
    } = list;
    let action = format!("/clusters/{}/terminal", encode(&cluster));
    view! {
        {(!can_exec).then(|| view! {
            <p class="muted" data-testid="pods-readonly">{format!("Your access to namespace {namespace} is read-only: read-only access never allows exec.")}</p>
        })}
        <div class="table-scroll">
        <table class="table pods" data-testid="pods">
            <thead><tr>
                <th scope="col">"Pod"</th><th scope="col">"Status"</th><th scope="col">"Ready"</th>
                <th scope="col">"Containers"</th>
                <th scope="col"><span class="visually-hidden">"Exec"</span></th>
            </tr></thead>
            <tbody>
                {items.into_iter().map(|p| {
                    let exec = (can_exec && p.phase == "Running").then(|| view! {
                        <ExecForm action=action.clone() namespace=namespace.clone() pod=p.clone()/>
                    });
                    let phase_class = format!("chip phase-{}", p.phase.to_lowercase());
                    view! {
                        <tr data-testid=format!("pod-row-{}", p.name)>
                            <td>{p.name.clone()}</td>
                            <td><span class=phase_class>{p.phase.clone()}</span></td>
                            <td>{p.ready.clone()}</td>
                            <td>{p.containers.join(", ")}</td>
                            <td class="actions">{exec}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
}

/// "Exec" into a pod: a GET form to the terminal page (a container picker when the pod has
/// more than one; the first is the default).
#[component]
fn ExecForm(action: String, namespace: String, pod: PodDto) -> impl IntoView {
    let many = pod.containers.len() > 1;
    let first = pod.containers.first().cloned().unwrap_or_default();
    let label = format!("Container of {}", pod.name);
    view! {
        // A plain GET form: leptos_router's <Form> would add the nameless submit button to
        // the query ("&=").
        <form method="get" action=action class="exec-form">
            <input type="hidden" name="namespace" value=namespace/>
            <input type="hidden" name="pod" value=pod.name.clone()/>
            {if many {
                view! {
                    <select name="container" aria-label=label data-testid=format!("container-{}", pod.name)>
                        {pod.containers.iter().map(|c| view! { <option value=c.clone()>{c.clone()}</option> }).collect_view()}
                    </select>
                }.into_any()
            } else {
                view! { <input type="hidden" name="container" value=first/> }.into_any()
            }}
            <button type="submit" class="btn btn-small" data-testid=format!("exec-{}", pod.name)>"Exec"</button>
        </form>
    }
}
