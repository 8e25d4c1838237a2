//! Projects: the list, creation, and a project's page with its members.

use leptos::prelude::*;
use leptos_router::components::Form;
use leptos_router::hooks::{use_params_map, use_query_map};
use warden_domain::dto::{BindingQuery, Page, ProjectCounts, ProjectDto, ProjectQuery};

use crate::bindings::{
    binding_candidates, list_bindings, BindingForm, BindingsTable, CreateBinding, DeleteBinding,
    RemoveBinding,
};
use crate::error::AppError;
use crate::layout::MeResource;
use crate::roles::list_roles;
use crate::ui::{
    can, can_in, confirm_href, confirm_open, me_of, success_count, ConfirmPanel, Field, FormAlert,
    FormState, LoadError, Loading, Pager, Submit,
};

/// The projects the caller can see, a page at a time.
#[server(prefix = "/sfn", endpoint = "list_projects")]
pub async fn list_projects(query: ProjectQuery) -> Result<Page<ProjectDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::projects::list(&svc, &who, &query).await?)
}

/// The names of the projects the caller can see, for a form's choice (no counts).
#[server(prefix = "/sfn", endpoint = "project_names")]
pub async fn project_names() -> Result<Vec<String>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::projects::names(&svc, &who).await?)
}

#[server(prefix = "/sfn", endpoint = "get_project")]
pub async fn get_project(name: String) -> Result<ProjectDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::projects::get(&svc, &who, &name).await?)
}

#[server(prefix = "/sfn", endpoint = "create_project")]
pub async fn create_project(
    name: String,
    #[server(default)] description: String,
) -> Result<ProjectDto, AppError> {
    use warden_domain::dto::CreateProjectRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = CreateProjectRequest {
        name,
        description: Some(description),
    };
    let r = warden_domain::admin::projects::create(&svc, &who, req)
        .await
        .map_err(AppError::from);
    let then = r.as_ref().ok().map(|p| format!("/projects/{}", p.name));
    crate::ssr::finish(r, then)
}

#[server(prefix = "/sfn", endpoint = "update_project")]
pub async fn update_project(name: String, description: String) -> Result<ProjectDto, AppError> {
    use warden_domain::dto::UpdateProjectRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = UpdateProjectRequest {
        description: Some(description),
    };
    let r = warden_domain::admin::projects::update(&svc, &who, &name, req).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "delete_project")]
pub async fn delete_project(name: String) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::projects::delete(&svc, &who, &name).await;
    let then = r
        .is_ok()
        .then(|| format!("/projects?deleted={}", crate::ui::encode(&name)));
    crate::ssr::finish(r.map_err(AppError::from), then)
}

/// Projects on a page of the console.
const PAGE_SIZE: u64 = 50;

fn query_of(q: &leptos_router::params::ParamsMap) -> ProjectQuery {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty());
    ProjectQuery {
        q: get("q"),
        limit: Some(PAGE_SIZE),
        cursor: get("cursor"),
    }
}

