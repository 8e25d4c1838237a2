//! Users: the searchable list, creation, and a user's page (profile, groups, roles, effective
//! access with the "why", account actions).

use leptos::prelude::*;
use leptos_router::components::Form;
use leptos_router::hooks::{use_params_map, use_query_map};
use serde::{Deserialize, Serialize};
use warden_domain::dto::{
    CreatedUser, Explanation, Page, SubjectKind, SubjectRef, UserDetail, UserDto, UserOrigin,
    UserQuery, UserStatus,
};

use crate::bindings::{BindingForm, BindingsTable, CreateBinding, DeleteBinding, RemoveBinding};
use crate::error::AppError;
use crate::groups::{AddGroupMember, RemoveGroupMember};
use crate::layout::MeResource;
use crate::projects::project_names;
use crate::roles::{list_permissions, list_roles};
use crate::ui::{
    can, can_in, confirm_href, confirm_open, me_of, short_time, success_count, take_flash,
    ConfirmPanel, Field, FormAlert, FormState, LoadError, Loading, OneTimeSecret, Pager, Submit,
};

/// Users per page of the list.
const PAGE_SIZE: u64 = 25;

/// Choices for the user list's filters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserFilterChoices {
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub projects: Vec<String>,
}

#[server(prefix = "/sfn", endpoint = "list_users")]
pub async fn list_users(query: UserQuery) -> Result<Page<UserDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::identity::users::list(&svc, &who, &query).await?)
}

/// The filters' choices. Groups are listed only for callers who may read them, so that the
/// page does not write a denial to the audit log on every load.
#[server(prefix = "/sfn", endpoint = "user_filter_options")]
pub async fn user_filter_options() -> Result<UserFilterChoices, AppError> {
    use warden_domain::permissions::Permission;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let org = svc.policy.effective(who.user_id).await?.org_permissions();
    let groups = if org.contains(&Permission::GroupRead) {
        warden_domain::admin::groups::refs(&svc, &who)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect()
    } else {
        vec![]
    };
    let roles = warden_domain::admin::roles::list(&svc, &who)
        .await?
        .items
        .into_iter()
        .map(|r| r.name)
        .collect();
    let projects = warden_domain::admin::projects::names(&svc, &who).await?;
    Ok(UserFilterChoices {
        groups,
        roles,
        projects,
    })
}

#[server(prefix = "/sfn", endpoint = "get_user")]
pub async fn get_user(id: String) -> Result<UserDetail, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::identity::users::get(&svc, &who, &id).await?)
}

/// Create a user. `mode` is `password` (an initial password they must change at first
/// sign-in) or `link` (a one-time set-password link, shown once).
#[server(prefix = "/sfn", endpoint = "create_user")]
pub async fn create_user(
    email: String,
    name: String,
    mode: String,
    #[server(default)] password: String,
) -> Result<CreatedUser, AppError> {
    use warden_domain::dto::CreateUserRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = CreateUserRequest {
        email,
        name,
        password: (mode != "link").then_some(password),
    };
    let r = warden_domain::identity::users::create(&svc, &who, req)
        .await
        .map_err(AppError::from);
    let mut then = None;
    if let Ok(c) = &r {
        if let Some(link) = &c.set_password_url {
            crate::ssr::flash_for_plain_form("set_password_url", link).await?;
        }
        // The hydrated page shows the link itself; everyone else goes to the user's page.
        if c.set_password_url.is_none() || crate::ssr::plain_form() {
            then = Some(format!("/users/{}?created=1", c.user.id));
        }
    }
    crate::ssr::finish(r, then)
}

/// Rename, activate or deactivate (`status`: `active` or `deactivated`).
#[server(prefix = "/sfn", endpoint = "update_user")]
pub async fn update_user(
    id: String,
    name: Option<String>,
    status: Option<String>,
) -> Result<UserDto, AppError> {
    use warden_domain::dto::UpdateUserRequest;
    let status = AppError::choice(
        "status",
        status.as_deref().unwrap_or_default().trim(),
        UserStatus::parse,
        "must be active or deactivated",
    )?;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r =
        warden_domain::identity::users::update(&svc, &who, &id, UpdateUserRequest { status, name })
            .await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "delete_user")]
pub async fn delete_user(id: String) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let email = warden_domain::identity::users::get(&svc, &who, &id)
        .await
        .map(|d| d.user.email)
        .unwrap_or_default();
    let r = warden_domain::identity::users::delete(&svc, &who, &id).await;
    let then = r
        .is_ok()
        .then(|| format!("/users?deleted={}", crate::ui::encode(&email)));
    crate::ssr::finish(r.map_err(AppError::from), then)
}

