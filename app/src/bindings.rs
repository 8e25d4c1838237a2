//! Role bindings: who holds which role where. The project, group and user pages share the
//! table, the form and the removal step defined here.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use warden_domain::dto::{
    BindingDto, BindingQuery, ClusterNamespaces, RoleDto, Scope, SubjectKind, SubjectRef,
};

use crate::error::AppError;
use crate::ui::{confirm_href, confirm_target, ConfirmPanel, FieldError, FormAlert, FormState};

/// Names a binding form can suggest: the users and groups the caller may list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidates {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

/// Namespaces typed as `apple, banana` or `apple banana`.
pub fn split_namespaces(raw: &str) -> Vec<String> {
    raw.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A binding in words, e.g. "group Developers holds NAMESPACE_ADMIN on namespaces apple of
/// project dev".
pub fn describe(b: &BindingDto) -> String {
    let at = match (&b.project, b.namespaces.is_empty()) {
        (None, _) => "the organization".to_owned(),
        (Some(p), true) => format!("project {p}"),
        (Some(p), false) => format!("namespaces {} of project {p}", b.namespaces.join(", ")),
    };
    format!(
        "{} {} holds {} on {at}",
        b.subject.kind, b.subject.name, b.role
    )
}

/// The console's expiry presets, in seconds (`custom`: the hours field).
pub const EXPIRY_PRESETS: [(&str, &str); 5] = [
    ("3600", "1 hour"),
    ("28800", "8 hours"),
    ("86400", "1 day"),
    ("604800", "7 days"),
    ("custom", "Custom (hours)…"),
];

/// The form's expiry choice as seconds from now (`None`: no expiry).
pub fn expiry_secs(choice: &str, custom_hours: &str) -> Result<Option<i64>, AppError> {
    match choice.trim() {
        "" | "never" => Ok(None),
        "custom" => match custom_hours.trim().parse::<f64>() {
            Ok(h) if h > 0.0 && h <= 24.0 * 366.0 => Ok(Some((h * 3600.0).round() as i64)),
            _ => Err(AppError::Invalid {
                fields: [(
                    "expires_at".to_owned(),
                    "give a number of hours (at most a year)".to_owned(),
                )]
                .into_iter()
                .collect(),
            }),
        },
        s => s.parse::<i64>().map(Some).map_err(|_| AppError::Invalid {
            fields: [("expires_at".to_owned(), "choose an expiry".to_owned())]
                .into_iter()
                .collect(),
        }),
    }
}

/// Time left until an RFC 3339 time, now (the browser's clock once hydrated).
pub fn time_left_rfc3339(at: &str) -> String {
    match crate::ui::parse_rfc3339_ms(at) {
        Some(ms) => warden_domain::dto::time_left(ms, crate::ui::now_ms()),
        None => String::new(),
    }
}

/// All bindings matching the query that the caller may see.
#[server(prefix = "/sfn", endpoint = "list_bindings")]
pub async fn list_bindings(query: BindingQuery) -> Result<Vec<BindingDto>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let mut q = query;
    q.limit = Some(500);
    let mut out = Vec::new();
    loop {
        let page = warden_domain::admin::bindings::list(&svc, &who, &q).await?;
        out.extend(page.items);
        match page.next {
            Some(next) if out.len() < 10_000 => q.cursor = Some(next),
            _ => break,
        }
    }
    Ok(out)
}

/// Suggestions for a binding form's subject. Only lists what the caller may read, so that a
/// project administrator's page does not fill the audit log with denials; the domain checks
/// every listing anyway.
#[server(prefix = "/sfn", endpoint = "binding_candidates")]
pub async fn binding_candidates() -> Result<Candidates, AppError> {
    use warden_domain::dto::UserQuery;
    use warden_domain::permissions::Permission;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let org = svc.policy.effective(who.user_id).await?.org_permissions();
    let users = if org.contains(&Permission::UserRead) {
        let q = UserQuery {
            status: Some(warden_domain::dto::UserStatus::Active),
            limit: Some(500),
            ..Default::default()
        };
        warden_domain::identity::users::list(&svc, &who, &q)
            .await?
            .items
            .into_iter()
            .map(|u| u.email)
            .collect()
    } else {
        vec![]
    };
    let groups = if org.contains(&Permission::GroupRead) {
        warden_domain::admin::groups::list(&svc, &who)
            .await?
            .items
            .into_iter()
            .map(|g| g.name)
            .collect()
    } else {
        vec![]
    };
    Ok(Candidates { users, groups })
}

