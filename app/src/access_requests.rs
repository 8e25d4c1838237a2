//! Just-in-time access in the console (issue 17): ask for access (the form can be pre-filled
//! from a link: `/access?project=P&role=R&namespaces=N&cluster=C`), follow one's requests, and,
//! for approvers, an inbox to approve (optionally for less time) or deny, and to revoke an
//! approved grant early. The navigation shows a badge with what waits for the person.
//! Every server function calls one domain use case, which asks the gate.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;
use warden_domain::dto::{AccessInbox, AccessRequestDto, RequestStatus};

use crate::bindings::{split_namespaces, time_left_rfc3339, ExpiryField};
use crate::error::AppError;
use crate::ui::{short_time, success_count, FieldError, FormAlert, FormState, LoadError, Loading};

// ---- server functions ----

#[server(prefix = "/sfn", endpoint = "get_access_inbox")]
pub async fn get_access_inbox() -> Result<AccessInbox, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::access_requests::inbox(&svc, &who).await?)
}

#[server(prefix = "/sfn", endpoint = "list_access_requests")]
pub async fn list_access_requests(scope: String) -> Result<Vec<AccessRequestDto>, AppError> {
    use warden_domain::dto::{AccessRequestQuery, RequestScope};
    let scope = AppError::choice(
        "scope",
        scope.trim(),
        RequestScope::parse,
        "must be mine, approvals or all",
    )?;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let q = AccessRequestQuery {
        scope,
        limit: Some(200),
        ..Default::default()
    };
    Ok(warden_domain::admin::access_requests::list(&svc, &who, &q)
        .await?
        .items)
}

#[server(prefix = "/sfn", endpoint = "requestable_roles")]
pub async fn requestable_roles() -> Result<Vec<(String, String)>, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::access_requests::requestable_roles(&svc, &who).await?)
}

#[allow(clippy::too_many_arguments)] // one argument per form field (`expect` is unfulfilled on the code `#[server]` generates)
#[server(prefix = "/sfn", endpoint = "create_access_request")]
pub async fn create_access_request(
    project: String,
    role: String,
    #[server(default)] namespaces: String,
    #[server(default)] cluster: String,
    #[server(default)] duration: String,
    #[server(default)] duration_custom_hours: String,
    #[server(default)] reason: String,
    #[server(default)] confirm_system_namespaces: Option<String>,
    #[server(default)] break_glass: Option<String>,
) -> Result<AccessRequestDto, AppError> {
    use warden_domain::dto::CreateAccessRequest as Req;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let secs = crate::bindings::expiry_secs(&duration, &duration_custom_hours)
        .map_err(|_| AppError::Invalid {
            fields: [(
                "duration_secs".to_owned(),
                "choose how long you need it".to_owned(),
            )]
            .into_iter()
            .collect(),
        })?
        .unwrap_or(0);
    let req = Req {
        project: project.trim().to_owned(),
        role,
        namespaces: split_namespaces(&namespaces),
        cluster: Some(cluster.trim().to_owned()).filter(|c| !c.is_empty()),
        duration_secs: secs,
        reason,
        confirm_system_namespaces: confirm_system_namespaces.is_some(),
    };
    let r = if break_glass.is_some() {
        warden_domain::admin::access_requests::break_glass(&svc, &who, req).await
    } else {
        warden_domain::admin::access_requests::create(&svc, &who, req).await
    };
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "approve_access_request")]
pub async fn approve_access_request(
    id: String,
    #[server(default)] duration: String,
    #[server(default)] comment: String,
) -> Result<AccessRequestDto, AppError> {
    use warden_domain::dto::DecideAccessRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let d = DecideAccessRequest {
        comment: Some(comment),
        duration_secs: duration.trim().parse().ok(),
    };
    let r = warden_domain::admin::access_requests::approve(&svc, &who, &id, d).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "deny_access_request")]
pub async fn deny_access_request(
    id: String,
    #[server(default)] comment: String,
) -> Result<AccessRequestDto, AppError> {
    use warden_domain::dto::DecideAccessRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let d = DecideAccessRequest {
        comment: Some(comment),
        duration_secs: None,
    };
    let r = warden_domain::admin::access_requests::deny(&svc, &who, &id, d).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "revoke_access_request")]