/// An administrator's password reset: answers the one-time set-password link.
#[server(prefix = "/sfn", endpoint = "reset_user_password")]
pub async fn reset_user_password(
    id: String,
    #[server(default)] revoke_api_keys: Option<String>,
    #[server(default)] revoke_kubeconfigs: Option<String>,
) -> Result<String, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let opts = warden_domain::identity::users::ResetOptions {
        revoke_api_keys: revoke_api_keys.is_some(),
        revoke_kubeconfigs: revoke_kubeconfigs.is_some(),
        ..Default::default()
    };
    let r = warden_domain::identity::users::reset_password(&svc, &who, &id, opts)
        .await
        .map_err(AppError::from);
    if let Ok(link) = &r {
        crate::ssr::flash_for_plain_form("set_password_url", link).await?;
    }
    crate::ssr::finish(r, None)
}

/// An administrator's reset of the user's second factor (authenticator and recovery codes).
#[server(prefix = "/sfn", endpoint = "reset_user_mfa")]
pub async fn reset_user_mfa(
    id: String,
    #[server(default)] revoke_api_keys: Option<String>,
    #[server(default)] revoke_kubeconfigs: Option<String>,
) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let opts = warden_domain::identity::users::ResetOptions {
        revoke_api_keys: revoke_api_keys.is_some(),
        revoke_kubeconfigs: revoke_kubeconfigs.is_some(),
        ..Default::default()
    };
    let r = warden_domain::identity::mfa::reset(&svc, &who, &id, opts).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

/// "Why": may the user do `permission` at `project` / `namespace`, and which binding allows it.
#[server(prefix = "/sfn", endpoint = "explain_access")]
pub async fn explain_access(
    user: String,
    permission: String,
    project: Option<String>,
    namespace: Option<String>,
    #[server(default)] cluster: Option<String>,
) -> Result<Explanation, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let project = project.filter(|p| !p.is_empty());
    let namespace = namespace.filter(|n| !n.is_empty());
    let cluster = cluster.filter(|c| !c.is_empty());
    Ok(warden_domain::identity::users::explain(
        &svc,
        &who,
        &user,
        &permission,
        project.as_deref(),
        namespace.as_deref(),
        cluster.as_deref(),
    )
    .await?)
}

fn query_of(q: &leptos_router::params::ParamsMap) -> UserQuery {
    let get = |k: &str| q.get(k).filter(|v| !v.is_empty());
    UserQuery {
        q: get("q"),
        group: get("group"),
        role: get("role"),
        project: get("project"),
        // A status the filter does not offer (a hand-edited address) filters nothing; the
        // filter then shows "any".
        status: get("status").and_then(|s| UserStatus::parse(&s)),
        limit: Some(PAGE_SIZE),
        cursor: get("cursor"),
    }
}

/// A `<select>` of the list filters; `current` is the value in the URL.
#[component]
fn FilterSelect(
    name: &'static str,
    label: &'static str,
    any: &'static str,
    options: Vec<(String, String)>,
    current: Option<String>,
) -> impl IntoView {
    let id = format!("filter-{name}");
    let for_id = id.clone();
    view! {
        <div class="filter">
            <label for=for_id>{label}</label>
            <select id=id name=name>
                <option value="" selected=current.is_none()>{any}</option>
                {options.into_iter().map(|(value, text)| {
                    let selected = current.as_deref() == Some(value.as_str());
                    view! { <option value=value selected=selected>{text}</option> }
                }).collect_view()}
            </select>
        </div>
    }
}

