//! Roles: the built-ins (read-only) and custom roles, created and edited with a permission
//! picker grouped by area that checks the role's scope as one types.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};
use std::collections::BTreeSet;
use warden_domain::dto::{BindingQuery, PermissionDto, RoleDto};
use warden_domain::permissions::Scope;

use crate::bindings::{describe, list_bindings};
use crate::error::AppError;
use crate::layout::MeResource;
use crate::ui::{
    can, confirm_href, confirm_open, me_of, success_count, ConfirmPanel, Field, FieldError,
    FormAlert, FormState, LoadError, Loading, Submit,
};

#[server(prefix = "/sfn", endpoint = "list_roles")]
pub async fn list_roles() -> Result<Vec<RoleDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::roles::list(&svc, &who).await?.items)
}

#[server(prefix = "/sfn", endpoint = "get_role")]
pub async fn get_role(name: String) -> Result<RoleDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::roles::get(&svc, &who, &name).await?)
}

/// The permission catalogue, for the picker.
#[server(prefix = "/sfn", endpoint = "list_permissions")]
pub async fn list_permissions() -> Result<Vec<PermissionDto>, AppError> {
    crate::ssr::principal().await?;
    Ok(warden_domain::admin::roles::catalogue())
}

#[server(prefix = "/sfn", endpoint = "create_role")]
pub async fn create_role(
    name: String,
    scope: String,
    #[server(default)] description: String,
    #[server(default)] permissions: Vec<String>,
) -> Result<RoleDto, AppError> {
    use warden_domain::dto::CreateRoleRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let offered = "must be organization, project or namespace";
    let scope = AppError::choice("scope", &scope, warden_domain::dto::Scope::parse, offered)?
        .ok_or_else(|| AppError::invalid("scope", offered))?;
    let req = CreateRoleRequest {
        name,
        scope,
        description: Some(description),
        permissions,
    };
    let r = warden_domain::admin::roles::create(&svc, &who, req)
        .await
        .map_err(AppError::from);
    let then = r.as_ref().ok().map(|r| format!("/roles/{}", r.name));
    crate::ssr::finish(r, then)
}

#[server(prefix = "/sfn", endpoint = "update_role")]
pub async fn update_role(
    name: String,
    #[server(default)] description: String,
    #[server(default)] permissions: Vec<String>,
) -> Result<RoleDto, AppError> {
    use warden_domain::dto::UpdateRoleRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = UpdateRoleRequest {
        description: Some(description),
        permissions: Some(permissions),
    };
    let r = warden_domain::admin::roles::update(&svc, &who, &name, req).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "delete_role")]
pub async fn delete_role(name: String) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::roles::delete(&svc, &who, &name).await;
    let then = r
        .is_ok()
        .then(|| format!("/roles?deleted={}", crate::ui::encode(&name)));
    crate::ssr::finish(r.map_err(AppError::from), then)
}

/// Whether a role of `scope` may carry a permission whose narrowest scope is `min`.
fn allowed(scope: &str, min: Scope) -> bool {
    Scope::parse(scope).is_none_or(|s| s <= min)
}

/// What is wrong with this choice, as the server will say it.
fn problems(scope: &str, catalogue: &[PermissionDto], chosen: &BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = catalogue
        .iter()
        .filter(|p| chosen.contains(&p.name) && !allowed(scope, p.scope))
        .map(|p| {
            format!(
                "{} needs a role of {} scope; a {scope} role cannot carry it.",
                p.name, p.scope
            )
        })
        .collect();
    if scope != "namespace" && chosen.contains("kubectl.namespace.write") {
        out.push(format!(
            "{}.",
            warden_domain::permissions::NAMESPACE_WRITE_WIDE
        ));
    }
    if scope == "namespace"
        && !chosen.contains("kubectl.namespace.read")
        && !chosen.contains("kubectl.namespace.write")
    {
        out.push(
            "A namespace role must carry kubectl.namespace.read or kubectl.namespace.write.".into(),
        );
    }
    out
}

