//! Groups: the list, creation, and a group's page with its members and bindings.

use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};
use warden_domain::dto::{BindingQuery, GroupDto, SubjectKind, SubjectRef};

use crate::bindings::{
    binding_candidates, list_bindings, BindingForm, BindingsTable, CreateBinding, DeleteBinding,
    RemoveBinding,
};
use crate::error::AppError;
use crate::layout::MeResource;
use crate::projects::project_names;
use crate::roles::list_roles;
use crate::ui::{
    can, can_in, confirm_href, confirm_open, confirm_target, me_of, success_count, ConfirmPanel,
    Field, FormAlert, FormState, LoadError, Loading, Submit,
};

/// The built-in group every user belongs to.
const ALL_USERS: &str = "All Users";

#[server(prefix = "/sfn", endpoint = "list_groups")]
pub async fn list_groups() -> Result<Vec<GroupDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::groups::list(&svc, &who).await?.items)
}

/// Every group as a choice in a form (id, name, built in), without member counts.
#[server(prefix = "/sfn", endpoint = "group_refs")]
pub async fn group_refs() -> Result<Vec<warden_domain::dto::GroupRef>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::groups::refs(&svc, &who).await?)
}

#[server(prefix = "/sfn", endpoint = "get_group")]
pub async fn get_group(id: String) -> Result<GroupDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::groups::get(&svc, &who, &id).await?)
}

#[server(prefix = "/sfn", endpoint = "create_group")]
pub async fn create_group(
    name: String,
    #[server(default)] description: String,
) -> Result<GroupDto, AppError> {
    use warden_domain::dto::CreateGroupRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = CreateGroupRequest {
        name,
        description: Some(description),
    };
    let r = warden_domain::admin::groups::create(&svc, &who, req)
        .await
        .map_err(AppError::from);
    let then = r.as_ref().ok().map(|g| format!("/groups/{}", g.id));
    crate::ssr::finish(r, then)
}

#[server(prefix = "/sfn", endpoint = "update_group")]
pub async fn update_group(id: String, description: String) -> Result<GroupDto, AppError> {
    use warden_domain::dto::UpdateGroupRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = UpdateGroupRequest {
        description: Some(description),
    };
    let r = warden_domain::admin::groups::update(&svc, &who, &id, req).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "delete_group")]
pub async fn delete_group(id: String) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let name = warden_domain::admin::groups::get(&svc, &who, &id)
        .await
        .map(|g| g.name)
        .unwrap_or_default();
    let r = warden_domain::admin::groups::delete(&svc, &who, &id).await;
    let then = r
        .is_ok()
        .then(|| format!("/groups?deleted={}", crate::ui::encode(&name)));
    crate::ssr::finish(r.map_err(AppError::from), then)
}

#[server(prefix = "/sfn", endpoint = "add_group_member")]
pub async fn add_group_member(group: String, user: String) -> Result<GroupDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::groups::add_member(&svc, &who, &group, user.trim()).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "remove_group_member")]
pub async fn remove_group_member(group: String, user: String) -> Result<GroupDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::groups::remove_member(&svc, &who, &group, &user).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[component]
pub fn GroupsPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let create = ServerAction::<CreateGroup>::new();
    let groups = Resource::new(|| (), |_| list_groups());
    let q = use_query_map();
    let deleted = move || q.with(|q| q.get("deleted"));
    view! {
        <h1>"Groups"</h1>
        {move || deleted().map(|d| view! { <p class="notice" role="status">{format!("Group {d} was deleted.")}</p> })}
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match groups.await {
                    Ok(list) => view! {
                        <div class="columns">
                            <section class="card grow" aria-labelledby="groups-title">
                                <h2 id="groups-title">"All groups"</h2>
                                <p class="muted">"Bind roles to groups rather than to people: adding someone to a group then gives them its access."</p>
                                <div class="table-scroll">
                                <table class="table" data-testid="groups">
                                    <thead><tr><th scope="col">"Name"</th><th scope="col">"Description"</th><th scope="col">"Members"</th></tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|g| view! {
                                            <tr>
                                                <td>
                                                    <a href=format!("/groups/{}", g.id)>{g.name.clone()}</a>
                                                    {g.builtin.then(|| view! { " " <span class="tag">"built-in"</span> })}
                                                </td>
                                                <td>{g.description.clone()}</td>
                                                <td>{g.member_count}</td>
                                            </tr>
                                        }).collect_view()}
                                    </tbody>
                                </table>
                                </div>
                            </section>
                            <Transition fallback=|| ()>
                                {move || Suspend::new(async move {
                                    let me = me_of(me.await)?;
                                    can(&me, "group.write").then(|| view! { <CreateGroupForm action=create/> })
                                })}
                            </Transition>
                        </div>
                    }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn CreateGroupForm(action: ServerAction<CreateGroup>) -> impl IntoView {
    let state = FormState::new(action, "new-group");
    view! {
        <section class="card side" aria-labelledby="new-group-title">
            <h2 id="new-group-title">"New group"</h2>
            <ActionForm action attr:class="form" attr:data-testid="new-group">
                <Field state name="name" label="Name" required=true autocomplete="off"/>
                <Field state name="description" label="Description (optional)" autocomplete="off"/>
                <Submit state label="Create group"/>
            </ActionForm>
            <FormAlert state fields=&["name", "description"]/>
        </section>
    }
}