#[component]
pub fn UsersPage() -> impl IntoView {
    let me = expect_context::<MeResource>();
    let q = use_query_map();
    let users = Resource::new(move || q.with(query_of), list_users);
    let options = Resource::new(|| (), |_| user_filter_options());
    let deleted = move || q.with(|q| q.get("deleted"));
    view! {
        <div class="page-head">
            <h1>"Users"</h1>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    can(&me, "user.write").then(|| view! { <a class="btn btn-primary" href="/users/new" data-testid="new-user">"New user"</a> })
                })}
            </Transition>
        </div>
        {move || deleted().map(|d| view! { <p class="notice" role="status">{format!("User {d} was deleted.")}</p> })}
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                let page = match users.await {
                    Ok(p) => p,
                    Err(e) => return view! { <LoadError err=e/> }.into_any(),
                };
                let opts = options.await.unwrap_or_default();
                let current = q.get_untracked();
                let uq = query_of(&current);
                let filtered = uq.q.is_some() || uq.group.is_some() || uq.role.is_some() || uq.project.is_some() || uq.status.is_some();
                view! {
                    <Form method="GET" action="/users" attr:class="filters" attr:role="search" attr:aria-label="Filter users">
                        <div class="filter">
                            <label for="filter-q">"Search"</label>
                            <input id="filter-q" type="search" name="q" placeholder="Email or name" value=uq.q.clone()/>
                        </div>
                        <FilterSelect name="group" label="Group" any="Any group"
                            options=opts.groups.iter().map(|g| (g.clone(), g.clone())).collect() current=uq.group.clone()/>
                        <FilterSelect name="role" label="Role" any="Any role"
                            options=opts.roles.iter().map(|r| (r.clone(), r.clone())).collect() current=uq.role.clone()/>
                        <FilterSelect name="project" label="Project" any="Any project"
                            options=opts.projects.iter().map(|p| (p.clone(), p.clone())).collect() current=uq.project.clone()/>
                        <FilterSelect name="status" label="Status" any="Any status"
                            options=UserStatus::ALL.iter().map(|s| (s.as_str().to_owned(), s.label().to_owned())).collect() current=uq.status.map(|s| s.as_str().to_owned())/>
                        <div class="filter-actions">
                            <button type="submit" class="btn btn-primary">"Apply"</button>
                            {filtered.then(|| view! { <a class="btn" href="/users">"Clear"</a> })}
                        </div>
                    </Form>
                    {if page.items.is_empty() {
                        if filtered {
                            view! { <p class="empty">"No users match these filters. " <a href="/users">"Clear the filters"</a> " to see everyone."</p> }.into_any()
                        } else {
                            view! { <p class="empty">"No users yet. Create one with “New user”."</p> }.into_any()
                        }
                    } else {
                        view! {
                            <div class="table-scroll">
                            <table class="table" data-testid="users">
                                <thead><tr>
                                    <th scope="col">"Email"</th><th scope="col">"Name"</th><th scope="col">"Status"</th>
                                    <th scope="col">"Groups"</th><th scope="col">"Last sign-in"</th>
                                </tr></thead>
                                <tbody>
                                    {page.items.into_iter().map(|u| view! {
                                        <tr>
                                            <td><a href=format!("/users/{}", u.id)>{u.email.clone()}</a></td>
                                            <td>{u.name.clone()}</td>
                                            <td><StatusChip status=u.status/></td>
                                            <td>{u.groups.join(", ")}</td>
                                            <td>{u.last_login_at.as_deref().map(short_time).unwrap_or_else(|| "never".into())}</td>
                                        </tr>
                                    }).collect_view()}
                                </tbody>
                            </table>
                            </div>
                        }.into_any()
                    }}
                    <Pager base="/users" current=current.clone() next=page.next.clone()/>
                }.into_any()
            })}
        </Transition>
    }
}

#[component]
fn StatusChip(status: UserStatus) -> impl IntoView {
    let class = if status == UserStatus::Active {
        "chip allowed"
    } else {
        "chip denied"
    };
    view! { <span class=class>{status.as_str()}</span> }
}

#[component]
pub fn CreateUserPage() -> impl IntoView {
    let action = ServerAction::<CreateUser>::new();
    let state = FormState::new(action, "new-user");
    let mode = RwSignal::new("password".to_owned());
    let form = NodeRef::<leptos::html::Form>::new();
    crate::ui::reset_on_success(action, form);
    crate::ui::on_success(action, move |_| mode.set("password".into()));
    let created = move || {
        action.value().with(|v| match v {
            Some(Ok(c)) => c
                .set_password_url
                .clone()
                .map(|link| (c.user.clone(), link)),
            _ => None,
        })
    };
    view! {
        <p class="crumbs"><a href="/users">"Users"</a></p>
        <h1>"New user"</h1>
        {move || created().map(|(u, link)| view! {
            <OneTimeSecret title=format!("{} can now set a password", u.email) value=link
                note="Give them this one-time link; it is shown only now and expires in 24 hours." testid="set-password-link"/>
            <p><a href=format!("/users/{}", u.id)>{format!("Open {}'s page", u.email)}</a></p>
        })}
        <section class="card narrow">
            <ActionForm action node_ref=form attr:class="form" attr:data-testid="new-user">
                <Field state name="email" label="Email" kind="email" required=true autocomplete="off"/>
                <Field state name="name" label="Display name" required=true autocomplete="off"/>
                <fieldset class="choice">
                    <legend>"How will they sign in the first time?"</legend>
                    <label class="inline">
                        <input type="radio" name="mode" value="password" checked=true
                            on:change=move |_| mode.set("password".into())/>
                        "With an initial password I give them (they must change it at first sign-in)"
                    </label>
                    <label class="inline">
                        <input type="radio" name="mode" value="link"
                            on:change=move |_| mode.set("link".into())/>
                        "With a one-time link to set their own password"
                    </label>
                </fieldset>
                <Field state name="password" label="Initial password" kind="password" autocomplete="new-password"
                    hint="At least 12 characters; not the email. Leave empty when sending a link."
                    disabled=Signal::derive(move || mode.get() == "link")/>
                <Submit state label="Create user"/>
            </ActionForm>
            <FormAlert state fields=&["email", "name", "password"]/>
        </section>
    }
}