pub async fn revoke_access_request(
    id: String,
    #[server(default)] comment: String,
) -> Result<AccessRequestDto, AppError> {
    use warden_domain::dto::DecideAccessRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let d = DecideAccessRequest {
        comment: Some(comment),
        duration_secs: None,
    };
    let r = warden_domain::admin::access_requests::revoke(&svc, &who, &id, d).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

#[server(prefix = "/sfn", endpoint = "cancel_access_request")]
pub async fn cancel_access_request(id: String) -> Result<AccessRequestDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::access_requests::cancel(&svc, &who, &id).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

// ---- components ----

/// The navigation's link to the inbox, with a badge: requests waiting for the person's
/// decision, and their own pending ones.
#[component]
pub fn AccessNavLink(inbox: AccessInbox) -> impl IntoView {
    let n = inbox.to_decide + inbox.pending_mine + inbox.break_glass_active;
    view! {
        <a href="/access" data-testid="nav-access">
            "Access requests"
            {(n > 0).then(|| view! {
                <span class="badge" data-testid="access-badge"
                    title=format!("{} to decide, {} of yours pending, {} break-glass grants in force", inbox.to_decide, inbox.pending_mine, inbox.break_glass_active)>
                    {n.to_string()}
                </span>
            })}
        </a>
    }
}

fn where_of(r: &AccessRequestDto) -> String {
    if r.namespaces.is_empty() {
        format!("project {}", r.project)
    } else {
        format!("{} in project {}", r.namespaces.join(", "), r.project)
    }
}

fn status_chip(r: &AccessRequestDto) -> impl IntoView {
    let class = match r.status {
        RequestStatus::Approved => "chip allowed",
        RequestStatus::Pending => "chip",
        _ => "chip denied",
    };
    let class = if r.break_glass { "chip denied" } else { class };
    let label = match (r.status, &r.grant_expires_at) {
        (RequestStatus::Approved, Some(at)) => format!("approved · {}", time_left_rfc3339(at)),
        (RequestStatus::Pending, _) if r.approvals_needed > 1 => format!(
            "pending ({} of {} approvals)",
            r.approvals.len(),
            r.approvals_needed
        ),
        (s, _) => s.as_str().to_owned(),
    };
    let label = if r.break_glass {
        format!("break-glass · {label}")
    } else {
        label
    };
    view! { <span class=class data-testid="request-status">{label}</span> }
}

#[component]
pub fn AccessRequestsPage() -> impl IntoView {
    let create = ServerAction::<CreateAccessRequest>::new();
    let approve = ServerAction::<ApproveAccessRequest>::new();
    let deny = ServerAction::<DenyAccessRequest>::new();
    let revoke = ServerAction::<RevokeAccessRequest>::new();
    let cancel = ServerAction::<CancelAccessRequest>::new();
    let counts = (
        success_count(create),
        success_count(approve),
        success_count(deny),
        success_count(revoke),
        success_count(cancel),
    );
    let changed = move || {
        (
            counts.0.get(),
            counts.1.get(),
            counts.2.get(),
            counts.3.get(),
            counts.4.get(),
        )
    };
    let mine = Resource::new(changed, |_| list_access_requests("mine".into()));
    let approvals = Resource::new(changed, |_| list_access_requests("approvals".into()));
    let roles = Resource::new(|| (), |_| requestable_roles());
    let state = FormState::new(create, "request-access");
    let decide_state = FormState::new(approve, "decide");
    let deny_state = FormState::new(deny, "deny");
    let revoke_state = FormState::new(revoke, "revoke");
    let cancel_state = FormState::new(cancel, "cancel");
    let q = use_query_map();
    let pre = move |k: &str| q.with_untracked(|q| q.get(k).unwrap_or_default());
    let (project, role, namespaces, cluster) = (
        pre("project"),
        pre("role"),
        pre("namespaces"),
        pre("cluster"),
    );
    let system = split_namespaces(&namespaces)
        .iter()
        .any(|n| warden_domain::dto::SYSTEM_NAMESPACES.contains(&n.as_str()));
    view! {
        <h1>"Access requests"</h1>
        <p class="muted">"Nobody holds standing access they do not use: ask for a role for as long as you need it; an approver of the project decides. Approved access ends by itself."</p>
        <div class="columns">
            <section class="card grow" aria-labelledby="inbox-title">
                <h2 id="inbox-title">"To decide"</h2>
                <FormAlert state=decide_state ok="Approved."/>
                <FormAlert state=deny_state ok="Denied."/>
                <FormAlert state=revoke_state ok="Access revoked."/>
                <Transition fallback=Loading>
                    {move || Suspend::new(async move {
                        match approvals.await {
                            Ok(list) if list.is_empty() => view! { <p class="empty" data-testid="no-approvals">"Nothing waits for your decision."</p> }.into_any(),
                            Ok(list) => view! {
                                <div class="table-scroll">
                                <table class="table" data-testid="approvals">
                                    <thead><tr>
                                        <th scope="col">"Who"</th><th scope="col">"Role"</th><th scope="col">"Where"</th>
                                        <th scope="col">"For"</th><th scope="col">"Reason"</th><th scope="col">"Status"</th>
                                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                                    </tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|r| {
                                            let pending = r.status == RequestStatus::Pending && r.can_decide;
                                            let active = r.status == RequestStatus::Approved && r.can_decide
                                                && r.grant_expires_at.as_deref().is_some_and(|t| time_left_rfc3339(t) != "expired");
                                            let asked = r.duration_secs;
                                            let (id1, id2, id3) = (r.id.clone(), r.id.clone(), r.id.clone());
                                            let shorter: Vec<(&str, &str)> = crate::bindings::EXPIRY_PRESETS.iter().copied()
                                                .filter(|(v, _)| v.parse::<i64>().is_ok_and(|s| s < asked))
                                                .collect();
                                            view! {
                                                <tr data-testid="approval-row">
                                                    <td>{r.requester.clone()}</td>
                                                    <td>
                                                        {r.role.clone()}
                                                        <details class="grants" data-testid="request-grants">
                                                            <summary>"What it grants"</summary>
                                                            <code>{r.role_permissions.join(", ")}</code>
                                                        </details>
                                                    </td>
                                                    <td>{where_of(&r)}{r.cluster.clone().map(|c| format!(" (asked for cluster {c}; granted on every cluster of the project)"))}</td>
                                                    <td>{warden_domain::dto::jit_duration(r.duration_secs)}</td>
                                                    <td>{r.reason.clone()}</td>
                                                    <td>{status_chip(&r)}</td>
                                                    <td class="actions">
                                                        <a href=format!("/audit?q={}", r.id) data-testid="request-history">"History"</a>
                                                        {pending.then(|| view! {
                                                            <ActionForm action=approve attr:class="form form-inline" attr:data-testid="approve-form">
                                                                <input type="hidden" name="id" value=id1/>
                                                                <label>"For "
                                                                    <select name="duration" data-testid="approve-duration">
                                                                        <option value="" selected=true>{format!("{} (as asked)", warden_domain::dto::jit_duration(asked))}</option>
                                                                        {shorter.into_iter().map(|(v, l)| view! { <option value=v>{l}</option> }).collect_view()}
                                                                    </select>
                                                                </label>
                                                                <input type="text" name="comment" placeholder="Comment" aria-label="Comment"/>
                                                                <button type="submit" class="btn btn-primary" data-testid="approve">"Approve"</button>
                                                            </ActionForm>
                                                            <ActionForm action=deny attr:class="form form-inline">
                                                                <input type="hidden" name="id" value=id2/>
                                                                <input type="text" name="comment" placeholder="Why not" aria-label="Reason for denying"/>
                                                                <button type="submit" class="btn btn-danger" data-testid="deny">"Deny"</button>
                                                            </ActionForm>
                                                        })}
                                                        {active.then(|| view! {
                                                            <ActionForm action=revoke attr:class="form form-inline">
                                                                <input type="hidden" name="id" value=id3/>
                                                                <button type="submit" class="btn btn-danger" data-testid="revoke">"Revoke now"</button>
                                                            </ActionForm>
                                                        })}
                                                    </td>
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
                <h2 id="mine-title">"Your requests"</h2>
                <FormAlert state=cancel_state ok="Request cancelled."/>
                <Transition fallback=Loading>
                    {move || Suspend::new(async move {
                        match mine.await {
                            Ok(list) if list.is_empty() => view! { <p class="empty">"You have not asked for access yet."</p> }.into_any(),
                            Ok(list) => view! {
                                <div class="table-scroll">
                                <table class="table" data-testid="my-requests">
                                    <thead><tr>
                                        <th scope="col">"Role"</th><th scope="col">"Where"</th><th scope="col">"For"</th>
                                        <th scope="col">"Asked"</th><th scope="col">"Status"</th><th scope="col">"Decision"</th>
                                        <th scope="col"><span class="visually-hidden">"Actions"</span></th>
                                    </tr></thead>
                                    <tbody>
                                        {list.into_iter().map(|r| view! {
                                            <tr data-testid="my-request-row">
                                                <td>{r.role.clone()}</td>
                                                <td>{where_of(&r)}</td>
                                                <td>{warden_domain::dto::jit_duration(r.duration_secs)}</td>
                                                <td>{short_time(&r.created_at)}</td>
                                                <td>{status_chip(&r)}</td>
                                                <td>{r.decided_by.clone().map(|d| format!("{d}{}", r.decision_comment.clone().map(|c| format!(": {c}")).unwrap_or_default()))}</td>
                                                <td class="actions">{(r.status == RequestStatus::Pending).then(|| view! {
                                                    <ActionForm action=cancel>
                                                        <input type="hidden" name="id" value=r.id.clone()/>
                                                        <button type="submit" class="btn" data-testid="cancel-request">"Cancel"</button>
                                                    </ActionForm>
                                                })}</td>
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
            <section class="card side" aria-labelledby="request-title">
                <h2 id="request-title">"Request access"</h2>
                <ActionForm action=create attr:class="form" attr:data-testid="request-access">
                    <div class="field">
                        <label for=state.id("project")>"Project"</label>
                        <input id=state.id("project") name="project" type="text" required value=project autocomplete="off"
                            aria-describedby=state.err_id("project")/>
                        <FieldError state field="project"/>
                    </div>
                    <div class="field">
                        <label for=state.id("role")>"Role"</label>
                        <Suspense fallback=|| view! { <select disabled=true><option>"Loading…"</option></select> }>
                            {
                                let role = role.clone();
                                move || {
                                    let role = role.clone();
                                    roles.get().map(move |r| {
                                        let list = r.unwrap_or_default();
                                        view! {
                                            <select id=state.id("role") name="role" required aria-describedby=state.err_id("role")>
                                                <option value="">"Choose a role…"</option>
                                                {list.into_iter().map(|(name, scope)| {
                                                    let selected = name == role;
                                                    view! { <option value=name.clone() selected=selected>{format!("{name} ({scope})")}</option> }
                                                }).collect_view()}
                                            </select>
                                        }
                                    })
                                }
                            }
                        </Suspense>
                        <FieldError state field="role"/>
                    </div>
                    <div class="field">
                        <label for=state.id("namespaces")>"Namespaces"</label>
                        <input id=state.id("namespaces") name="namespaces" type="text" value=namespaces autocomplete="off"
                            placeholder="apple, banana" aria-describedby=state.err_id("namespaces")/>
                        <FieldError state field="namespaces"/>
                        <label class="check">
                            <input type="checkbox" name="confirm_system_namespaces" value="on" checked=system/>
                            " Includes a system namespace (kube-system…), on purpose."
                        </label>
                    </div>
                    <div class="field">
                        <label for=state.id("cluster")>"Cluster (optional)"</label>
                        <input id=state.id("cluster") name="cluster" type="text" value=cluster autocomplete="off"
                            aria-describedby=state.err_id("cluster")/>
                        <FieldError state field="cluster"/>
                    </div>
                    <ExpiryField state=state prefix="request-access" name="duration" allow_never=false error_field="duration_secs"/>
                    <div class="field">
                        <label for=state.id("reason")>"Reason"</label>
                        <textarea id=state.id("reason") name="reason" required rows="3"
                            aria-describedby=state.err_id("reason")></textarea>
                        <FieldError state field="reason"/>
                    </div>
                    <label class="check" data-testid="break-glass">
                        <input type="checkbox" name="break_glass" value="on"/>
                        " Break glass: take a break-glass role now, without approval (every administrator is alerted)."
                    </label>
                    <button type="submit" class="btn btn-primary" data-testid="request-access-submit">"Ask for access"</button>
                </ActionForm>
                <FormAlert state fields=&["project", "role", "namespaces", "cluster", "duration_secs", "reason"] ok="Request sent: the project's approvers have been told."/>
            </section>
        </div>
    }
}

/// A link to the request form, pre-filled.
pub fn request_href(
    project: &str,
    role: &str,
    namespaces: &[String],
    cluster: Option<&str>,
) -> String {
    let enc = |s: &str| {
        s.chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c.to_string(),
                ' ' => "+".to_owned(),
                c => format!("%{:02X}", c as u32),
            })
            .collect::<String>()
    };
    let mut href = format!("/access?project={}&role={}", enc(project), enc(role));
    if !namespaces.is_empty() {
        href.push_str(&format!("&namespaces={}", enc(&namespaces.join(","))));
    }
    if let Some(c) = cluster {
        href.push_str(&format!("&cluster={}", enc(c)));
    }
    href
}

// ---- the organization's just-in-time settings (on the Settings page) ----

#[server(prefix = "/sfn", endpoint = "get_jit_settings")]
pub async fn get_jit_settings() -> Result<warden_domain::dto::JitSettingsDto, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    Ok(warden_domain::admin::jit_settings::get(&svc, &who).await?)
}

/// `CLUSTER_ADMIN=8, NAMESPACE_ADMIN=24` (hours) as role rules; a rule limited to clusters
/// whose labels match a selector reads `CLUSTER_ADMIN=8 where env=production`, and rules are
/// then separated by `;` or new lines (a selector has commas of its own).
pub fn parse_role_hours(
    raw: &str,
    field: &str,
) -> Result<Vec<warden_domain::dto::RequiredExpiry>, AppError> {
    let bad = |item: &str| {
        AppError::Invalid {
        fields: [(
            field.to_owned(),
            format!(
                "{item:?}: write ROLE=HOURS, e.g. CLUSTER_ADMIN=8, or ROLE=HOURS where SELECTOR, e.g. CLUSTER_ADMIN=8 where env=production"
            ),
        )]
        .into_iter()
        .collect(),
    }
    };
    let mut items: Vec<&str> = Vec::new();
    for chunk in raw.split([';', '\n']) {
        if chunk.contains(" where ") {
            items.push(chunk);
        } else {
            items.extend(chunk.split(','));
        }
    }
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (rule, selector) = match item.split_once(" where ") {
                Some((r, sel)) => (r.trim(), Some(sel.trim().to_owned())),
                None => (item, None),
            };
            let (role, hours) = rule.split_once('=').unwrap_or((rule, ""));
            match hours.trim().parse::<f64>() {
                Ok(h) if h > 0.0 => Ok(warden_domain::dto::RequiredExpiry {
                    role: role.trim().to_owned(),
                    max_secs: (h * 3600.0).round() as i64,
                    cluster_selector: selector,
                }),
                _ => Err(bad(item)),
            }
        })
        .collect()
}

/// Role rules back as `ROLE=HOURS, ...` (`ROLE=HOURS where SELECTOR; ...` when a rule has a
/// cluster selector).
pub fn show_role_hours(rules: &[warden_domain::dto::RequiredExpiry]) -> String {
    let sep = if rules.iter().any(|r| r.cluster_selector.is_some()) {
        "; "
    } else {
        ", "
    };
    rules
        .iter()
        .map(|r| {
            let h = r.max_secs as f64 / 3600.0;
            let h = (h * 100.0).round() / 100.0;
            match &r.cluster_selector {
                Some(sel) => format!("{}={h} where {sel}", r.role),
                None => format!("{}={h}", r.role),
            }
        })
        .collect::<Vec<_>>()
        .join(sep)
}

#[server(prefix = "/sfn", endpoint = "update_jit_settings")]
pub async fn update_jit_settings(
    #[server(default)] required_expiry: String,
    #[server(default)] break_glass_roles: String,
    request_ttl_hours: f64,
    #[server(default)] two_approvals_for_write: Option<String>,
    #[server(default)] webhook_url: String,
) -> Result<warden_domain::dto::JitSettingsDto, AppError> {
    use warden_domain::dto::UpdateJitSettingsRequest;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = UpdateJitSettingsRequest {
        required_expiry: Some(parse_role_hours(&required_expiry, "required_expiry")?),
        break_glass_roles: Some(parse_role_hours(&break_glass_roles, "break_glass_roles")?),
        request_ttl_secs: Some((request_ttl_hours * 3600.0).round() as i64),
        two_approvals_for_write: Some(two_approvals_for_write.is_some()),
        webhook_url: Some(webhook_url),
    };
    let r = warden_domain::admin::jit_settings::update(&svc, &who, req).await;
    // A new webhook URL's signing key is shown once: a plain form finds it on the next page.
    if let Some(key) = r
        .as_ref()
        .ok()
        .and_then(|s| s.webhook_signing_secret.as_deref())
    {
        crate::ssr::flash_for_plain_form(WEBHOOK_KEY_FLASH, key).await?;
    }
    crate::ssr::finish(r.map_err(AppError::from), None)
}

/// The session flash a plain form leaves a new webhook signing key in.
pub const WEBHOOK_KEY_FLASH: &str = "webhook_signing_secret";

/// What to do with a webhook's signing key, shown once.
pub const WEBHOOK_KEY_NOTE: &str = "Copy it now: it is shown only once. Each delivery is signed with it (Standard Webhooks: the webhook-signature header is v1, then base64 of HMAC-SHA256 over \"{webhook-id}.{webhook-timestamp}.{body}\", keyed with the base64 after whsec_). Check it, and the timestamp's age, before trusting a delivery. Another URL has another key.";

/// The Settings page's card: required expiry per role, request lifetime, two approvals for
/// write roles, break-glass roles, the webhook. (The page creates the resource and the action,
/// beside its own, so that server and browser resolve them in the same order.)
#[component]
pub fn JitSettingsForm(
    settings: warden_domain::dto::JitSettingsDto,
    action: ServerAction<UpdateJitSettings>,
    writable: bool,
) -> impl IntoView {
    let state = FormState::new(action, "jit-settings");
    let ro = Signal::stored(!writable);
    let s = settings;
    view! {
        <ActionForm action attr:class="form" attr:data-testid="jit-settings">
            <section class="card">
                <h2>"Just-in-time access"</h2>
                <crate::ui::Field state name="required_expiry" label="Roles that must expire (ROLE=max hours, …)"
                    value=show_role_hours(&s.required_expiry) placeholder="CLUSTER_ADMIN=8 where env=production; NAMESPACE_ADMIN=24" disabled=ro
                    hint="A binding of these roles needs an expiry no later than the maximum. Add where SELECTOR (e.g. env=production) to limit a rule to projects holding clusters whose labels match; separate such rules with ';'."/>
                <crate::ui::Field state name="request_ttl_hours" label="Undecided requests lapse after (hours)" kind="number"
                    value=(s.request_ttl_secs as f64 / 3600.0).to_string() required=true disabled=ro/>
                <label class="check">
                    <input type="checkbox" name="two_approvals_for_write" value="on" checked=s.two_approvals_for_write disabled=!writable/>
                    " Requests for write roles need two approvers"
                </label>
                <crate::ui::Field state name="break_glass_roles" label="Break-glass roles (ROLE=max hours, …)"
                    value=show_role_hours(&s.break_glass_roles) placeholder="CLUSTER_ADMIN=1" disabled=ro
                    hint="Taken at once without approval, giving a reason; every administrator is alerted."/>
                <crate::ui::Field state name="webhook_url" label="Webhook URL (JSON with a Slack-compatible text)"
                    value=s.webhook_url.clone().unwrap_or_default() disabled=ro/>
                {writable.then(|| view! { <crate::ui::Submit state label="Save just-in-time settings"/> })}
            </section>
        </ActionForm>
        <FormAlert state fields=&["required_expiry", "request_ttl_hours", "break_glass_roles", "webhook_url"] ok="Just-in-time settings saved."/>
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn role_hours_round_trip() {
        let rules = super::parse_role_hours("CLUSTER_ADMIN=8, NAMESPACE_ADMIN=0.5", "f").unwrap();
        assert_eq!(rules[0].max_secs, 8 * 3600);
        assert_eq!(rules[1].max_secs, 1800);
        assert_eq!(
            super::show_role_hours(&rules),
            "CLUSTER_ADMIN=8, NAMESPACE_ADMIN=0.5"
        );
        assert!(super::parse_role_hours("CLUSTER_ADMIN", "f").is_err());
        let scoped = super::parse_role_hours(
            "CLUSTER_ADMIN=8 where env=production,tier in (a,b); NAMESPACE_ADMIN=24",
            "f",
        )
        .unwrap();
        assert_eq!(
            scoped[0].cluster_selector.as_deref(),
            Some("env=production,tier in (a,b)")
        );
        assert_eq!(scoped[1].cluster_selector, None);
        assert_eq!(
            super::show_role_hours(&scoped),
            "CLUSTER_ADMIN=8 where env=production,tier in (a,b); NAMESPACE_ADMIN=24"
        );
        assert!(super::parse_role_hours("", "f").unwrap().is_empty());
    }
}

// ---- a project's approver group (on the project's page) ----

#[server(prefix = "/sfn", endpoint = "get_approver_group")]
pub async fn get_approver_group(
    project: String,
) -> Result<warden_domain::dto::ApproverGroupForm, AppError> {
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let r = warden_domain::admin::access_requests::approver_group_form(&svc, &who, &project).await;
    crate::ssr::answer(r.map_err(AppError::from))
}

/// Set (or, with an empty group, clear) the project's approver group. The domain use case asks
/// the gate (`project.write` on the project) and audits the change in its own transaction.
#[server(prefix = "/sfn", endpoint = "set_approver_group")]
pub async fn set_approver_group(
    project: String,
    #[server(default)] group: String,
) -> Result<warden_domain::dto::ApproverGroupDto, AppError> {
    use warden_domain::dto::ApproverGroupDto;
    let svc = crate::ssr::services()?;
    let who = crate::ssr::principal().await?;
    let req = ApproverGroupDto {
        group: Some(group.trim().to_owned()).filter(|g| !g.is_empty()),
    };
    let r =
        warden_domain::admin::access_requests::set_approver_group(&svc, &who, &project, req).await;
    crate::ssr::finish(r.map_err(AppError::from), None)
}

/// The approver group of a project, as the project page loads it.
pub type ApproverGroupResource = Resource<Result<warden_domain::dto::ApproverGroupForm, AppError>>;

/// Who approves the project's access requests: its administrators, and the members of its
/// approver group, chosen here from the organization's groups (or cleared) by those who may
/// change the project. The page creates the resource and the action beside its own, so that
/// server and browser resolve them in the same order.
#[component]
pub fn ApproverGroupCard(
    project: String,
    current: ApproverGroupResource,
    action: ServerAction<SetApproverGroup>,
) -> impl IntoView {
    let state = FormState::new(action, "approver-group");
    view! {
        <section class="card" aria-labelledby="approvers-title" data-testid="approver-group">
            <h2 id="approvers-title">"Access requests"</h2>
            <Transition fallback=Loading>
                {move || {
                    let project = project.clone();
                    Suspend::new(async move {
                        let form = current.await.ok().unwrap_or_default();
                        let group = form.group.clone();
                        let clear = group.is_some().then(|| {
                            let project = project.clone();
                            view! {
                                <ActionForm action attr:class="form form-inline">
                                    <input type="hidden" name="project" value=project/>
                                    <input type="hidden" name="group" value=""/>
                                    <crate::ui::Submit state label="Clear" class="btn" testid="approver-group-clear"/>
                                </ActionForm>
                            }
                        });
                        view! {
                            <p>{match &group {
                                Some(g) => format!("The project's administrators approve requests for access to it, and so do the members of group {g}. Nobody approves their own."),
                                None => "The project's administrators approve requests for access to it. Nobody approves their own.".to_owned(),
                            }}</p>
                            {form.writable.then(|| view! {
                                <ActionForm action attr:class="form form-inline">
                                    <input type="hidden" name="project" value=project.clone()/>
                                    <label for=state.id("group")>"Approver group"</label>
                                    <select id=state.id("group") name="group" data-testid="approver-group-select"
                                        aria-describedby=state.err_id("group")>
                                        <option value="" selected=group.is_none()>"None: the administrators only"</option>
                                        {form.choices.iter().map(|g| {
                                            let selected = group.as_deref() == Some(g.as_str());
                                            view! { <option value=g.clone() selected=selected>{g.clone()}</option> }
                                        }).collect_view()}
                                    </select>
                                    <crate::ui::FieldError state field="group"/>
                                    <crate::ui::Submit state label="Save" testid="approver-group-save"/>
                                </ActionForm>
                                {clear}
                            })}
                        }
                    })
                }}
            </Transition>
            <FormAlert state fields=&["group"] ok="Approvers saved."/>
        </section>
    }
}