#[allow(clippy::too_many_arguments)] // one argument per form field
#[server(prefix = "/sfn", endpoint = "create_binding")]
pub async fn create_binding(
    subject_kind: String,
    subject_name: String,
    role: String,
    #[server(default)] project: String,
    #[server(default)] namespaces: String,
    #[server(default)] confirm_system_namespaces: Option<String>,
    #[server(default)] expires: String,
    #[server(default)] expires_custom_hours: String,
) -> Result<BindingDto, AppError> {
    use warden_domain::dto::CreateBindingRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let Some(kind) = SubjectKind::parse(&subject_kind) else {
        return Err(AppError::Invalid {
            fields: [(
                "subject.kind".to_owned(),
                "must be user or group".to_owned(),
            )]
            .into(),
        });
    };
    let req = CreateBindingRequest {
        subject: SubjectRef {
            kind,
            name: subject_name.trim().to_owned(),
        },
        role,
        project: Some(project).filter(|p| !p.trim().is_empty()),
        namespaces: split_namespaces(&namespaces),
        confirm_system_namespaces: confirm_system_namespaces.is_some(),
        expires_at: None,
        expires_in_secs: expiry_secs(&expires, &expires_custom_hours)?,
    };
    let r = warden_domain::admin::bindings::create(&svc, &who, req).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

/// The namespaces the clusters of a project report: the binding form's suggestions and its
/// "not on cluster X yet" hint.
#[server(prefix = "/sfn", endpoint = "project_namespaces")]
pub async fn project_namespaces(project: String) -> Result<Vec<ClusterNamespaces>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::bindings::namespaces_of_project(&svc, &who, &project).await?)
}

#[server(prefix = "/sfn", endpoint = "delete_binding")]
pub async fn delete_binding(id: String) -> Result<(), AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::bindings::delete(&svc, &who, &id).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