#[component]
pub fn UserPage() -> impl IntoView {
    let params = use_params_map();
    let q = use_query_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let update = ServerAction::<UpdateUser>::new();
    let reset = ServerAction::<ResetUserPassword>::new();
    let add = ServerAction::<CreateBinding>::new();
    let remove = ServerAction::<DeleteBinding>::new();
    let reset_mfa = ServerAction::<ResetUserMfa>::new();
    let join = ServerAction::<AddGroupMember>::new();
    let leave = ServerAction::<RemoveGroupMember>::new();
    let changed = (
        success_count(update),
        success_count(reset),
        success_count(add),
        success_count(remove),
        success_count(reset_mfa),
        success_count(join),
        success_count(leave),
    );
    let user = Resource::new(
        move || {
            (
                id(),
                changed.0.get(),
                changed.1.get(),
                changed.2.get(),
                changed.3.get(),
                changed.4.get(),
                changed.5.get() + changed.6.get(),
            )
        },
        |(id, ..)| get_user(id),
    );
    // A one-time link left by a plain form (creation or reset before hydration).
    let flash = Resource::new_blocking(|| (), |_| take_flash("set_password_url".into()));
    let reset_link = move || {
        reset
            .value()
            .with(|v| v.as_ref().and_then(|r| r.clone().ok()))
    };
    let created = move || q.with(|q| q.get("created").is_some());
    view! {
        <p class="crumbs"><a href="/users">"Users"</a></p>
        <Show when=created>
            <p class="notice" role="status">"The user was created."</p>
        </Show>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                flash.await.ok().flatten().map(|link| view! {
                    <OneTimeSecret title="One-time set-password link" value=link
                        note="Give it to the user; it is shown only now and expires in 24 hours." testid="set-password-link"/>
                })
            })}
        </Suspense>
        {move || reset_link().map(|link| view! {
            <OneTimeSecret title="Password reset: one-time link" value=link
                note="Their old password no longer works and their sessions have ended. Give them this link; it is shown only now and expires in 24 hours." testid="set-password-link"/>
        })}
        <Transition fallback=Loading>
            {move || Suspend::new(async move {
                match user.await {
                    Ok(d) => view! { <UserView detail=d update reset add remove reset_mfa join leave/> }.into_any(),
                    Err(e) => view! { <LoadError err=e/> }.into_any(),
                }
            })}
        </Transition>
        <crate::kubectl::KubectlSettingsCard scope="user" subject=Signal::derive(id)/>
    }
}