#[component]
pub fn GroupPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let update = ServerAction::<UpdateGroup>::new();
    let add = ServerAction::<AddGroupMember>::new();
    let remove = ServerAction::<RemoveGroupMember>::new();
    let changed = (
        success_count(update),
        success_count(add),
        success_count(remove),
    );
    let group = Resource::new(
        move || (id(), changed.0.get(), changed.1.get(), changed.2.get()),
        |(id, ..)| get_group(id),
    );
    view! {
        <p class="crumbs"><a href="/groups">"Groups"</a></p>
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match group.await {
                    Ok(g) => view! { <GroupView group=g update add remove/> }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
    }
}

#[component]
fn GroupView(
    group: GroupDto,
    update: ServerAction<UpdateGroup>,
    add: ServerAction<AddGroupMember>,
    remove: ServerAction<RemoveGroupMember>,
) -> impl IntoView {
    let me = expect_context::<MeResource>();
    let g = StoredValue::new(group.clone());
    let update_state = FormState::new(update, "edit-group");
    let add_state = FormState::new(add, "add-member");
    let remove_state = FormState::new(remove, "remove-member");
    let add_form = NodeRef::<leptos::html::Form>::new();
    crate::ui::reset_on_success(add, add_form);
    crate::ui::close_confirm_on_success(remove);
    let candidates = Resource::new(|| (), |_| binding_candidates());
    let removing = confirm_target("remove-member");
    view! {
        <h1>"Group " <span data-testid="group-name">{group.name.clone()}</span>
            {group.builtin.then(|| view! { " " <span class="tag">"built-in"</span> })}</h1>
        <p class="muted">{if group.description.is_empty() { "No description.".to_owned() } else { group.description.clone() }}</p>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let me = me_of(me.await)?;
                can(&me, "group.write").then(|| view! {
                    <details class="card">
                        <summary>"Edit description"</summary>
                        <ActionForm action=update attr:class="form">
                            <input type="hidden" name="id" value=g.with_value(|g| g.id.clone())/>
                            <Field state=update_state name="description" label="Description" value=g.with_value(|g| g.description.clone()) autocomplete="off"/>
                            <Submit state=update_state label="Save"/>
                        </ActionForm>
                        <FormAlert state=update_state fields=&["description"] ok="Saved."/>
                    </details>
                })
            })}
        </Transition>

        <section class="card" aria-labelledby="group-members-title">
            <h2 id="group-members-title">"Members"</h2>
            <FormAlert state=remove_state ok="Member removed."/>
            {move || {
                let email = removing.get()?;
                let g = g.get_value();
                g.members.iter().any(|m| m.email == email).then(|| view! {
                    <ConfirmPanel title=format!("Remove {email} from {}?", g.name)>
                        <p>{format!(
                            "{email} loses the access group {} grants on the next request, unless another binding grants it.",
                            g.name
                        )}</p>
                        <ActionForm action=remove>
                            <input type="hidden" name="group" value=g.id.clone()/>
                            <input type="hidden" name="user" value=email.clone()/>
                            <button type="submit" class="btn btn-danger" data-testid="confirm-remove-member">"Remove member"</button>
                        </ActionForm>
                    </ConfirmPanel>
                })
            }}
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    let g = g.get_value();
                    let writable = can(&me, "group.write") && g.name != ALL_USERS;
                    Some(if g.members.is_empty() {
                        view! { <p class="empty">"No members yet. Add people by email below; they get the group's access at once."</p> }.into_any()
                    } else {
                        view! {
                            <div class="table-scroll">
                            <table class="table" data-testid="group-members">
                                <thead><tr><th scope="col">"Email"</th><th scope="col">"Name"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th></tr></thead>
                                <tbody>
                                    {g.members.iter().map(|m| {
                                        let href = confirm_href("remove-member", Some(&m.email));
                                        let user_link = if can(&me, "user.read") {
                                            view! { <a href=format!("/users/{}", m.id)>{m.email.clone()}</a> }.into_any()
                                        } else {
                                            view! { <span>{m.email.clone()}</span> }.into_any()
                                        };
                                        view! {
                                            <tr>
                                                <td>{user_link}</td>
                                                <td>{m.name.clone()}</td>
                                                <td class="actions">{writable.then(|| view! {
                                                    <a href=href aria-label=format!("Remove {}", m.email)>"Remove…"</a>
                                                })}</td>
                                            </tr>
                                        }
                                    }).collect_view()}
                                </tbody>
                            </table>
                            </div>
                        }.into_any()
                    })
                })}
            </Transition>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    let g = g.get_value();
                    if !can(&me, "group.write") || g.name == ALL_USERS {
                        return None;
                    }
                    let users = candidates.await.map(|c| c.users).unwrap_or_default();
                    Some(view! {
                        <h3>"Add a member"</h3>
                        <ActionForm action=add node_ref=add_form attr:class="form form-inline" attr:data-testid="add-member">
                            <input type="hidden" name="group" value=g.id.clone()/>
                            <div class="field">
                                <Field state=add_state name="user" label="User email" kind="email" required=true list="add-member-users" autocomplete="off"/>
                                <datalist id="add-member-users">
                                    {users.into_iter().map(|u| view! { <option value=u/> }).collect_view()}
                                </datalist>
                            </div>
                            <div class="field field-submit"><Submit state=add_state label="Add member"/></div>
                        </ActionForm>
                        <FormAlert state=add_state fields=&["user"] ok="Member added."/>
                    })
                })}
            </Transition>
        </section>

        <GroupBindings group=group.clone()/>

        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let me = me_of(me.await)?;
                let g = g.get_value();
                (can(&me, "group.write") && !g.builtin).then(|| view! { <DeleteGroupSection group=g/> })
            })}
        </Transition>
    }
}