/// Bindings as a table, each with a link to the step that removes it.
#[component]
pub fn BindingsTable(
    bindings: Vec<BindingDto>,
    #[prop(optional)] hide_subject: bool,
    #[prop(optional)] hide_project: bool,
    /// Whether the viewer may remove this binding (the server decides in the end).
    can_remove: fn(&BindingDto, &warden_domain::dto::Me) -> bool,
    me: warden_domain::dto::Me,
    testid: &'static str,
) -> impl IntoView {
    view! {
        <div class="table-scroll">
        <table class="table" data-testid=testid>
            <thead>
                <tr>
                    {(!hide_subject).then(|| view! { <th scope="col">"Who"</th> })}
                    <th scope="col">"Role"</th>
                    {(!hide_project).then(|| view! { <th scope="col">"Where"</th> })}
                    <th scope="col">"Namespaces"</th>
                    <th scope="col">"Expires"</th>
                    <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                </tr>
            </thead>
            <tbody>
                {bindings.into_iter().map(|b| {
                    let removable = can_remove(&b, &me);
                    let label = format!("Remove: {}", describe(&b));
                    let href = confirm_href("remove-binding", Some(&b.id));
                    let subject_link = view! { <span class="tag">{b.subject.kind.as_str()}</span> " " {b.subject.name.clone()} };
                    view! {
                        <tr>
                            {(!hide_subject).then(|| view! { <td>{subject_link}</td> })}
                            <td><a href=format!("/roles/{}", b.role)>{b.role.clone()}</a></td>
                            {(!hide_project).then(|| view! {
                                <td>{match &b.project {
                                    Some(p) => view! { <a href=format!("/projects/{p}")>{p.clone()}</a> }.into_any(),
                                    None => view! { <span>"Organization"</span> }.into_any(),
                                }}</td>
                            })}
                            <td>
                                {if b.namespaces.is_empty() {
                                    view! { <span class="muted">"all"</span> }.into_any()
                                } else {
                                    let system = b.namespaces.iter().any(|n| warden_domain::dto::SYSTEM_NAMESPACES.contains(&n.as_str()));
                                    view! {
                                        <crate::ui::Chips items=b.namespaces.clone() label="Namespaces"/>
                                        {system.then(|| view! { <span class="tag tag-warn" title="A grant in the cluster's own namespaces reaches its components and their credentials" data-testid="system-namespace-flag">"system namespace"</span> })}
                                    }.into_any()
                                }}
                            </td>
                            <td data-testid="binding-expiry">
                                {match &b.expires_at {
                                    Some(at) => view! { <span class="tag tag-warn" title=at.clone()>{time_left_rfc3339(at)}</span> }.into_any(),
                                    None => view! { <span class="muted">"never"</span> }.into_any(),
                                }}
                            </td>
                            <td class="actions">
                                {removable.then(|| view! { <a href=href aria-label=label>"Remove…"</a> })}
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        </div>
    }
}

/// The confirmation step that removes one of `bindings`.
#[component]
pub fn RemoveBinding(
    bindings: Vec<BindingDto>,
    action: ServerAction<DeleteBinding>,
) -> impl IntoView {
    let target = confirm_target("remove-binding");
    crate::ui::close_confirm_on_success(action);
    view! {
        {move || {
            let b = target.get().and_then(|t| bindings.iter().find(|b| b.id == t).cloned())?;
            Some(view! {
                <ConfirmPanel title="Remove this binding?">
                    <p>{describe(&b)} "."</p>
                    <p>
                        {format!(
                            "{} {} loses what {} grants there on the next request, unless another binding grants it.",
                            if b.subject.kind == SubjectKind::Group { "Every member of group" } else { "User" },
                            b.subject.name,
                            b.role
                        )}
                    </p>
                    <ActionForm action>
                        <input type="hidden" name="id" value=b.id.clone()/>
                        <button type="submit" class="btn btn-danger" data-testid="confirm-remove-binding">"Remove binding"</button>
                    </ActionForm>
                </ConfirmPanel>
            })
        }}
    }
}

/// The form that binds a subject to a role. The subject and the project are either fixed by
/// the page (hidden fields) or chosen in the form.
#[component]
pub fn BindingForm(
    action: ServerAction<CreateBinding>,
    /// The subject, on a user's or a group's page.
    #[prop(optional)]
    subject: Option<SubjectRef>,
    /// The project, on a project's page.
    #[prop(optional)]
    project: Option<String>,
    /// Projects to choose from when the project is not fixed.
    #[prop(optional)]
    projects: Vec<String>,
    roles: Vec<RoleDto>,
    #[prop(optional)] candidates: Candidates,
    prefix: &'static str,
) -> impl IntoView {
    let state = FormState::new(action, prefix);
    let form = NodeRef::<leptos::html::Form>::new();
    crate::ui::reset_on_success(action, form);
    // The namespaces the project's clusters report: suggested while typing, and a hint names
    // the clusters that lack a typed one (a warning: the grant applies once it exists).
    let chosen_project = RwSignal::new(project.clone().unwrap_or_default());
    // Fetched in the browser only (an effect), so server and client render the same empty list
    // first and hydration never depends on a request made inside the form.
    let reported = RwSignal::new(Vec::<ClusterNamespaces>::new());
    Effect::new(move |_| {
        let p = chosen_project.get();
        if p.is_empty() {
            reported.set(vec![]);
            return;
        }
        leptos::task::spawn_local(async move {
            if let Ok(v) = project_namespaces(p).await {
                reported.set(v);
            }
        });
    });
    let ns_list = format!("{prefix}-namespaces");
    // What the last binding made said about namespaces the clusters lack.
    let made_warnings = move || {
        action.value().with(|v| match v {
            Some(Ok(b)) => b.warnings.clone(),
            _ => vec![],
        })
    };
    let role = RwSignal::new(String::new());
    let kind = RwSignal::new("group".to_owned());
    let ns_text = RwSignal::new(String::new());
    crate::ui::on_success(action, move |_| {
        role.set(String::new());
        ns_text.set(String::new());
    });
    let scope_of = {
        let roles = roles.clone();
        move |name: &str| roles.iter().find(|r| r.name == name).map(|r| r.scope)
    };
    // After hydration the namespaces field is enabled only for namespace roles.
    let ns_disabled = Signal::derive(move || {
        let r = role.get();
        !r.is_empty() && scope_of(&r) != Some(Scope::Namespace)
    });
    let fixed_project = project.is_some();
    let shown_roles: Vec<RoleDto> = roles
        .into_iter()
        .filter(|r| !fixed_project || r.scope != Scope::Organization)
        .collect();
    let groups_of = |scope: Scope, shown: &[RoleDto]| -> Vec<RoleDto> {
        shown.iter().filter(|r| r.scope == scope).cloned().collect()
    };
    let optgroups: Vec<(&'static str, Vec<RoleDto>)> = [
        (
            "Organization roles",
            groups_of(Scope::Organization, &shown_roles),
        ),
        ("Project roles", groups_of(Scope::Project, &shown_roles)),
        ("Namespace roles", groups_of(Scope::Namespace, &shown_roles)),
    ]
    .into_iter()
    .filter(|(_, rs)| !rs.is_empty())
    .collect();
    let users_list = format!("{prefix}-users");
    let groups_list = format!("{prefix}-groups");
    let (ul, gl) = (users_list.clone(), groups_list.clone());
    let subject_list = move || {
        if kind.get() == "user" {
            ul.clone()
        } else {
            gl.clone()
        }
    };
    let chips = move || split_namespaces(&ns_text.get());

    view! {
        <ActionForm action node_ref=form attr:class="form form-inline" attr:data-testid=prefix>
            {match subject {
                Some(s) => view! {
                    <input type="hidden" name="subject_kind" value=s.kind.as_str()/>
                    <input type="hidden" name="subject_name" value=s.name/>
                }.into_any(),
                None => view! {
                    <div class="field">
                        <label for=state.id("subject_kind")>"Member type"</label>
                        <select id=state.id("subject_kind") name="subject_kind"
                            on:change=move |ev| kind.set(event_target_value(&ev))>
                            <option value="group" selected=true>"Group"</option>
                            <option value="user">"User"</option>
                        </select>
                        <FieldError state field="subject.kind"/>
                    </div>
                    <div class="field">
                        <label for=state.id("subject_name")>"Group name or user email"</label>
                        <input id=state.id("subject_name") name="subject_name" type="text" required
                            list=subject_list autocomplete="off"
                            aria-invalid=move || state.field("subject.name").is_some().to_string()
                            aria-describedby=state.err_id("subject.name")/>
                        <FieldError state field="subject.name"/>
                        <datalist id=users_list>
                            {candidates.users.iter().map(|u| view! { <option value=u.clone()/> }).collect_view()}
                        </datalist>
                        <datalist id=groups_list>
                            {candidates.groups.iter().map(|g| view! { <option value=g.clone()/> }).collect_view()}
                        </datalist>
                    </div>
                }.into_any(),
            }}
            {match project {
                Some(p) => view! { <input type="hidden" name="project" value=p/> }.into_any(),
                None => view! {
                    <div class="field">
                        <label for=state.id("project")>"Where"</label>
                        <select id=state.id("project") name="project"
                            on:change=move |ev| chosen_project.set(event_target_value(&ev))
                            aria-describedby=state.err_id("project")>
                            <option value="">"The whole organization (organization roles)"</option>
                            {projects.into_iter().map(|p| view! { <option value=p.clone()>{format!("Project {p}")}</option> }).collect_view()}
                        </select>
                        <FieldError state field="project"/>
                    </div>
                }.into_any(),
            }}
            <div class="field">
                <label for=state.id("role")>"Role"</label>
                <select id=state.id("role") name="role" required
                    on:change=move |ev| role.set(event_target_value(&ev))
                    prop:value=move || role.get()
                    aria-invalid=move || state.field("role").is_some().to_string()
                    aria-describedby=state.err_id("role")>
                    <option value="">"Choose a role…"</option>
                    {optgroups.into_iter().map(|(label, rs)| view! {
                        <optgroup label=label>
                            {rs.into_iter().map(|r| view! { <option value=r.name.clone()>{r.name.clone()}</option> }).collect_view()}
                        </optgroup>
                    }).collect_view()}
                </select>
                <FieldError state field="role"/>
            </div>
            <div class="field">
                <label for=state.id("namespaces")>"Namespaces"</label>
                <input id=state.id("namespaces") name="namespaces" type="text" autocomplete="off"
                    list=ns_list.clone()
                    placeholder="apple, banana"
                    disabled=move || ns_disabled.get()
                    on:input=move |ev| ns_text.set(event_target_value(&ev))
                    aria-invalid=move || state.field("namespaces").is_some().to_string()
                    aria-describedby=format!("{} {}", state.id("namespaces-hint"), state.err_id("namespaces"))/>
                <p class="hint" id=state.id("namespaces-hint")>"Namespace roles only; separate names with commas."</p>
                <datalist id=ns_list>
                    {move || {
                        let mut all: Vec<String> = reported.with(|r| r.iter().flat_map(|c| c.namespaces.iter().cloned()).collect());
                        all.sort();
                        all.dedup();
                        all.into_iter().map(|n| view! { <option value=n/> }).collect_view()
                    }}
                </datalist>
                {move || {
                    let typed = chips();
                    let lacking = if typed.is_empty() || ns_disabled.get() {
                        vec![]
                    } else {
                        reported.with(|r| warden_domain::dto::missing_namespaces(r, &typed))
                    };
                    (!lacking.is_empty()).then(|| view! {
                        <ul class="hint warn-list" role="note" data-testid=format!("{prefix}-namespace-hint")>
                            {lacking.into_iter().map(|w| view! { <li>{w}</li> }).collect_view()}
                        </ul>
                    })
                }}
                {move || {
                    let c = chips();
                    (!c.is_empty() && !ns_disabled.get()).then(|| view! { <crate::ui::Chips items=c label="Namespaces to bind"/> })
                }}
                <FieldError state field="namespaces"/>
                <label class="check" data-testid=format!("{prefix}-confirm-system")>
                    <input type="checkbox" name="confirm_system_namespaces" value="on" disabled=move || ns_disabled.get()/>
                    " Allow system namespaces (kube-system, kube-public, kube-node-lease): a grant there reaches the cluster's own components and their credentials."
                </label>
                {move || {
                    let system: Vec<String> = chips().into_iter().filter(|n| warden_domain::dto::SYSTEM_NAMESPACES.contains(&n.as_str())).collect();
                    (!system.is_empty() && !ns_disabled.get()).then(|| view! {
                        <p class="hint warn" role="note">{format!("{} is a system namespace: tick the box above if you mean it.", system.join(", "))}</p>
                    })
                }}
            </div>
            <ExpiryField state=state prefix=prefix name="expires" allow_never=true error_field="expires_at"/>
            <div class="field field-submit">
                <button type="submit" class="btn btn-primary" data-testid=format!("{prefix}-submit")>"Add binding"</button>
            </div>
        </ActionForm>
        <FormAlert state fields=&["subject.kind", "subject.name", "project", "role", "namespaces", "expires_at"] ok="Binding added."/>
        {move || {
            let w = made_warnings();
            (!w.is_empty()).then(|| view! {
                <div class="notice-warn card-note" role="note" data-testid=format!("{prefix}-warnings")>
                    <ul>{w.into_iter().map(|w| view! { <li>{w}</li> }).collect_view()}</ul>
                </div>
            })
        }}
    }
}

/// How long a grant lasts: presets (1 h, 8 h, 1 day, 7 days) or a custom number of hours.
#[component]
pub fn ExpiryField(
    state: FormState,
    prefix: &'static str,
    /// The select's name; the custom hours go in `{name}_custom_hours`.
    name: &'static str,
    /// Offer "Never" (bindings) or not (requests).
    allow_never: bool,
    /// The field the server names in its errors.
    error_field: &'static str,
) -> impl IntoView {
    let choice = RwSignal::new(if allow_never {
        String::new()
    } else {
        "3600".to_owned()
    });
    view! {
        <div class="field">
            <label for=state.id(name)>"Expires"</label>
            <select id=state.id(name) name=name data-testid=format!("{prefix}-{name}")
                on:change=move |ev| choice.set(event_target_value(&ev))
                aria-describedby=state.err_id(error_field)>
                {allow_never.then(|| view! { <option value="" selected=true>"Never"</option> })}
                {EXPIRY_PRESETS.iter().enumerate().map(|(i, (v, l))| view! {
                    <option value=*v selected=!allow_never && i == 0>{*l}</option>
                }).collect_view()}
            </select>
            <input type="number" min="0.1" step="0.1" name=format!("{name}_custom_hours")
                aria-label="Custom duration in hours" placeholder="hours"
                data-testid=format!("{prefix}-{name}-hours")
                disabled=move || choice.get() != "custom"/>
            <FieldError state field=error_field/>
        </div>
    }
}