#[component]
fn UserView(
    detail: UserDetail,
    update: ServerAction<UpdateUser>,
    reset: ServerAction<ResetUserPassword>,
    add: ServerAction<CreateBinding>,
    remove: ServerAction<DeleteBinding>,
    reset_mfa: ServerAction<ResetUserMfa>,
    join: ServerAction<AddGroupMember>,
    leave: ServerAction<RemoveGroupMember>,
) -> impl IntoView {
    let me = expect_context::<MeResource>();
    let u = StoredValue::new(detail.user.clone());
    // The groups to offer, for those who may change membership only (others are not sent to
    // the gate for a list they would be refused).
    let groups = Resource::new(
        || (),
        move |_| async move {
            match me_of(me.await) {
                Some(m) if can(&m, "group.write") => crate::groups::group_refs().await,
                _ => Ok(vec![]),
            }
        },
    );
    let mfa_enabled = detail.mfa_enabled;
    let rename_state = FormState::new(update, "rename-user");
    let remove_state = FormState::new(remove, "remove-binding");
    let roles = Resource::new(|| (), |_| list_roles());
    let projects = Resource::new(|| (), |_| project_names());
    let bindings = StoredValue::new(detail.bindings.clone());
    let access = detail.access.clone();
    view! {
        <h1>
            <span data-testid="user-email">{detail.user.email.clone()}</span>
            " " <StatusChip status=detail.user.status/>
        </h1>
        <section class="card" aria-labelledby="profile-title">
            <h2 id="profile-title">"Profile"</h2>
            <dl class="facts">
                <dt>"Name"</dt><dd>{detail.user.name.clone()}</dd>
                <dt>"Status"</dt><dd>{detail.user.status.as_str()}</dd>
                <dt>"Sign-in"</dt><dd>{detail.user.origin.label()}</dd>
                <dt>"Created"</dt><dd>{short_time(&detail.user.created_at)}</dd>
                <dt>"Last sign-in"</dt><dd>{detail.user.last_login_at.as_deref().map(short_time).unwrap_or_else(|| "never".into())}</dd>
                <dt>"Password"</dt><dd>{match (detail.user.has_password, detail.user.must_change_password, detail.user.origin) {
                    (false, _, warden_domain::dto::UserOrigin::Sso) => "none (single sign-on)",
                    (false, _, _) => "none yet: set through a one-time link",
                    (true, true, _) => "must be changed at next sign-in",
                    (true, false, _) => "set by the user",
                }}</dd>
                <dt>"Groups"</dt>
                <dd>
                    <ul class="chips" data-testid="user-groups">
                        {detail.user.groups.iter().map(|g| view! { <li class="chip">{g.clone()}</li> }).collect_view()}
                    </ul>
                </dd>
            </dl>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    can(&me, "group.write").then(|| view! {
                        <UserGroups user=u.get_value() join leave groups/>
                    })
                })}
            </Transition>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    can(&me, "user.write").then(|| view! {
                        <details>
                            <summary>"Rename"</summary>
                            <ActionForm action=update attr:class="form">
                                <input type="hidden" name="id" value=u.with_value(|u| u.id.clone())/>
                                <Field state=rename_state name="name" label="Display name" value=u.with_value(|u| u.name.clone()) required=true/>
                                <Submit state=rename_state label="Save"/>
                            </ActionForm>
                            <FormAlert state=rename_state fields=&["name"] ok="Saved."/>
                        </details>
                    })
                })}
            </Transition>
        </section>

        <section class="card" aria-labelledby="user-bindings-title">
            <h2 id="user-bindings-title">"Roles"</h2>
            <p class="muted">"Roles bound to this user directly and through their groups. Roles held through a group are changed on the group's page."</p>
            <FormAlert state=remove_state ok="Binding removed."/>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    let list = bindings.get_value();
                    Some(if list.is_empty() {
                        view! { <p class="empty">"No roles yet. Add the user to a group that holds roles, or bind a role below."</p> }.into_any()
                    } else {
                        view! {
                            <RemoveBinding bindings=list.iter().filter(|b| b.subject.kind == SubjectKind::User).cloned().collect() action=remove/>
                            <BindingsTable bindings=list me
                                can_remove=|b, me| b.subject.kind == SubjectKind::User && match &b.project {
                                    Some(p) => can_in(me, "project.write", p),
                                    None => can(me, "user.write"),
                                }
                                testid="user-bindings"/>
                        }.into_any()
                    })
                })}
            </Transition>
            <Transition fallback=|| ()>
                {move || Suspend::new(async move {
                    let me = me_of(me.await)?;
                    let roles = roles.await.ok()?;
                    let writable: Vec<String> = projects.await.ok()?.into_iter().filter(|p| can_in(&me, "project.write", p)).collect();
                    if writable.is_empty() && !can(&me, "user.write") {
                        return None;
                    }
                    let subject = SubjectRef { kind: SubjectKind::User, name: u.with_value(|u| u.email.clone()) };
                    Some(view! {
                        <h3>"Bind a role to this user"</h3>
                        <BindingForm action=add subject projects=writable roles prefix="add-user-binding"/>
                    })
                })}
            </Transition>
        </section>

        <section class="card" aria-labelledby="access-title">
            <h2 id="access-title">"Effective access"</h2>
            {if access.is_empty() {
                view! { <p class="empty">"This user can do nothing yet (or is deactivated)."</p> }.into_any()
            } else {
                view! {
                    <div class="table-scroll">
                    <table class="table" data-testid="user-access">
                        <thead><tr><th scope="col">"Role"</th><th scope="col">"Where"</th><th scope="col">"Namespaces"</th><th scope="col">"Via"</th><th scope="col">"Permissions"</th></tr></thead>
                        <tbody>
                            {access.into_iter().map(|g| view! {
                                <tr>
                                    <td>{g.role.clone()}</td>
                                    <td>{g.project.clone().map(|p| format!("project {p}")).unwrap_or_else(|| "organization".into())}</td>
                                    <td>{g.namespaces.join(", ")}</td>
                                    <td>{g.via.clone()}</td>
                                    <td><details><summary>{format!("{} permissions", g.permissions.len())}</summary>
                                        <ul class="plain">{g.permissions.iter().map(|p| view! { <li><code>{p.clone()}</code></li> }).collect_view()}</ul>
                                    </details></td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                    </div>
                }.into_any()
            }}
            <WhyChecker user=detail.user.id.clone()/>
        </section>

        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let me = me_of(me.await)?;
                let user = u.get_value();
                (can(&me, "user.write")).then(|| view! {
                    <AccountActions user is_self=me.user.id == u.with_value(|u| u.id.clone()) update reset reset_mfa mfa_enabled bindings=bindings.get_value().iter().filter(|b| b.subject.kind == SubjectKind::User).count()/>
                })
            })}
        </Transition>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                let me = me_of(me.await)?;
                let email = u.with_value(|u| u.email.clone());
                let writable = can(&me, "kubeconfig.write");
                writable.then(|| view! { <crate::kubectl::RevokeUserKubeconfigs email=email/> })
            })}
        </Transition>
    }
}