#[component]
pub fn RolesPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let roles = Resource::new(|| (), |_| list_roles());
    let q = use_query_map();
    let deleted = move || q.with(|q| q.get("deleted"));
    view! {
        <div class="page-head">
            <h1>"Roles"</h1>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    can(&me, "role.write").then(|| view! { <a class="btn btn-primary" href="/roles/new">"New custom role"</a> })
                })}
            </Transition>
        </div>
        {move || deleted().map(|d| view! { <p class="notice" role="status">{format!("Role {d} was deleted.")}</p> })}
        <p class="muted">"A role is a set of permissions with a scope: the whole organization, one project, or some namespaces of a project. Built-in roles cannot be changed."</p>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match roles.await {
                    Ok(list) => {
                        let custom = list.iter().filter(|r| !r.builtin).count();
                        view! {
                            <div class="table-scroll">
                            <table class="table" data-testid="roles">
                                <thead><tr><th scope="col">"Name"</th><th scope="col">"Scope"</th><th scope="col">"Description"</th><th scope="col">"Permissions"</th></tr></thead>
                                <tbody>
                                    {list.into_iter().map(|r| view! {
                                        <tr>
                                            <td>
                                                <a href=format!("/roles/{}", r.name)>{r.name.clone()}</a>
                                                " " <span class="tag">{if r.builtin { "built-in" } else { "custom" }}</span>
                                            </td>
                                            <td>{r.scope.label()}</td>
                                            <td>{r.description.clone()}</td>
                                            <td>{r.permissions.len()}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                            </div>
                            {(custom == 0).then(|| view! {
                                <p class="empty">"No custom roles yet. When no built-in role fits, create one with exactly the permissions needed."</p>
                            })}
                        }.into_any()
                    }
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// Permissions grouped by area, read-only.
#[component]
fn PermissionList(role: RoleDto, catalogue: Vec<PermissionDto>) -> impl IntoView {
    let mut areas: Vec<String> = Vec::new();
    for p in &catalogue {
        if !areas.contains(&p.area) {
            areas.push(p.area.clone());
        }
    }
    view! {
        <div class="perm-areas" data-testid="role-permissions">
            {areas.into_iter().filter_map(|area| {
                let held: Vec<PermissionDto> = catalogue.iter().filter(|p| p.area == area && role.permissions.contains(&p.name)).cloned().collect();
                (!held.is_empty()).then(|| view! {
                    <div class="perm-area">
                        <h3>{area}</h3>
                        <ul class="plain">
                            {held.into_iter().map(|p| view! { <li><code>{p.name.clone()}</code> " " <span class="muted">{p.description.clone()}</span></li> }).collect_view()}
                        </ul>
                    </div>
                })
            }).collect_view()}
        </div>
    }
}

/// Checkboxes grouped by area, with the role's scope checked as one picks.
#[component]
fn PermissionPicker(
    state: FormState,
    catalogue: Vec<PermissionDto>,
    scope: Signal<String>,
    initial: Vec<String>,
) -> impl IntoView {
    let chosen = RwSignal::new(initial.iter().cloned().collect::<BTreeSet<String>>());
    let touched = RwSignal::new(false);
    // Effects run in the browser only: true once the page is hydrated.
    let running = RwSignal::new(false);
    Effect::new(move |_| running.set(true));
    let cat = StoredValue::new(catalogue.clone());
    let mut areas: Vec<String> = Vec::new();
    for p in &catalogue {
        if !areas.contains(&p.area) {
            areas.push(p.area.clone());
        }
    }
    let live = move || {
        let mut msgs = cat.with_value(|c| chosen.with(|ch| problems(&scope.get(), c, ch)));
        if touched.get() && chosen.with(|c| c.is_empty()) {
            msgs.push("Choose at least one permission.".into());
        }
        msgs
    };
    view! {
        <fieldset class="picker" aria-describedby=format!("{} perm-live", state.err_id("permissions"))>
            <legend>"Permissions"</legend>
            <div class="perm-areas">
                {areas.into_iter().map(|area| {
                    let perms: Vec<PermissionDto> = catalogue.iter().filter(|p| p.area == area).cloned().collect();
                    view! {
                        <fieldset class="perm-area">
                            <legend>{area.clone()}</legend>
                            {perms.into_iter().map(|p| {
                                let id = format!("perm-{}", p.name.replace('.', "-"));
                                let name = p.name.clone();
                                let n2 = p.name.clone();
                                let min = p.scope;
                                let blocked = move || !allowed(&scope.get(), min);
                                let blocked2 = blocked.clone();
                                let checked = initial.contains(&p.name);
                                // Once the page runs (a plain form's scope select cannot re-enable
                                // it), one the scope cannot carry cannot be ticked; one ticked
                                // before the scope narrowed stays, to be unticked (the list says why).
                                let n3 = p.name.clone();
                                let blocked3 = blocked.clone();
                                let locked = move || running.get() && blocked3() && !chosen.with(|c| c.contains(&n3));
                                view! {
                                    <div class="perm" class:perm-blocked=blocked>
                                        <input type="checkbox" id=id.clone() name="permissions[]" value=p.name.clone() checked=checked
                                            disabled=locked
                                            on:change=move |ev| {
                                                let on = event_target_checked(&ev);
                                                touched.set(true);
                                                chosen.update(|c| { if on { c.insert(name.clone()); } else { c.remove(&name); } });
                                            }/>
                                        <label for=id>
                                            <code>{n2}</code>
                                            <span class="muted">{p.description.clone()}</span>
                                            {move || blocked2().then(|| view! { <span class="perm-note">{format!("needs a role of {} scope", p.scope)}</span> })}
                                        </label>
                                    </div>
                                }
                            }).collect_view()}
                        </fieldset>
                    }
                }).collect_view()}
            </div>
            <div id="perm-live" aria-live="polite">
                {move || {
                    let msgs = live();
                    (!msgs.is_empty()).then(|| view! {
                        <ul class="field-error" data-testid="scope-problems">{msgs.into_iter().map(|m| view! { <li>{m}</li> }).collect_view()}</ul>
                    })
                }}
            </div>
            <FieldError state field="permissions"/>
        </fieldset>
    }
}

#[component]
pub fn NewRolePage() -> impl IntoView {
    let action = ServerAction::<CreateRole>::new();
    let state = FormState::new(action, "new-role");
    let catalogue = Resource::new(|| (), |_| list_permissions());
    let scope = RwSignal::new("project".to_owned());
    view! {
        <p class="crumbs"><a href="/roles">"Roles"</a></p>
        <h1>"New custom role"</h1>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match catalogue.await {
                    Ok(catalogue) => view! {
                        <section class="card">
                            <ActionForm action attr:class="form" attr:data-testid="new-role">
                                <Field state name="name" label="Name" required=true autocomplete="off"
                                    hint="Letters, digits, '_' or '-', starting with a letter, e.g. DEPLOYER."/>
                                <label for=state.id("scope")>"Scope"</label>
                                <select id=state.id("scope") name="scope" on:change=move |ev| scope.set(event_target_value(&ev))
                                    aria-describedby=format!("{} {}", state.id("scope-hint"), state.err_id("scope"))>
                                    <option value="organization">"Organization: applies everywhere"</option>
                                    <option value="project" selected=true>"Project: applies to one project"</option>
                                    <option value="namespace">"Namespace: applies to some namespaces of a project"</option>
                                </select>
                                <p class="hint" id=state.id("scope-hint")>"A role cannot carry permissions wider than its scope."</p>
                                <FieldError state field="scope"/>
                                <Field state name="description" label="Description (optional)" autocomplete="off"/>
                                <PermissionPicker state catalogue scope=scope.into() initial=vec![]/>
                                <Submit state label="Create role"/>
                            </ActionForm>
                            <FormAlert state fields=&["name", "scope", "description", "permissions"]/>
                        </section>
                    }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
pub fn RolePage() -> impl IntoView {
    let params = use_params_map();
    let name = move || params.with(|p| p.get("name").unwrap_or_default());
    let update = ServerAction::<UpdateRole>::new();
    let updated = success_count(update);
    let role = Resource::new(move || (name(), updated.get()), |(n, _)| get_role(n));
    let catalogue = Resource::new(|| (), |_| list_permissions());
    view! {
        <p class="crumbs"><a href="/roles">"Roles"</a></p>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match (role.await, catalogue.await) {
                    (Ok(r), Ok(c)) => view! { <RoleView role=r catalogue=c update/> }.into_any(),
                    (Err(e), _) | (_, Err(e)) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn RoleView(
    role: RoleDto,
    catalogue: Vec<PermissionDto>,
    update: ServerAction<UpdateRole>,
) -> impl IntoView {
    let me = expect_context::<MeResource>();
    let state = FormState::new(update, "edit-role");
    let r = StoredValue::new(role.clone());
    let cat = StoredValue::new(catalogue.clone());
    let used_by = Resource::new(
        {
            let n = role.name.clone();
            move || n.clone()
        },
        |n| {
            list_bindings(BindingQuery {
                role: Some(n),
                ..Default::default()
            })
        },
    );
    view! {
        <h1>"Role " {role.name.clone()} " " <span class="tag">{if role.builtin { "built-in" } else { "custom" }}</span></h1>
        <p>{role.description.clone()}</p>
        <p class="muted">{format!("Scope: {}.", role.scope.label())}</p>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                let me = me_of(me.await)?;
                let role = r.get_value();
                let editable = !role.builtin && can(&me, "role.write");
                Some(if editable {
                    view! {
                        <section class="card">
                            <h2>"Edit"</h2>
                            <ActionForm action=update attr:class="form" attr:data-testid="edit-role">
                                <input type="hidden" name="name" value=role.name.clone()/>
                                <Field state name="description" label="Description" value=role.description.clone() autocomplete="off"/>
                                <PermissionPicker state catalogue=cat.get_value() scope=Signal::stored(role.scope.as_str().to_owned()) initial=role.permissions.clone()/>
                                <Submit state label="Save"/>
                            </ActionForm>
                            <FormAlert state fields=&["description", "permissions"] ok="Saved. The change applies on the next request."/>
                        </section>
                    }.into_any()
                } else {
                    view! {
                        <section class="card">
                            <h2>"Permissions"</h2>
                            {role.builtin.then(|| view! { <p class="muted">"Built-in roles are read-only. To grant something else, create a custom role."</p> })}
                            <PermissionList role catalogue=cat.get_value()/>
                        </section>
                    }.into_any()
                })
            })}
        </Transition>
        <section class="card" aria-labelledby="used-by-title">
            <h2 id="used-by-title">"Who holds it"</h2>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    match used_by.await {
                        Ok(list) if list.is_empty() => view! { <p class="empty">"Nobody you can see holds this role. Bind it on a project's, group's or user's page."</p> }.into_any(),
                        Ok(list) => view! {
                            <ul class="plain" data-testid="role-bindings">{list.iter().map(|b| view! { <li>{describe(b)}</li> }).collect_view()}</ul>
                        }.into_any(),
                        Err(e) => view! { <LoadError err=e/> }.into_any(),
                    }
                })}
            </Transition>
        </section>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let me = me_of(me.await)?;
                let role = r.get_value();
                let bindings = used_by.await.map(|l| l.len()).unwrap_or_default();
                (!role.builtin && can(&me, "role.write")).then(|| view! { <DeleteRoleSection name=role.name bindings/> })
            })}
        </Transition>
    }
}

#[component]
fn DeleteRoleSection(name: String, bindings: usize) -> impl IntoView {
    let action = ServerAction::<DeleteRole>::new();
    let state = FormState::new(action, "delete-role");
    let open = confirm_open("delete-role", None);
    let href = confirm_href("delete-role", None);
    let n = StoredValue::new(name);
    view! {
        <section class="card danger-zone" aria-labelledby="delete-role-title">
            <h2 id="delete-role-title">"Delete this role"</h2>
            <FormAlert state/>
            <Show when=move || open.get() fallback=move || view! {
                <p>"A role that is still bound cannot be deleted: remove its bindings first."</p>
                <a class="btn btn-danger-outline" href=href.clone()>"Delete role…"</a>
            }>
                <ConfirmPanel title=format!("Delete role {}?", n.get_value())>
                    <p>{if bindings == 0 {
                        "Nobody holds it; deleting it changes nobody's access.".to_owned()
                    } else {
                        format!("It is bound {bindings} time(s); the deletion will be refused until those bindings are removed.")
                    }}</p>
                    <ActionForm action>
                        <input type="hidden" name="name" value=n.get_value()/>
                        <button type="submit" class="btn btn-danger">"Delete role"</button>
                    </ActionForm>
                </ConfirmPanel>
            </Show>
        </section>
    }
}