#[component]
pub fn ProjectsPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let create = ServerAction::<CreateProject>::new();
    let created = success_count(create);
    let q = use_query_map();
    let projects = Resource::new(
        move || (q.with(query_of), created.get()),
        |(query, _)| list_projects(query),
    );
    let deleted = move || q.with(|q| q.get("deleted"));
    view! {
        <h1>"Projects"</h1>
        {move || deleted().map(|d| view! { <p class="notice" role="status">{format!("Project {d} was deleted.")}</p> })}
        <div class="columns">
            <section class="card grow" aria-labelledby="projects-list-title">
                <h2 id="projects-list-title">"Your projects"</h2>
                <Transition fallback=Loading>
                    {move || Suspend::new(async move {
                        let page = match projects.await {
                            Ok(p) => p,
                            Err(e) => return view! { <LoadError err=e/> }.into_any(),
                        };
                        let current = q.get_untracked();
                        let pq = query_of(&current);
                        let searched = pq.q.is_some();
                        view! {
                            <Form method="GET" action="/projects" attr:class="filters" attr:role="search" attr:aria-label="Search projects">
                                <div class="filter">
                                    <label for="projects-q">"Search"</label>
                                    <input id="projects-q" type="search" name="q" placeholder="Name or description" value=pq.q.clone()/>
                                </div>
                                <div class="filter-actions">
                                    <button type="submit" class="btn">"Search"</button>
                                    {searched.then(|| view! { <a class="btn" href="/projects">"Clear"</a> })}
                                </div>
                            </Form>
                            {if page.items.is_empty() {
                                if searched {
                                    view! { <p class="empty">"No project matches. " <a href="/projects">"Clear the search"</a> "."</p> }.into_any()
                                } else {
                                    view! { <p class="empty">"No projects are visible to you. An administrator creates projects and adds you to them as a member."</p> }.into_any()
                                }
                            } else {
                                view! {
                                    <table class="table" data-testid="projects">
                                        <thead><tr><th scope="col">"Name"</th><th scope="col">"Description"</th><th scope="col">"Clusters"</th><th scope="col">"Members"</th><th scope="col">"Created"</th></tr></thead>
                                        <tbody>
                                            {page.items.into_iter().map(|p| {
                                                let c = p.counts.unwrap_or_default();
                                                view! {
                                                    <tr>
                                                        <td><a href=format!("/projects/{}", p.name)>{p.name.clone()}</a></td>
                                                        <td>{p.description.clone()}</td>
                                                        <td data-testid="project-clusters">{cluster_count_words(&c)}</td>
                                                        <td data-testid="project-members">{member_count_words(&c)}</td>
                                                        <td>{crate::ui::short_time(&p.created_at)}</td>
                                                    </tr>
                                                }
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                }.into_any()
                            }}
                            <Pager base="/projects" current=current.clone() next=page.next.clone()/>
                        }.into_any()
                    })}
                </Transition>
            </section>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    can(&me, "project.create").then(|| view! { <CreateProjectForm action=create/> })
                })}
            </Transition>
        </div>
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "2 owned, 1 shared in", or "none".
fn cluster_count_words(c: &ProjectCounts) -> String {
    match (c.clusters_owned, c.clusters_shared) {
        (0, 0) => "none".to_owned(),
        (o, 0) => format!("{o} owned"),
        (0, s) => format!("{s} shared in"),
        (o, s) => format!("{o} owned, {s} shared in"),
    }
}

/// "3 users, 1 group", or "none".
fn member_count_words(c: &ProjectCounts) -> String {
    match (c.member_users, c.member_groups) {
        (0, 0) => "none".to_owned(),
        (u, 0) => plural(u, "user", "users"),
        (0, g) => plural(g, "group", "groups"),
        (u, g) => format!(
            "{}, {}",
            plural(u, "user", "users"),
            plural(g, "group", "groups")
        ),
    }
}

#[component]
fn CreateProjectForm(action: ServerAction<CreateProject>) -> impl IntoView {
    let state = FormState::new(action, "new-project");
    view! {
        <section class="card side" aria-labelledby="new-project-title">
            <h2 id="new-project-title">"New project"</h2>
            <ActionForm action attr:class="form" attr:data-testid="new-project">
                <Field state name="name" label="Name" required=true autocomplete="off"
                    hint="Lower-case letters, digits and '-', e.g. production."/>
                <Field state name="description" label="Description (optional)" autocomplete="off"/>
                <Submit state label="Create project"/>
            </ActionForm>
            <FormAlert state fields=&["name", "description"]/>
        </section>
    }
}

#[component]
pub fn ProjectPage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.with(|p| p.get("name").unwrap_or_default());
    let update = ServerAction::<UpdateProject>::new();
    let updated = success_count(update);
    let project = Resource::new(move || (name(), updated.get()), |(n, _)| get_project(n));
    let set_approvers = ServerAction::<crate::access_requests::SetApproverGroup>::new();
    let approvers_saved = success_count(set_approvers);
    let approvers = Resource::new(
        move || (name(), approvers_saved.get()),
        |(n, _)| crate::access_requests::get_approver_group(n),
    );
    view! {
        <p class="crumbs"><a href="/projects">"Projects"</a></p>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match project.await {
                    Ok(p) => view! { <ProjectView project=p update approvers set_approvers/> }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn ProjectView(
    project: ProjectDto,
    update: ServerAction<UpdateProject>,
    approvers: crate::access_requests::ApproverGroupResource,
    set_approvers: ServerAction<crate::access_requests::SetApproverGroup>,
) -> impl IntoView {
    let me = expect_context::<MeResource>();
    let name = project.name.clone();
    let n1 = name.clone();
    let n2 = name.clone();
    let n3 = name.clone();
    view! {
        <h1>"Project " <span data-testid="project-name">{project.name.clone()}</span></h1>
        <p class="muted">{if project.description.is_empty() { "No description.".to_owned() } else { project.description.clone() }}</p>
        {project.counts.map(|c| view! {
            <p class="project-counts" data-testid="project-counts">
                {format!("Clusters: {}. Members: {}.", cluster_count_words(&c), member_count_words(&c))}
            </p>
        })}
        <Transition fallback=|| ()>
            {move || {
                let (n1, project) = (n1.clone(), project.clone());
                Suspend::new(async move {
                    let me = me_of(me.await)?;
                    can_in(&me, "project.write", &n1).then(|| view! { <EditProject project action=update/> })
                })
            }}
        </Transition>
        <ProjectClusters project=name.clone()/>
        <ProjectMembers project=name.clone()/>
        <crate::access_requests::ApproverGroupCard project=n3 current=approvers action=set_approvers/>
        <Transition fallback=|| ()>
            {move || {
                let n2 = n2.clone();
                Suspend::new(async move {
                    let me = me_of(me.await)?;
                    can(&me, "project.create").then(|| view! { <DeleteProjectSection name=n2/> })
                })
            }}
        </Transition>
    }
}

#[component]
fn EditProject(project: ProjectDto, action: ServerAction<UpdateProject>) -> impl IntoView {
    let state = FormState::new(action, "edit-project");
    view! {
        <details class="card">
            <summary>"Edit description"</summary>
            <ActionForm action attr:class="form">
                <input type="hidden" name="name" value=project.name.clone()/>
                <Field state name="description" label="Description" value=project.description.clone() autocomplete="off"/>
                <Submit state label="Save"/>
            </ActionForm>
            <FormAlert state fields=&["description"] ok="Saved."/>
        </details>
    }
}

/// The clusters the project owns and those shared with it.
#[component]
fn ProjectClusters(project: String) -> impl IntoView {
    let p = project.clone();
    let clusters = Resource::new(
        move || p.clone(),
        |p| crate::clusters::list_clusters(p, String::new(), String::new(), false),
    );
    let project = StoredValue::new(project);
    view! {
        <section class="card" aria-labelledby="project-clusters-title">
            <h2 id="project-clusters-title">"Clusters"</h2>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    let project = project.get_value();
                    match clusters.await {
                        Ok(list) if list.is_empty() => view! {
                            <p class="empty">{format!(
                                "No clusters in {project} that you can see. An administrator imports a cluster into this project, or shares one with it, from the Clusters page."
                            )}</p>
                        }.into_any(),
                        Ok(list) => view! {
                            <div class="table-scroll">
                                <table class="table" data-testid="project-clusters-table">
                                    <thead><tr><th scope="col">"Cluster"</th><th scope="col">"Status"</th><th scope="col">"In this project"</th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|c| {
                                            let how = if c.project == project {
                                                "owned".to_owned()
                                            } else {
                                                format!("shared by {}", c.project)
                                            };
                                            view! {
                                                <tr>
                                                    <td><a href=format!("/clusters/{}", c.name)>{c.name.clone()}</a></td>
                                                    <td><crate::clusters::StatusChip status=c.status.clone()/></td>
                                                    <td>{how}</td>
                                                </tr>
                                            }
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

/// The project's members: bindings of users and groups to roles in it.
#[component]
fn ProjectMembers(project: String) -> impl IntoView {
    let me = expect_context::<MeResource>();
    let add = ServerAction::<CreateBinding>::new();
    let remove = ServerAction::<DeleteBinding>::new();
    let (added, removed) = (success_count(add), success_count(remove));
    let p = project.clone();
    let members = Resource::new(
        move || (p.clone(), added.get(), removed.get()),
        |(p, _, _)| {
            list_bindings(BindingQuery {
                project: Some(p),
                ..Default::default()
            })
        },
    );
    let roles = Resource::new(|| (), |_| list_roles());
    let candidates = Resource::new(|| (), |_| binding_candidates());
    let remove_state = FormState::new(remove, "remove-binding");
    let p_form = project.clone();
    view! {
        <section class="card" aria-labelledby="members-title">
            <h2 id="members-title">"Members"</h2>
            <p class="muted">"Users and groups holding a role in this project. Namespace roles apply only to the namespaces shown."</p>
            <FormAlert state=remove_state ok="Binding removed."/>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    let me = me_of(me.await);
                    match (members.await, me) {
                        (Ok(list), _) if list.is_empty() => view! {
                            <p class="empty">"No members yet. Add a group (recommended) or a user with a role below."</p>
                        }.into_any(),
                        (Ok(list), Some(me)) => view! {
                            <RemoveBinding bindings=list.clone() action=remove/>
                            <BindingsTable bindings=list hide_project=true me
                                can_remove=|b, me| can_in(me, "project.write", b.project.as_deref().unwrap_or_default())
                                testid="members"/>
                        }.into_any(),
                        (Ok(_), None) => ().into_any(),
                        (Err(e), _) => view! { <LoadError err=e/> }.into_any(),
                    }
                })}
            </Transition>
            <Transition fallback=|| ()>
                {move || {
                    let p = p_form.clone();
                    Suspend::new(async move {
                        let me = me_of(me.await)?;
                        if !can_in(&me, "project.write", &p) {
                            return None;
                        }
                        let roles = roles.await.ok()?;
                        let candidates = candidates.await.unwrap_or_default();
                        Some(view! {
                            <h3>"Add a member"</h3>
                            <BindingForm action=add project=p roles candidates prefix="add-member"/>
                        })
                    })
                }}
            </Transition>
        </section>
    }
}

#[component]
fn DeleteProjectSection(name: String) -> impl IntoView {
    let action = ServerAction::<DeleteProject>::new();
    let state = FormState::new(action, "delete-project");
    let open = confirm_open("delete-project", None);
    let members = Resource::new(
        {
            let n = name.clone();
            move || n.clone()
        },
        |p| {
            list_bindings(BindingQuery {
                project: Some(p),
                ..Default::default()
            })
        },
    );
    let href = confirm_href("delete-project", None);
    let n = StoredValue::new(name);
    view! {
        <section class="card danger-zone" aria-labelledby="delete-project-title">
            <h2 id="delete-project-title">"Delete this project"</h2>
            <FormAlert state/>
            <Show when=move || open.get() fallback=move || view! {
                <p>"Deleting a project removes its members' access to it. A project that still owns clusters cannot be deleted."</p>
                <a class="btn btn-danger-outline" href=href.clone() data-testid="delete-project">"Delete project…"</a>
            }>
                <ConfirmPanel title=format!("Delete project {}?", n.get_value())>
                    <Transition fallback=Loading>
                        {move || Suspend::new(async move {
                            let count = members.await.map(|m| m.len()).unwrap_or_default();
                            view! {
                                <p>{format!(
                                    "This deletes project {} and its {} member binding(s). Its members lose every right they hold through it on the next request.",
                                    n.get_value(), count
                                )}</p>
                            }
                        })}
                    </Transition>
                    <ActionForm action>
                        <input type="hidden" name="name" value=n.get_value()/>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-delete-project">"Delete project"</button>
                    </ActionForm>
                </ConfirmPanel>
            </Show>
        </section>
    }
}