/// Membership from the user's side: remove them from a group, or add them to one. The group's
/// roles come with it, so the domain refuses an addition that would hand out more than the
/// administrator holds (the same rule as on the group's page).
#[component]
fn UserGroups(
    user: UserDto,
    join: ServerAction<AddGroupMember>,
    leave: ServerAction<RemoveGroupMember>,
    /// Created by the page, not here: a resource made inside a suspended branch would not
    /// hydrate.
    groups: Resource<Result<Vec<warden_domain::dto::GroupRef>, AppError>>,
) -> impl IntoView {
    let join_state = FormState::new(join, "user-join-group");
    let leave_state = FormState::new(leave, "user-leave-group");
    let user = StoredValue::new(user);
    view! {
        <div class="user-groups" data-testid="user-groups-manage">
            <h3>"Group membership"</h3>
            <FormAlert state=leave_state ok="Removed from the group."/>
            <Transition fallback=Loading>
                {move || Suspend::new(async move {
                    let groups = groups.await.unwrap_or_default();
                    let (email, member_of) = user.with_value(|u| (u.email.clone(), u.groups.clone()));
                    let (mine, others): (Vec<_>, Vec<_>) =
                        groups.into_iter().partition(|g| member_of.contains(&g.name));
                    let leavable: Vec<_> = mine.into_iter().filter(|g| !g.builtin).collect();
                    view! {
                        {if leavable.is_empty() {
                            view! { <p class="muted">"Only in the built-in group every user belongs to."</p> }.into_any()
                        } else {
                            view! {
                                <ul class="plain member-of">
                                    {leavable.into_iter().map(|g| {
                                        let email = email.clone();
                                        view! {
                                            <li>
                                                <ActionForm action=leave attr:class="inline-form">
                                                    <input type="hidden" name="group" value=g.name.clone()/>
                                                    <input type="hidden" name="user" value=email/>
                                                    <a href=format!("/groups/{}", g.id)>{g.name.clone()}</a>
                                                    " "
                                                    <button type="submit" class="btn btn-small btn-danger-outline"
                                                        data-testid=format!("leave-{}", g.name)>
                                                        {format!("Remove from {}", g.name)}
                                                    </button>
                                                </ActionForm>
                                            </li>
                                        }
                                    }).collect_view()}
                                </ul>
                            }.into_any()
                        }}
                        {(!others.is_empty()).then(|| view! {
                            <ActionForm action=join attr:class="form inline-form" attr:data-testid="user-join-group">
                                <input type="hidden" name="user" value=email.clone()/>
                                <label for="join-group">"Add to group"</label>
                                <select id="join-group" name="group" required>
                                    <option value="">"Choose a group…"</option>
                                    {others.into_iter().map(|g| view! { <option value=g.name.clone()>{g.name.clone()}</option> }).collect_view()}
                                </select>
                                <Submit state=join_state label="Add"/>
                            </ActionForm>
                        })}
                    }
                })}
            </Transition>
            <FormAlert state=join_state fields=&["group", "user"] ok="Added to the group."/>
        </div>
    }
}