/// The roles bound to the group.
#[component]
fn GroupBindings(group: GroupDto) -> impl IntoView {
    let me = expect_context::<MeResource>();
    let add = ServerAction::<CreateBinding>::new();
    let remove = ServerAction::<DeleteBinding>::new();
    let (added, removed) = (success_count(add), success_count(remove));
    let name = group.name.clone();
    let bindings = Resource::new(
        move || (name.clone(), added.get(), removed.get()),
        |(g, ..)| {
            list_bindings(BindingQuery {
                group: Some(g),
                ..Default::default()
            })
        },
    );
    let roles = Resource::new(|| (), |_| list_roles());
    let projects = Resource::new(|| (), |_| project_names());
    let remove_state = FormState::new(remove, "remove-binding");
    let subject = StoredValue::new(SubjectRef {
        kind: SubjectKind::Group,
        name: group.name.clone(),
    });
    view! {
        <section class="card" aria-labelledby="group-bindings-title">
            <h2 id="group-bindings-title">"Roles"</h2>
            <p class="muted">"Every member holds these roles."</p>
            <FormAlert state=remove_state ok="Binding removed."/>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    Some(match bindings.await {
                        Ok(list) if list.is_empty() => view! {
                            <p class="empty">"This group holds no role yet. Add one below, e.g. PROJECT_ADMIN on a project."</p>
                        }.into_any(),
                        Ok(list) => view! {
                            <RemoveBinding bindings=list.clone() action=remove/>
                            <BindingsTable bindings=list hide_subject=true me
                                can_remove=|b, me| match &b.project {
                                    Some(p) => can_in(me, "project.write", p),
                                    None => can(me, "user.write"),
                                }
                                testid="group-bindings"/>
                        }.into_any(),
                        Err(e) => view! { <LoadError err=e/> }.into_any(),
                    })
                })}
            </Transition>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    let roles = roles.await.ok()?;
                    let projects: Vec<String> = projects.await.ok()?;
                    let writable: Vec<String> = projects.into_iter().filter(|p| can_in(&me, "project.write", p)).collect();
                    if writable.is_empty() && !can(&me, "user.write") {
                        return None;
                    }
                    Some(view! {
                        <h3>"Add a role"</h3>
                        <BindingForm action=add subject=subject.get_value() projects=writable roles prefix="add-group-binding"/>
                    })
                })}
            </Transition>
        </section>
    }
}

#[component]
fn DeleteGroupSection(group: GroupDto) -> impl IntoView {
    let action = ServerAction::<DeleteGroup>::new();
    let state = FormState::new(action, "delete-group");
    let open = confirm_open("delete-group", None);
    let href = confirm_href("delete-group", None);
    let g = StoredValue::new(group);
    view! {
        <section class="card danger-zone" aria-labelledby="delete-group-title">
            <h2 id="delete-group-title">"Delete this group"</h2>
            <FormAlert state/>
            <Show when=move || open.get() fallback=move || view! {
                <p>"A group that still holds roles cannot be deleted: remove its roles first."</p>
                <a class="btn btn-danger-outline" href=href.clone() data-testid="delete-group">"Delete group…"</a>
            }>
                <ConfirmPanel title=format!("Delete group {}?", g.with_value(|g| g.name.clone()))>
                    <p>{g.with_value(|g| format!(
                        "This deletes group {} and its {} membership(s). Its members lose the access it grants on the next request.",
                        g.name, g.members.len()
                    ))}</p>
                    <ActionForm action>
                        <input type="hidden" name="id" value=g.with_value(|g| g.id.clone())/>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-delete-group">"Delete group"</button>
                    </ActionForm>
                </ConfirmPanel>
            </Show>
        </section>
    }
}