/// "Why": may this user do something somewhere, and which binding allows it. A GET form, so
/// the answer has a URL and works without JavaScript.
#[component]
fn WhyChecker(user: String) -> impl IntoView {
    let q = use_query_map();
    let perms = Resource::new(|| (), |_| list_permissions());
    let projects = Resource::new(|| (), |_| project_names());
    let clusters = Resource::new(|| (), |_| crate::clusters::cluster_names());
    let ask = move || {
        q.with(|q| {
            let perm = q.get("perm").filter(|p| !p.is_empty())?;
            Some((perm, q.get("project"), q.get("ns"), q.get("cluster")))
        })
    };
    let page = format!("/users/{user}");
    let u = user.clone();
    let answer = Resource::new(ask, move |a| {
        let u = u.clone();
        async move {
            match a {
                Some((perm, project, ns, cluster)) => explain_access(u, perm, project, ns, cluster)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        }
    });
    view! {
        <h3 id="why-title">"Why can (or can't) they…?"</h3>
        <Transition fallback=|| ()>
            {move || { let page = page.clone(); Suspend::new(async move {
                let perms = perms.await.unwrap_or_default();
                let projects = projects.await.unwrap_or_default();
                let clusters = clusters.await.unwrap_or_default();
                let (perm, project, ns, cluster) = q.with_untracked(|q| (q.get("perm"), q.get("project"), q.get("ns"), q.get("cluster")));
                view! {
                    <Form method="GET" action=page attr:class="filters" attr:aria-labelledby="why-title" attr:data-testid="why">
                        <div class="filter">
                            <label for="why-perm">"Permission"</label>
                            <select id="why-perm" name="perm" required>
                                <option value="">"Choose…"</option>
                                {perms.into_iter().map(|p| {
                                    let selected = perm.as_deref() == Some(p.name.as_str());
                                    view! { <option value=p.name.clone() selected=selected>{format!("{} — {}", p.name, p.description)}</option> }
                                }).collect_view()}
                            </select>
                        </div>
                        <div class="filter">
                            <label for="why-project">"Project"</label>
                            <select id="why-project" name="project">
                                <option value="" selected=project.as_deref().unwrap_or_default().is_empty()>"The organization"</option>
                                {projects.into_iter().map(|p| {
                                    let selected = project.as_deref() == Some(p.as_str());
                                    view! { <option value=p.clone() selected=selected>{p.clone()}</option> }
                                }).collect_view()}
                            </select>
                        </div>
                        <div class="filter">
                            <label for="why-ns">"Namespace (optional)"</label>
                            <input id="why-ns" name="ns" type="text" value=ns autocomplete="off"/>
                        </div>
                        <div class="filter">
                            <label for="why-cluster">"On cluster (optional)"</label>
                            <select id="why-cluster" name="cluster">
                                <option value="" selected=cluster.as_deref().unwrap_or_default().is_empty()>"Any (Warden's side only)"</option>
                                {clusters.into_iter().map(|c| {
                                    let selected = cluster.as_deref() == Some(c.as_str());
                                    view! { <option value=c.clone() selected=selected>{c.clone()}</option> }
                                }).collect_view()}
                            </select>
                        </div>
                        <div class="filter-actions"><button type="submit" class="btn">"Check"</button></div>
                    </Form>
                }
            })}}
        </Transition>
        <Transition fallback=|| ()>
            {move || Suspend::new(async move {
                match answer.await {
                    Ok(Some(e)) => view! {
                        <p class="why" role="status" data-testid="why-answer">
                            {if e.allowed {
                                view! { <span class="chip allowed">"Allowed"</span> }.into_any()
                            } else {
                                view! { <span class="chip denied">"Denied"</span> }.into_any()
                            }}
                            " " {e.because}
                            {e.cluster.map(|c| view! {
                                <span class="why-cluster" data-testid="why-cluster" data-ready=c.ready.to_string()>
                                    {if c.ready {
                                        view! { <span class="chip allowed">"Cluster ready"</span> }.into_any()
                                    } else {
                                        view! { <span class="chip warn">"Not yet on the cluster"</span> }.into_any()
                                    }}
                                    " " {c.says}
                                </span>
                            })}
                        </p>
                    }.into_any(),
                    Ok(None) => ().into_any(),
                    Err(e) => view! { <p class="form-error" role="alert">{crate::ui::FormErrors::from_app(&e).fields.into_values().next().unwrap_or_else(|| e.to_string())}</p> }.into_any(),
                }
            })}
        </Transition>
    }
}

/// Activate or deactivate, reset the password, delete: each destructive one behind a
/// confirmation step that says what it affects.
#[component]
fn AccountActions(
    user: UserDto,
    is_self: bool,
    update: ServerAction<UpdateUser>,
    reset: ServerAction<ResetUserPassword>,
    reset_mfa: ServerAction<ResetUserMfa>,
    /// Whether the user has an authenticator.
    mfa_enabled: bool,
    /// How many roles are bound to the user directly.
    bindings: usize,
) -> impl IntoView {
    let delete = ServerAction::<DeleteUser>::new();
    let status_state = FormState::new(update, "user-status");
    let reset_state = FormState::new(reset, "reset-password");
    let delete_state = FormState::new(delete, "delete-user");
    let reset_mfa_state = FormState::new(reset_mfa, "reset-mfa");
    crate::ui::close_confirm_on_success(update);
    crate::ui::close_confirm_on_success(reset);
    crate::ui::close_confirm_on_success(reset_mfa);
    let resetting_mfa = confirm_open("reset-mfa", None);
    let reset_mfa_href = confirm_href("reset-mfa", None);
    let deactivating = confirm_open("deactivate", None);
    let resetting = confirm_open("reset-password", None);
    let deleting = confirm_open("delete-user", None);
    let u = StoredValue::new(user);
    let active = u.with_value(|u| u.status == UserStatus::Active);
    let local = u.with_value(|u| u.origin == UserOrigin::Local);
    let (deactivate_href, reset_href, delete_href) = (
        confirm_href("deactivate", None),
        confirm_href("reset-password", None),
        confirm_href("delete-user", None),
    );
    view! {
        <section class="card danger-zone" aria-labelledby="account-title">
            <h2 id="account-title">"Account"</h2>
            <FormAlert state=status_state fields=&["name"]/>
            <FormAlert state=reset_state/>
            <FormAlert state=delete_state/>
            <FormAlert state=reset_mfa_state ok="Second factor reset: they sign in without one until they enrol again."/>
            <Show when=move || {
                status_state.asks_step_up()
                    || reset_state.asks_step_up()
                    || delete_state.asks_step_up()
                    || reset_mfa_state.asks_step_up()
            }>
                <crate::mfa::StepUpForm/>
                <p class="muted">"Then do it again."</p>
            </Show>
            <div class="button-row">
                {if active {
                    (!is_self).then(|| view! { <a class="btn btn-danger-outline" href=deactivate_href data-testid="deactivate">"Deactivate…"</a> }).into_any()
                } else {
                    view! {
                        <ActionForm action=update>
                            <input type="hidden" name="id" value=u.with_value(|u| u.id.clone())/>
                            <input type="hidden" name="status" value="active"/>
                            <button type="submit" class="btn" data-testid="activate">"Activate"</button>
                        </ActionForm>
                    }.into_any()
                }}
                {(local && !is_self).then(|| view! { <a class="btn" href=reset_href data-testid="reset-password">"Reset password…"</a> })}
                {(mfa_enabled && !is_self).then(|| view! { <a class="btn" href=reset_mfa_href data-testid="reset-mfa">"Reset second factor…"</a> })}
                {is_self.then(|| view! { <p class="muted">"This is your own account: change your password from the menu at the top right."</p> })}
                {(!is_self).then(|| view! { <a class="btn btn-danger-outline" href=delete_href data-testid="delete-user">"Delete user…"</a> })}
            </div>
            <Show when=move || deactivating.get()>
                <ConfirmPanel title=format!("Deactivate {}?", u.with_value(|u| u.email.clone()))>
                    <p>"Their sessions end now and they cannot sign in; every right they hold stops at once, including through their groups. Their API keys and kubeconfigs are revoked for good: activated again later, they sign in and make new ones."</p>
                    <ActionForm action=update>
                        <input type="hidden" name="id" value=u.with_value(|u| u.id.clone())/>
                        <input type="hidden" name="status" value="deactivated"/>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-deactivate">"Deactivate"</button>
                    </ActionForm>
                </ConfirmPanel>
            </Show>
            <Show when=move || resetting.get()>
                <ConfirmPanel title=format!("Reset {}'s password?", u.with_value(|u| u.email.clone()))>
                    <p>"Their current password stops working and their sessions end. You get a one-time link, valid 24 hours, to give them so they can choose a new one."</p>
                    <ActionForm action=reset>
                        <input type="hidden" name="id" value=u.with_value(|u| u.id.clone())/>
                        <p class="muted">"If the account may be in someone else's hands, also end what outlives the password:"</p>
                        <label class="check"><input type="checkbox" name="revoke_api_keys" value="on" checked data-testid="reset-revoke-api-keys"/>" Revoke their API keys"</label>
                        <label class="check"><input type="checkbox" name="revoke_kubeconfigs" value="on" checked data-testid="reset-revoke-kubeconfigs"/>" Revoke their kubeconfigs (kubectl stops working until they download a new one)"</label>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-reset-password">"Reset password"</button>
                    </ActionForm>
                </ConfirmPanel>
            </Show>
            <Show when=move || resetting_mfa.get()>
                <ConfirmPanel title=format!("Reset {}'s second factor?", u.with_value(|u| u.email.clone()))>
                    <p>"Their authenticator app and recovery codes stop working and their sessions end. They sign in without a second factor until they enrol again (at once, if the organization's policy requires one)."</p>
                    <ActionForm action=reset_mfa>
                        <input type="hidden" name="id" value=u.with_value(|u| u.id.clone())/>
                        <p class="muted">"If the authenticator may be in someone else's hands (not merely lost), also end the credentials it could have made:"</p>
                        <label class="check"><input type="checkbox" name="revoke_api_keys" value="on" data-testid="reset-mfa-revoke-api-keys"/>" Revoke their API keys"</label>
                        <label class="check"><input type="checkbox" name="revoke_kubeconfigs" value="on" data-testid="reset-mfa-revoke-kubeconfigs"/>" Revoke their kubeconfigs (kubectl stops working until they download a new one)"</label>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-reset-mfa">"Reset second factor"</button>
                    </ActionForm>
                </ConfirmPanel>
            </Show>
            <Show when=move || deleting.get()>
                <ConfirmPanel title=format!("Delete {}?", u.with_value(|u| u.email.clone()))>
                    <p>{u.with_value(|u| format!(
                        "This deletes the account {}: its {} directly bound role(s), its membership of {}, and its API keys. Its sessions end. Audit records about it stay.",
                        u.email,
                        bindings,
                        if u.groups.is_empty() { "no group".to_owned() } else { u.groups.join(", ") }
                    ))}</p>
                    <ActionForm action=delete>
                        <input type="hidden" name="id" value=u.with_value(|u| u.id.clone())/>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-delete-user">"Delete user"</button>
                    </ActionForm>
                </ConfirmPanel>
            </Show>
        </section>
    }
}
