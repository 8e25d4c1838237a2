//! Access requests (issue 17): a user asks for a role in a project (optionally on namespaces,
//! optionally naming one cluster) for a while, with a reason; an approver approves (optionally
//! for less time) or denies, with a comment; approval creates a time-bound binding at once.
//!
//! Approvers are the project's administrators (`project.write` on it) and the members of the
//! project's approver group, never the requester (not even through a group). An organization
//! setting can require two approvers for write roles. Pending requests lapse after the
//! organization's request lifetime (default 24 h); the requester may cancel theirs; an approver
//! may revoke an approved grant early. Every step is an audit event whose resource is the
//! request (`access_request`, its id), so the audit page shows a request's whole story.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::{BTreeMap, HashSet};

use super::ts;
use crate::access::{Action, Principal, Target};
use crate::audit::{Actor, AuditEvent, AuditKind, Outcome, SessionType};
use crate::clock::Timestamp;
use crate::dto::RequestStatus;
use crate::dto::{
    jit_duration, AccessInbox, AccessRequestDto, AccessRequestQuery, ApprovalDto, ApproverGroupDto,
    CreateAccessRequest, DecideAccessRequest, Page, RequestScope,
};
use crate::entities::{access_requests, bindings, group_members, groups, projects, roles, users};
use crate::error::{DomainError, DomainResult};
use crate::ids::BindingId;
use crate::permissions::{Permission, Scope};
use crate::Services;

/// The stored values of [`RequestStatus`].
pub const PENDING: &str = RequestStatus::Pending.as_str();
pub const APPROVED: &str = RequestStatus::Approved.as_str();
pub const DENIED: &str = RequestStatus::Denied.as_str();
pub const CANCELLED: &str = RequestStatus::Cancelled.as_str();
pub const EXPIRED: &str = RequestStatus::Expired.as_str();
pub const REVOKED: &str = RequestStatus::Revoked.as_str();

/// The shortest grant one may ask for.
pub const MIN_DURATION_SECS: i64 = 60;

/// What the access-request use cases share with the running server: the signal that wakes the
/// webhook worker when a delivery is queued.
#[derive(Default)]
pub struct JitHooks {
    outbox: std::sync::Arc<tokio::sync::Notify>,
    /// The receiver asked to slow down (HTTP 429) until then (ms, Warden's clock): nothing is
    /// posted to it before.
    receiver_busy_until: std::sync::atomic::AtomicI64,
    /// Where webhooks may be posted (set at start-up; unset: public addresses only).
    networks: std::sync::OnceLock<super::jit_settings::WebhookNetworks>,
}

impl JitHooks {
    /// The operator's `WARDEN_WEBHOOK_ALLOWED_NETWORKS`, set once at start-up.
    pub fn set_networks(&self, networks: super::jit_settings::WebhookNetworks) {
        let _ = self.networks.set(networks);
    }
    /// Where webhooks may be posted.
    pub fn networks(&self) -> super::jit_settings::WebhookNetworks {
        self.networks.get().cloned().unwrap_or_default()
    }
    /// The receiver asked to be left alone until `until` (ms).
    pub fn receiver_busy_until(&self, until: i64) {
        self.receiver_busy_until
            .fetch_max(until, std::sync::atomic::Ordering::SeqCst);
    }
    /// Whether the receiver asked to be left alone at `now` (ms).
    pub fn receiver_busy(&self, now: i64) -> bool {
        now < self
            .receiver_busy_until
            .load(std::sync::atomic::Ordering::SeqCst)
    }
    /// A delivery was committed to the outbox: deliver it now rather than at the next tick.
    pub fn wake(&self) {
        self.outbox.notify_one();
    }
    /// What the worker waits on (it holds this, not the services).
    pub fn waker(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.outbox.clone()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Approval {
    user_id: String,
    email: String,
    comment: Option<String>,
    at: i64,
}

/// A role that changes things: any `*.write` permission or full kubectl access.
pub fn is_write_role(role: &roles::Model) -> bool {
    super::bindings::granted_by(role)
        .iter()
        .any(|p| p.name().ends_with(".write") || *p == Permission::KubectlFullaccess)
}

struct Ctx {
    project: projects::Model,
    role: roles::Model,
    requester: String,
    approvals: Vec<Approval>,
    needed: u32,
}

async fn context(svc: &Services, r: &access_requests::Model) -> DomainResult<Ctx> {
    let project = projects::Entity::find_by_id(r.project_id.clone())
        .one(&svc.db)
        .await?
        .ok_or_else(|| DomainError::not_found("access request"))?;
    let role = roles::Entity::find_by_id(r.role_id.clone())
        .one(&svc.db)
        .await?
        .ok_or_else(|| DomainError::not_found("access request"))?;
    let requester = users::Entity::find_by_id(r.requester_id.clone())
        .one(&svc.db)
        .await?
        .map(|u| u.email)
        .unwrap_or_default();
    let settings = super::jit_settings::load(&svc.db).await?;
    let needed = if settings.two_approvals_for_write && is_write_role(&role) {
        2
    } else {
        1
    };
    Ok(Ctx {
        project,
        role,
        requester,
        approvals: serde_json::from_str(&r.approvals).unwrap_or_default(),
        needed,
    })
}

fn to_dto(r: &access_requests::Model, c: &Ctx, can_decide: bool) -> AccessRequestDto {
    AccessRequestDto {
        id: r.id.clone(),
        requester: c.requester.clone(),
        project: c.project.name.clone(),
        role: c.role.name.clone(),
        role_permissions: super::bindings::granted_by(&c.role)
            .into_iter()
            .map(|p| p.name().to_owned())
            .collect(),
        namespaces: serde_json::from_str(&r.namespaces).unwrap_or_default(),
        cluster: r.cluster.clone(),
        duration_secs: r.duration_secs,
        reason: r.reason.clone(),
        status: RequestStatus::from_stored(&r.status),
        approvals: c
            .approvals
            .iter()
            .map(|a| ApprovalDto {
                approver: a.email.clone(),
                comment: a.comment.clone(),
                at: ts(a.at),
            })
            .collect(),
        approvals_needed: c.needed,
        created_at: ts(r.created_at),
        expires_at: ts(r.expires_at),
        decided_at: r.decided_at.map(ts),
        decided_by: r.decided_by.clone(),
        decision_comment: r.decision_comment.clone(),
        binding_id: r.binding_id.clone(),
        grant_expires_at: r.grant_expires_at.map(ts),
        can_decide,
        break_glass: r.break_glass,
    }
}

fn describe(r: &access_requests::Model, c: &Ctx) -> String {
    let ns: Vec<String> = serde_json::from_str(&r.namespaces).unwrap_or_default();
    let at = if ns.is_empty() {
        format!("project {}", c.project.name)
    } else {
        format!("namespaces {} of project {}", ns.join(", "), c.project.name)
    };
    // A request may name the cluster it is about; the grant is the project's, on every cluster
    // it owns or has shared in: said so, so no approver takes the name for a limit.
    let cluster = r
        .cluster
        .as_deref()
        .map(|c| format!(" (asked for cluster {c}; granted on every cluster of the project)"))
        .unwrap_or_default();
    format!(
        "{} asks for {} on {at}{cluster} for {}",
        c.requester,
        c.role.name,
        jit_duration(r.duration_secs)
    )
}

/// Whether `who` approves requests for `project`: not the requester, and a member of the
/// project's approver group or a project administrator (`project.write`). No audit.
///
/// The two carry different powers. The approver group approves any of the project's roles:
/// whoever sets it or adds a member to it must hold every permission a project role can carry
/// there ([`super::bindings::approver_handouts`]). An administrator outside the group is bound
/// as when binding directly: they grant (or take away) only what they hold where it applies.
async fn approver_via(
    svc: &Services,
    user: crate::ids::UserId,
    project: &projects::Model,
) -> DomainResult<Option<&'static str>> {
    let eff = svc.policy.effective(user).await?;
    if !eff.active {
        return Ok(None);
    }
    // *All users* never approves, even if named before that was refused: anyone who can make
    // an account (or sign in through a provider that provisions) would be in it.
    if let Some(g) = approver_group_that_chooses(svc, project).await? {
        let member = group_members::Entity::find()
            .filter(group_members::Column::GroupId.eq(g.clone()))
            .filter(group_members::Column::UserId.eq(user.to_string()))
            .one(&svc.db)
            .await?
            .is_some();
        if member {
            return Ok(Some("group"));
        }
    }
    if eff.holds(
        Permission::ProjectWrite,
        &Target::Project(project.name.clone()),
    ) {
        return Ok(Some("admin"));
    }
    Ok(None)
}

/// The project's approver group, unless it is one whose members nobody chooses.
async fn approver_group_that_chooses(
    svc: &Services,
    project: &projects::Model,
) -> DomainResult<Option<String>> {
    let Some(g) = &project.approver_group_id else {
        return Ok(None);
    };
    let named = groups::Entity::find_by_id(g.clone()).one(&svc.db).await?;
    Ok(named
        .filter(|g| g.name != crate::bootstrap::ALL_USERS_GROUP)
        .map(|g| g.id))
}

/// What granting (or revoking) the request hands out (or takes away): its role's permissions
/// on its project or namespaces.
fn handout_of(
    r: &access_requests::Model,
    c: &Ctx,
    until: super::bindings::Until,
) -> super::bindings::Handout {
    let namespaces: Vec<String> = serde_json::from_str(&r.namespaces).unwrap_or_default();
    super::bindings::Handout {
        what: format!("{} would hold {}", c.requester, c.role.name),
        permissions: super::bindings::granted_by(&c.role),
        targets: super::bindings::targets(Some(&c.project.name), &namespaces),
        until,
    }
}

/// The gate for deciding on a request: refuses the requester (whatever groups they are in),
/// then asks the access gate (`project.write` on the project) for administrators, or checks
/// membership of the approver group. Refusals are audited.
async fn gate_decide(
    svc: &Services,
    who: &Principal,
    r: &access_requests::Model,
    c: &Ctx,
    action: &str,
    until: super::bindings::Until,
) -> DomainResult<()> {
    svc.policy
        .authorize_self(who, action)
        .await
        .map_err(|d| DomainError::forbidden(d.reason))?;
    if r.requester_id == who.user_id.to_string() {
        let reason = "no self-approval: the requester cannot decide on their own request";
        svc.audit_denied(who, action, "access_request", &r.id, reason)
            .await?;
        return Err(DomainError::forbidden(reason));
    }
    match approver_via(svc, who.user_id, &c.project).await? {
        Some("admin") => {
            svc.gate(
                who,
                Action::project(Permission::ProjectWrite, c.project.name.clone()),
            )
            .await?;
            // Granting or taking away the role is bound as a binding is: only what the
            // administrator holds there (denying grants nothing).
            if action != "access_request.deny" {
                super::bindings::refuse_escalation(
                    svc,
                    who,
                    &[handout_of(r, c, until)],
                    action,
                    "access_request",
                    &r.id,
                )
                .await?;
            }
            Ok(())
        }
        // An approver group's member grants what the group approves: the same fresh second
        // factor as an administrator's approval.
        Some(_) if until != super::bindings::Until::Now => {
            super::bindings::refuse_stale_second_factor(svc, who, action, "access_request", &r.id)
                .await
        }
        Some(_) => Ok(()),
        None => {
            let reason = format!(
                "not an approver of project {} (its administrators or its approver group)",
                c.project.name
            );
            svc.audit_denied(who, action, "access_request", &r.id, &reason)
                .await?;
            Err(DomainError::forbidden(reason))
        }
    }
}

async fn record<C: sea_orm::ConnectionTrait>(
    tx: &C,
    svc: &Services,
    who: Option<&Principal>,
    action: &str,
    r: &access_requests::Model,
    c: &Ctx,
    reason: Option<String>,
    details: serde_json::Value,
) -> DomainResult<()> {
    let mut ev = match who {
        Some(p) => AuditEvent::by(p, AuditKind::Console, action, Outcome::Allowed),
        None => AuditEvent::new(
            AuditKind::Console,
            Actor::System,
            SessionType::System,
            action,
            Outcome::Allowed,
        ),
    }
    .resource("access_request", r.id.clone())
    .project(c.project.name.clone())
    .details(details);
    if let Some(x) = reason {
        ev = ev.reason(x);
    }
    crate::audit::append(tx, svc.clock.now(), vec![ev]).await
}

/// Queue the event for the organization's webhook, if any, inside the event's transaction
/// (delivered by the server's worker, with retries, after commit; see `webhook_outbox`).
async fn notify<C: sea_orm::ConnectionTrait>(
    tx: &C,
    svc: &Services,
    event: &str,
    text: String,
    dto: &AccessRequestDto,
) -> DomainResult<()> {
    // Chat services read `<...>` as markup (`<!channel>`, `<https://x|a link's words>`) and
    // `&` as the start of an entity: a requester's reason is shown as typed, never as markup.
    let text = escape_markup(&text);
    super::webhook_outbox::enqueue(
        tx,
        svc,
        event,
        &json!({ "text": text, "event": event, "request": dto }),
    )
    .await?;
    Ok(())
}

/// Slack's (and Mattermost's, Rocket.Chat's) escaping of message text.
pub fn escape_markup(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn request_link(svc: &Services, id: &str) -> String {
    format!(
        "{}/access?request={id}",
        svc.public_url.trim_end_matches('/')
    )
}

async fn find(svc: &Services, id: &str) -> DomainResult<access_requests::Model> {
    access_requests::Entity::find_by_id(id.to_owned())
        .one(&svc.db)
        .await?
        .ok_or_else(|| DomainError::not_found("access request"))
}

fn clean_comment(c: Option<String>) -> DomainResult<Option<String>> {
    let c = c.map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    if c.as_ref().is_some_and(|c| c.chars().count() > 1000) {
        return Err(DomainError::invalid(
            "comment",
            "must be at most 1000 characters",
        ));
    }
    Ok(c)
}

/// A request's fields, validated.
struct Prepared {
    project: projects::Model,
    role: roles::Model,
    namespaces: Vec<String>,
    cluster: Option<String>,
    reason: String,
}

async fn prepare(svc: &Services, req: CreateAccessRequest) -> DomainResult<Prepared> {
    let mut fields = BTreeMap::new();
    let project = match super::projects::find(&svc.db, req.project.trim()).await {
        Ok(p) => Some(p),
        Err(DomainError::NotFound { .. }) => {
            fields.insert(
                "project".to_owned(),
                format!("no project named {:?}", req.project),
            );
            None
        }
        Err(e) => return Err(e),
    };
    let role = match super::roles::find(&svc.db, req.role.trim()).await {
        Ok(r) => Some(r),
        Err(DomainError::NotFound { .. }) => {
            fields.insert("role".to_owned(), format!("no role named {:?}", req.role));
            None
        }
        Err(e) => return Err(e),
    };
    let scope = role.as_ref().and_then(|r| Scope::parse(&r.scope));
    let namespaces =
        match super::bindings::namespace_list(&req.namespaces, req.confirm_system_namespaces) {
            Ok(n) => n,
            Err(e) => {
                fields.insert("namespaces".to_owned(), e);
                vec![]
            }
        };
    match scope {
        Some(Scope::Organization) => {
            fields.insert(
                "role".to_owned(),
                "organization roles cannot be requested".to_owned(),
            );
        }
        Some(Scope::Namespace) if namespaces.is_empty() && !fields.contains_key("namespaces") => {
            fields.insert(
                "namespaces".to_owned(),
                "a namespace role needs at least one namespace".to_owned(),
            );
        }
        Some(Scope::Project) if !namespaces.is_empty() => {
            fields.insert(
                "namespaces".to_owned(),
                "only namespace roles take namespaces".to_owned(),
            );
        }
        _ => {}
    }
    if !(MIN_DURATION_SECS..=super::bindings::MAX_EXPIRY_SECS).contains(&req.duration_secs) {
        fields.insert(
            "duration_secs".to_owned(),
            "must be between a minute and a year".to_owned(),
        );
    } else if let (Some(r), Some(p)) = (&role, &project) {
        // The requester is told the longest allowed, not which rule, label selector or
        // cluster makes it apply (they may read neither the settings nor the project's
        // clusters).
        if let Some(max) =
            super::jit_settings::requestable_max_secs(&svc.db, &r.name, &p.id).await?
        {
            if req.duration_secs > max {
                fields.insert(
                    "duration_secs".to_owned(),
                    format!(
                        "role {} may be granted in this project for at most {} (the organization's rule)",
                        r.name,
                        crate::dto::jit_duration(max)
                    ),
                );
            }
        }
    }
    let reason = req.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 1000 {
        fields.insert(
            "reason".to_owned(),
            "say why, in at most 1000 characters".to_owned(),
        );
    }
    let cluster = req
        .cluster
        .as_ref()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    // Checked last, once everything else holds: a request made only to learn which project a
    // cluster is in either says so about a request that is otherwise whole, or is created
    // (and audited, and its approvers told).
    if let (Some(c), Some(p), true) = (&cluster, &project, fields.is_empty()) {
        let reaches = crate::kubectl::kube_cluster(&svc.db, c)
            .await?
            .is_some_and(|k| k.projects().any(|x| *x == p.name));
        if !reaches {
            fields.insert(
                "cluster".to_owned(),
                format!("no cluster named {c:?} in project {}", p.name),
            );
        }
    }
    if !fields.is_empty() {
        return Err(DomainError::Invalid { fields });
    }
    Ok(Prepared {
        project: project.expect("checked"),
        role: role.expect("checked"),
        namespaces,
        cluster,
        reason,
    })
}

/// The most requests one person may have waiting at once.
pub const MAX_PENDING_PER_PERSON: u64 = 10;
/// Requests one person may make in an hour (cancelled and decided ones count).
pub const MAX_REQUESTS_PER_HOUR: u64 = 30;
/// Break-glass grants one person may take in any 24 hours (every project together): each
/// alerts every administrator, and a flood of them would bury the one that matters.
pub const MAX_BREAK_GLASS_PER_DAY: u64 = 5;

pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateAccessRequest,
) -> DomainResult<AccessRequestDto> {
    svc.policy
        .authorize_self(who, "access_request.create")
        .await
        .map_err(|d| DomainError::forbidden(d.reason))?;
    let now = svc.clock.now();
    let duration_secs = req.duration_secs;
    let Prepared {
        project,
        role,
        namespaces,
        cluster,
        reason,
    } = prepare(svc, req).await?;
    let ns_json = serde_json::to_string(&namespaces).unwrap_or_else(|_| "[]".into());
    let same = access_requests::Entity::find()
        .filter(access_requests::Column::RequesterId.eq(who.user_id.to_string()))
        .filter(access_requests::Column::ProjectId.eq(project.id.clone()))
        .filter(access_requests::Column::RoleId.eq(role.id.clone()))
        .filter(access_requests::Column::Namespaces.eq(ns_json.clone()))
        .filter(access_requests::Column::Status.eq(PENDING))
        .filter(access_requests::Column::ExpiresAt.gt(now.millis()))
        .one(&svc.db)
        .await?;
    if same.is_some() {
        return Err(DomainError::conflict(
            "role",
            "you already asked for this; wait for a decision or cancel that request",
        ));
    }
    // A person's requests waiting at once are few: each is in every approver's inbox.
    let waiting = sea_orm::PaginatorTrait::count(
        access_requests::Entity::find()
            .filter(access_requests::Column::RequesterId.eq(who.user_id.to_string()))
            .filter(access_requests::Column::Status.eq(PENDING))
            .filter(access_requests::Column::ExpiresAt.gt(now.millis())),
        &svc.db,
    )
    .await?;
    if waiting >= MAX_PENDING_PER_PERSON {
        return Err(DomainError::conflict(
            "role",
            format!(
                "you have {waiting} requests waiting for a decision, the most one person may have; cancel one or wait for the decisions"
            ),
        ));
    }
    // And few in an hour, cancelled ones included: each notifies the approvers (the webhook
    // too), and a flood of them would bury the notifications that matter.
    let lately = sea_orm::PaginatorTrait::count(
        access_requests::Entity::find()
            .filter(access_requests::Column::RequesterId.eq(who.user_id.to_string()))
            .filter(access_requests::Column::CreatedAt.gt(now.millis() - 3_600_000)),
        &svc.db,
    )
    .await?;
    if lately >= MAX_REQUESTS_PER_HOUR {
        return Err(DomainError::conflict(
            "role",
            format!(
                "you made {lately} access requests in the last hour, the most one person may make; try again later"
            ),
        ));
    }
    let settings = super::jit_settings::load(&svc.db).await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    let m = access_requests::ActiveModel::from(access_requests::Model {
        id: uuid::Uuid::new_v4().to_string(),
        requester_id: who.user_id.to_string(),
        project_id: project.id.clone(),
        role_id: role.id.clone(),
        namespaces: ns_json,
        cluster,
        duration_secs,
        reason,
        status: PENDING.to_owned(),
        approvals: "[]".to_owned(),
        created_at: now.millis(),
        expires_at: now.millis() + settings.request_ttl_secs * 1000,
        decided_at: None,
        decided_by: None,
        decision_comment: None,
        binding_id: None,
        grant_expires_at: None,
        break_glass: false,
    })
    .insert(&tx)
    .await?;
    let c = context(svc, &m).await?;
    let dto = to_dto(&m, &c, false);
    record(
        &tx,
        svc,
        Some(who),
        "access_request.create",
        &m,
        &c,
        Some(m.reason.clone()),
        json!({ "after": dto }),
    )
    .await?;
    notify(
        &tx,
        svc,
        "access_request.create",
        format!(
            "{} ({}): {}",
            describe(&m, &c),
            m.reason,
            request_link(svc, &m.id)
        ),
        &dto,
    )
    .await?;
    tx.commit().await?;
    svc.jit.wake();
    Ok(dto)
}

/// The caller's requests and those they may decide (`scope`: `mine`, `approvals`, `all`).
pub async fn list(
    svc: &Services,
    who: &Principal,
    q: &AccessRequestQuery,
) -> DomainResult<Page<AccessRequestDto>> {
    use access_requests::Column as C;
    use sea_orm::{Condition, QuerySelect};
    svc.policy
        .authorize_self(who, "access_request.list")
        .await
        .map_err(|d| DomainError::forbidden(d.reason))?;
    let me = who.user_id.to_string();
    // Filtered, sorted (newest first) and paged in the database: the projects the caller
    // approves for are known before the rows are read.
    let approves = approver_projects(svc, who).await?;
    let mine = || Condition::all().add(C::RequesterId.eq(me.clone()));
    let theirs = || match &approves {
        Approves::Every => Some(Condition::all().add(C::RequesterId.ne(me.clone()))),
        Approves::Some(ids) if ids.is_empty() => None,
        Approves::Some(ids) => Some(
            Condition::all()
                .add(C::RequesterId.ne(me.clone()))
                .add(C::ProjectId.is_in(ids.iter().cloned())),
        ),
    };
    let shown = match q.scope.unwrap_or_default() {
        RequestScope::Mine => Some(mine()),
        RequestScope::Approvals => theirs(),
        RequestScope::All => Some(match theirs() {
            Some(t) => Condition::any().add(mine()).add(t),
            None => mine(),
        }),
    };
    let Some(shown) = shown else {
        return Ok(Page {
            items: vec![],
            next: None,
        });
    };
    let mut select = access_requests::Entity::find().filter(shown);
    if let Some(st) = q.status {
        select = select.filter(C::Status.eq(st.as_str()));
    }
    if let Some(key) = super::cursor::decode("access_requests", q.cursor.as_deref())? {
        let (at, id) = key
            .split_once('-')
            .and_then(|(n, id)| Some((i64::MAX - n.parse::<i64>().ok()?, id.to_owned())))
            .ok_or_else(|| DomainError::invalid("cursor", "not a cursor of this list"))?;
        select = select.filter(
            Condition::any()
                .add(C::CreatedAt.lt(at))
                .add(Condition::all().add(C::CreatedAt.eq(at)).add(C::Id.gt(id))),
        );
    }
    let limit = super::cursor::limit(q.limit);
    let mut rows = select
        .order_by_desc(C::CreatedAt)
        .order_by_asc(C::Id)
        .limit(limit + 1)
        .all(&svc.db)
        .await?;
    let key = |r: &access_requests::Model| format!("{:020}-{}", i64::MAX - r.created_at, r.id);
    let next = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|r| super::cursor::encode("access_requests", &key(r)))
    } else {
        None
    };
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let approver = r.requester_id != me
            && match &approves {
                Approves::Every => true,
                Approves::Some(ids) => ids.contains(&r.project_id),
            };
        let c = context(svc, &r).await?;
        let can_decide = approver
            && (r.status == PENDING && !c.approvals.iter().any(|a| a.user_id == me)
                || r.status == APPROVED);
        items.push(to_dto(&r, &c, can_decide));
    }
    Ok(Page { items, next })
}

/// The projects whose requests someone may decide on.
enum Approves {
    /// Every project: `project.write` across the organization.
    Every,
    /// These projects (ids).
    Some(HashSet<String>),
}

/// The projects whose requests the caller may decide on (as [`approver_via`] decides for
/// one): those where they hold `project.write`, and those whose approver group they are in;
/// none while deactivated.
async fn approver_projects(svc: &Services, who: &Principal) -> DomainResult<Approves> {
    use sea_orm::{Condition, QuerySelect};
    let eff = svc.policy.effective(who.user_id).await?;
    if !eff.active {
        return Ok(Approves::Some(HashSet::new()));
    }
    if eff.holds(Permission::ProjectWrite, &Target::Org) {
        return Ok(Approves::Every);
    }
    let administered: Vec<String> = eff
        .all_projects
        .iter()
        .filter(|p| eff.holds(Permission::ProjectWrite, &Target::Project((*p).clone())))
        .cloned()
        .collect();
    // Groups that approve: *All users* never does (see `approver_group_that_chooses`).
    use sea_orm::sea_query::ExprTrait;
    let in_groups = sea_orm::sea_query::Query::select()
        .column((group_members::Entity, group_members::Column::GroupId))
        .from(group_members::Entity)
        .inner_join(
            groups::Entity,
            sea_orm::sea_query::Expr::col((groups::Entity, groups::Column::Id))
                .equals((group_members::Entity, group_members::Column::GroupId)),
        )
        .and_where(
            sea_orm::sea_query::Expr::col((group_members::Entity, group_members::Column::UserId))
                .eq(who.user_id.to_string()),
        )
        .and_where(
            sea_orm::sea_query::Expr::col((groups::Entity, groups::Column::Name))
                .ne(crate::bootstrap::ALL_USERS_GROUP),
        )
        .to_owned();
    let mut cond = Condition::any().add(projects::Column::ApproverGroupId.in_subquery(in_groups));
    if !administered.is_empty() {
        cond = cond.add(projects::Column::Name.is_in(administered));
    }
    let ids: Vec<String> = projects::Entity::find()
        .select_only()
        .column(projects::Column::Id)
        .filter(cond)
        .into_tuple()
        .all(&svc.db)
        .await?;
    Ok(Approves::Some(ids.into_iter().collect()))
}

/// One request, for its requester and its approvers.
pub async fn get(svc: &Services, who: &Principal, id: &str) -> DomainResult<AccessRequestDto> {
    svc.policy
        .authorize_self(who, "access_request.read")
        .await
        .map_err(|d| DomainError::forbidden(d.reason))?;
    let r = find(svc, id).await?;
    let c = context(svc, &r).await?;
    let mine = r.requester_id == who.user_id.to_string();
    let approver = !mine && approver_via(svc, who.user_id, &c.project).await?.is_some();
    if !mine && !approver {
        return Err(DomainError::not_found("access request"));
    }
    let me = who.user_id.to_string();
    let can_decide = approver
        && (r.status == PENDING && !c.approvals.iter().any(|a| a.user_id == me)
            || r.status == APPROVED);
    Ok(to_dto(&r, &c, can_decide))
}

/// The console's badge: pending requests the caller may decide, and their own pending ones.
/// Counted in the database on every page load, whatever the number of requests: two
/// counts, and the approvals of the pending requests the caller approves for.
pub async fn inbox(svc: &Services, who: &Principal) -> DomainResult<AccessInbox> {
    use access_requests::Column as C;
    use sea_orm::{PaginatorTrait, QuerySelect};
    svc.policy
        .authorize_self(who, "access_request.list")
        .await
        .map_err(|d| DomainError::forbidden(d.reason))?;
    let me = who.user_id.to_string();
    let pending_mine = access_requests::Entity::find()
        .filter(C::RequesterId.eq(me.clone()))
        .filter(C::Status.eq(PENDING))
        .count(&svc.db)
        .await?;
    let theirs = match approver_projects(svc, who).await? {
        Approves::Every => Some(access_requests::Entity::find()),
        Approves::Some(ids) if ids.is_empty() => None,
        Approves::Some(ids) => {
            Some(access_requests::Entity::find().filter(C::ProjectId.is_in(ids)))
        }
    };
    let to_decide = match theirs {
        None => 0,
        Some(select) => {
            // Those the caller has not approved yet (approvals are a JSON list per request).
            let approvals: Vec<String> = select
                .select_only()
                .column(C::Approvals)
                .filter(C::RequesterId.ne(me.clone()))
                .filter(C::Status.eq(PENDING))
                .into_tuple()
                .all(&svc.db)
                .await?;
            approvals
                .iter()
                .filter(|a| {
                    !serde_json::from_str::<Vec<Approval>>(a)
                        .unwrap_or_default()
                        .iter()
                        .any(|a| a.user_id == me)
                })
                .count() as u64
        }
    };
    // Organization administrators are alerted of every break-glass grant in force.
    let eff = svc.policy.effective(who.user_id).await?;
    let break_glass_active = if eff.org_permissions().contains(&Permission::ProjectWrite) {
        access_requests::Entity::find()
            .filter(C::BreakGlass.eq(true))
            .filter(C::Status.eq(APPROVED))
            .filter(C::GrantExpiresAt.gt(svc.clock.now().millis()))
            .count(&svc.db)
            .await?
    } else {
        0
    };
    Ok(AccessInbox {
        break_glass_active,
        to_decide,
        pending_mine,
    })
}

/// A pending request past its lifetime becomes `expired` (audited once, by the system).
async fn lapse(svc: &Services, r: &access_requests::Model, now: Timestamp) -> DomainResult<bool> {
    if r.status != PENDING || now.millis() < r.expires_at {
        return Ok(false);
    }
    let tx = crate::audit::begin_change(&svc.db).await?;
    let updated = access_requests::Entity::update_many()
        .col_expr(
            access_requests::Column::Status,
            sea_orm::sea_query::Expr::value(EXPIRED),
        )
        .col_expr(
            access_requests::Column::DecidedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(access_requests::Column::Id.eq(r.id.clone()))
        .filter(access_requests::Column::Status.eq(PENDING))
        .exec(&tx)
        .await?;
    if updated.rows_affected > 0 {
        let c = context(svc, r).await?;
        record(
            &tx,
            svc,
            None,
            "access_request.expired",
            r,
            &c,
            Some(format!(
                "nobody decided before {}",
                Timestamp(r.expires_at).rfc3339()
            )),
            json!({}),
        )
        .await?;
        let mut after = r.clone();
        after.status = EXPIRED.to_owned();
        let dto = to_dto(&after, &c, false);
        notify(
            &tx,
            svc,
            "access_request.expired",
            format!("Expired without a decision: {}", describe(r, &c)),
            &dto,
        )
        .await?;
        tx.commit().await?;
        svc.jit.wake();
    }
    Ok(true)
}

/// Lapse every pending request past its lifetime. The server runs this every second.
pub async fn expire_due(svc: &Services) -> DomainResult<usize> {
    let now = svc.clock.now();
    let due = access_requests::Entity::find()
        .filter(access_requests::Column::Status.eq(PENDING))
        .filter(access_requests::Column::ExpiresAt.lte(now.millis()))
        .all(&svc.db)
        .await?;
    let mut n = 0;
    for r in due {
        if lapse(svc, &r, now).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// A pending request, or `Conflict` saying what became of it.
async fn pending(svc: &Services, id: &str) -> DomainResult<access_requests::Model> {
    let r = find(svc, id).await?;
    if lapse(svc, &r, svc.clock.now()).await? {
        return Err(DomainError::conflict(
            "status",
            "the request expired before anyone decided",
        ));
    }
    if r.status != PENDING {
        return Err(DomainError::conflict(
            "status",
            format!("the request is already {}", r.status),
        ));
    }
    Ok(r)
}

pub async fn approve(
    svc: &Services,
    who: &Principal,
    id: &str,
    d: DecideAccessRequest,
) -> DomainResult<AccessRequestDto> {
    let r = find(svc, id).await?;
    let c = context(svc, &r).await?;
    // The approvals this decision counts on (checked again once changes are serialized).
    let seen_approvals = r.approvals.clone();
    // The grant ends when the decision says (at most as asked): an administrator whose own
    // grant ends sooner may not approve it.
    let asked = d
        .duration_secs
        .unwrap_or(r.duration_secs)
        .min(r.duration_secs);
    let until = super::bindings::Until::At(svc.clock.now().millis() + asked * 1000);
    gate_decide(svc, who, &r, &c, "access_request.approve", until).await?;
    let r = pending(svc, id).await?;
    // An approver decides on the role as it was asked for: one changed since (widened, maybe)
    // is not approved under the old request's name.
    if c.role.updated_at > r.created_at {
        return Err(DomainError::conflict(
            "role",
            format!(
                "role {} was changed after this request was made, so what it grants may not be what was asked for; deny this request and ask for it again",
                c.role.name
            ),
        ));
    }
    let comment = clean_comment(d.comment)?;
    let me = who.user_id.to_string();
    if c.approvals.iter().any(|a| a.user_id == me) {
        return Err(DomainError::conflict(
            "approvals",
            "you already approved this request; it needs another approver",
        ));
    }
    let duration = match d.duration_secs {
        Some(s) if !(MIN_DURATION_SECS..=r.duration_secs).contains(&s) => {
            return Err(DomainError::invalid(
                "duration_secs",
                format!(
                    "may shorten the request (at most {}), not lengthen it",
                    jit_duration(r.duration_secs)
                ),
            ))
        }
        Some(s) => s,
        None => r.duration_secs,
    };
    let now = svc.clock.now();
    // An earlier approval counts only while its approver still is one (active, in the approver
    // group or administering the project): else an approver about to lose that could leave
    // "1 of 2" on every pending request, and one other approver would complete them alone.
    let mut approvals = Vec::with_capacity(c.approvals.len() + 1);
    let mut voided = Vec::new();
    for a in &c.approvals {
        let holds = match crate::ids::UserId::parse(&a.user_id) {
            Some(u) => approver_via(svc, u, &c.project).await?.is_some(),
            None => false,
        };
        if holds {
            approvals.push(a.clone());
        } else {
            voided.push(a.email.clone());
        }
    }
    approvals.push(Approval {
        user_id: me.clone(),
        email: who.email.clone(),
        comment: comment.clone(),
        at: now.millis(),
    });
    let approvals_json = serde_json::to_string(&approvals).unwrap_or_else(|_| "[]".into());
    let c = Ctx { approvals, ..c };
    // Changes are serialized from here: the request as this approval found it must still be
    // what the database holds, or two approvals at the same moment (the same approver's twice,
    // or two approvers') would each count once on a stale list.
    let tx = crate::audit::begin_change(&svc.db).await?;
    let now_held = access_requests::Entity::find_by_id(r.id.clone())
        .one(&tx)
        .await?
        .ok_or_else(|| DomainError::not_found("access request"))?;
    if now_held.status != PENDING {
        return Err(DomainError::conflict(
            "status",
            format!("the request is already {}", now_held.status),
        ));
    }
    if now_held.approvals != seen_approvals {
        return Err(DomainError::conflict(
            "approvals",
            "the request was approved by someone else at the same moment; reload it and decide again",
        ));
    }
    // The role as this approval weighed it (its permissions, checked against the approver's
    // and the request's date) is the role the grant binds: an edit committed since is refused,
    // not bound under the approval of what it was.
    let role_now = roles::Entity::find_by_id(c.role.id.clone())
        .one(&tx)
        .await?;
    if role_now.as_ref() != Some(&c.role) {
        return Err(DomainError::conflict(
            "role",
            format!(
                "role {} changed while this approval was made; reload the request and decide again",
                c.role.name
            ),
        ));
    }
    // Both people as they stand now: a requester deactivated (or an approver) since the checks
    // above would otherwise be granted a role that comes back with a reactivation.
    for (person, field, says) in [
        (
            &r.requester_id,
            "requester",
            "the requester's account was deactivated; the request cannot be approved",
        ),
        (
            &who.user_id.to_string(),
            "approver",
            "your account was deactivated",
        ),
    ] {
        let active = users::Entity::find_by_id(person.clone())
            .one(&tx)
            .await?
            .is_some_and(|u| u.status == crate::identity::accounts::STATUS_ACTIVE);
        if !active {
            return Err(DomainError::conflict(field, says));
        }
    }
    if (c.approvals.len() as u32) < c.needed {
        let mut a = r.clone().into_active_model();
        a.approvals = Set(approvals_json);
        a.duration_secs = Set(duration);
        let m = a.update(&tx).await?;
        let dto = to_dto(&m, &c, false);
        record(
            &tx,
            svc,
            Some(who),
            "access_request.approve",
            &m,
            &c,
            comment,
            json!({ "approvals": c.approvals.len(), "approvals_needed": c.needed, "duration_secs": duration, "approvals_voided": voided }),
        )
        .await?;
        notify(
            &tx,
            svc,
            "access_request.approve",
            format!(
                "{} approved ({} of {}): {}",
                who.email,
                c.approvals.len(),
                c.needed,
                describe(&m, &c)
            ),
            &dto,
        )
        .await?;
        tx.commit().await?;
        svc.jit.wake();
        return Ok(dto);
    }
    // The last approval: the grant, as a time-bound binding of the requester.
    let expires_at = now.millis() + duration * 1000;
    // The policy as it stands now (a cluster may have been shared into the project, or the
    // rule tightened, since the request was made): the approver may shorten, never exceed.
    if let Err(m) = super::jit_settings::check_required_expiry(
        &tx,
        &c.role.name,
        Some(&r.project_id),
        Some(expires_at),
        now,
    )
    .await?
    {
        return Err(DomainError::invalid(
            "duration_secs",
            format!("{m}: approve for less time"),
        ));
    }
    let existing = bindings::Entity::find()
        .filter(bindings::Column::UserId.eq(r.requester_id.clone()))
        .filter(bindings::Column::RoleId.eq(r.role_id.clone()))
        .filter(bindings::Column::ProjectId.eq(r.project_id.clone()))
        .filter(bindings::Column::Namespaces.eq(r.namespaces.clone()))
        .one(&tx)
        .await?;
    if let Some(b) = existing {
        if b.expires_at.is_none() {
            return Err(DomainError::conflict(
                "role",
                "the requester already holds this role there, without an expiry",
            ));
        }
        replace_grant(
            svc,
            &tx,
            who,
            &b,
            &c.role.name,
            expires_at,
            now,
            "the requester holds",
        )
        .await?;
    }
    let binding = bindings::ActiveModel::from(bindings::Model {
        id: BindingId::new().to_string(),
        subject_kind: crate::dto::SubjectKind::User.as_str().to_owned(),
        user_id: Some(r.requester_id.clone()),
        group_id: None,
        role_id: r.role_id.clone(),
        project_id: Some(r.project_id.clone()),
        namespaces: r.namespaces.clone(),
        created_at: now.millis(),
        expires_at: Some(expires_at),
        expiry_recorded_at: None,
        access_request_id: Some(r.id.clone()),
    })
    .insert(&tx)
    .await?;
    let mut a = r.clone().into_active_model();
    a.approvals = Set(approvals_json);
    a.duration_secs = Set(duration);
    a.status = Set(APPROVED.to_owned());
    a.decided_at = Set(Some(now.millis()));
    a.decided_by = Set(Some(who.email.clone()));
    a.decision_comment = Set(comment.clone());
    a.binding_id = Set(Some(binding.id.clone()));
    a.grant_expires_at = Set(Some(expires_at));
    let m = a.update(&tx).await?;
    let dto = to_dto(&m, &c, true);
    record(
        &tx,
        svc,
        Some(who),
        "access_request.approve",
        &m,
        &c,
        comment,
        json!({
            "approvals": c.approvals.len(),
            "approvals_needed": c.needed,
            "duration_secs": duration,
            "asked_secs": r.duration_secs,
            "binding_id": binding.id,
            "grant_expires_at": ts(expires_at),
        }),
    )
    .await?;
    let bdto = super::bindings::Names::load(&tx, std::slice::from_ref(&binding))
        .await?
        .dto(&binding);
    svc.audit_change(
        &tx,
        who,
        "binding.create",
        "binding",
        &super::bindings::describe(&bdto),
        Some(&c.project.name),
        None,
        Some(json!(bdto)),
    )
    .await?;
    notify(
        &tx,
        svc,
        "access_request.approved",
        format!(
            "{} approved: {} — granted until {}",
            who.email,
            describe(&m, &c),
            ts(expires_at)
        ),
        &dto,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    svc.jit.wake();
    Ok(dto)
}

pub async fn deny(
    svc: &Services,
    who: &Principal,
    id: &str,
    d: DecideAccessRequest,
) -> DomainResult<AccessRequestDto> {
    let r = find(svc, id).await?;
    let c = context(svc, &r).await?;
    gate_decide(
        svc,
        who,
        &r,
        &c,
        "access_request.deny",
        super::bindings::Until::Now,
    )
    .await?;
    let r = pending(svc, id).await?;
    let comment = clean_comment(d.comment)?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    let m = close_pending(svc, &tx, &r, DENIED, who, comment.clone()).await?;
    let dto = to_dto(&m, &c, false);
    record(
        &tx,
        svc,
        Some(who),
        "access_request.deny",
        &m,
        &c,
        comment,
        json!({}),
    )
    .await?;
    notify(
        &tx,
        svc,
        "access_request.denied",
        format!("{} denied: {}", who.email, describe(&m, &c)),
        &dto,
    )
    .await?;
    tx.commit().await?;
    svc.jit.wake();
    Ok(dto)
}

/// A time-bound binding of the same shape as a new grant (same user, role, project and
/// namespaces) is replaced by it when it has ended or ends sooner, and that removal is audited
/// (`binding.delete`, before the new `binding.create`); one ending later is kept, and the new
/// grant refused (409), so an approval for an hour never takes away a grant for the quarter.
#[allow(clippy::too_many_arguments)]
async fn replace_grant<C: sea_orm::ConnectionTrait>(
    svc: &Services,
    tx: &C,
    who: &Principal,
    b: &bindings::Model,
    role: &str,
    expires_at: i64,
    now: crate::clock::Timestamp,
    holder: &str,
) -> DomainResult<()> {
    let ends = b.expires_at.unwrap_or(i64::MAX);
    if ends > now.millis() && ends > expires_at {
        return Err(DomainError::conflict(
            "duration_secs",
            format!(
                "{holder} {role} there until {}, longer than this grant",
                crate::clock::Timestamp(ends).rfc3339()
            ),
        ));
    }
    // The request whose grant this was ends with it: its grant is over (shown as expired), and
    // *Revoke* on it is refused rather than answered as if it took the access away, which the
    // new grant holds now.
    if let Some(rid) = &b.access_request_id {
        use sea_orm::sea_query::Expr;
        access_requests::Entity::update_many()
            .col_expr(
                access_requests::Column::GrantExpiresAt,
                Expr::value(now.millis()),
            )
            .filter(access_requests::Column::Id.eq(rid.clone()))
            .filter(access_requests::Column::Status.eq(APPROVED))
            .exec(tx)
            .await?;
    }
    super::bindings::delete_in(
        svc,
        tx,
        who,
        b,
        Some(json!({"replaced_by_a_grant_until": crate::clock::Timestamp(expires_at).rfc3339()})),
    )
    .await
}

/// Deny or cancel a request, only while it is still pending: an approval committed since it
/// was read wins (written unconditionally, the request would read "denied" while the binding
/// its approval made lives on, out of reach of *Revoke*).
async fn close_pending<C: sea_orm::ConnectionTrait>(
    svc: &Services,
    tx: &C,
    r: &access_requests::Model,
    status: &str,
    who: &Principal,
    comment: Option<String>,
) -> DomainResult<access_requests::Model> {
    use access_requests::Column as C;
    use sea_orm::sea_query::Expr;
    let at = svc.clock.now().millis();
    let updated = access_requests::Entity::update_many()
        .col_expr(C::Status, Expr::value(status))
        .col_expr(C::DecidedAt, Expr::value(at))
        .col_expr(C::DecidedBy, Expr::value(who.email.clone()))
        .col_expr(C::DecisionComment, Expr::value(comment.clone()))
        .filter(C::Id.eq(r.id.clone()))
        .filter(C::Status.eq(PENDING))
        .exec(tx)
        .await?;
    if updated.rows_affected == 0 {
        let now = access_requests::Entity::find_by_id(r.id.clone())
            .one(tx)
            .await?
            .map(|m| m.status)
            .unwrap_or_else(|| "gone".into());
        return Err(DomainError::conflict(
            "status",
            format!("the request is already {now}"),
        ));
    }
    let mut m = r.clone();
    m.status = status.to_owned();
    m.decided_at = Some(at);
    m.decided_by = Some(who.email.clone());
    m.decision_comment = comment;
    Ok(m)
}

/// The requester withdraws a pending request.
pub async fn cancel(svc: &Services, who: &Principal, id: &str) -> DomainResult<AccessRequestDto> {
    svc.policy
        .authorize_self(who, "access_request.cancel")
        .await
        .map_err(|d| DomainError::forbidden(d.reason))?;
    let r = find(svc, id).await?;
    if r.requester_id != who.user_id.to_string() {
        let reason = "only the requester may cancel a request";
        svc.audit_denied(who, "access_request.cancel", "access_request", id, reason)
            .await?;
        return Err(DomainError::forbidden(reason));
    }
    let r = pending(svc, id).await?;
    let c = context(svc, &r).await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    let m = close_pending(svc, &tx, &r, CANCELLED, who, None).await?;
    let dto = to_dto(&m, &c, false);
    record(
        &tx,
        svc,
        Some(who),
        "access_request.cancel",
        &m,
        &c,
        None,
        json!({}),
    )
    .await?;
    notify(
        &tx,
        svc,
        "access_request.cancelled",
        format!("Cancelled: {}", describe(&m, &c)),
        &dto,
    )
    .await?;
    tx.commit().await?;
    svc.jit.wake();
    Ok(dto)
}

/// An approver ends an approved grant before its expiry: the binding goes, and every live
/// stream and terminal that depended on it ends at once.
pub async fn revoke(
    svc: &Services,
    who: &Principal,
    id: &str,
    d: DecideAccessRequest,
) -> DomainResult<AccessRequestDto> {
    let r = find(svc, id).await?;
    let c = context(svc, &r).await?;
    gate_decide(
        svc,
        who,
        &r,
        &c,
        "access_request.revoke",
        super::bindings::Until::Now,
    )
    .await?;
    let now = svc.clock.now();
    if r.status != APPROVED || r.grant_expires_at.is_some_and(|t| t <= now.millis()) {
        return Err(DomainError::conflict(
            "status",
            format!(
                "only a grant still in force can be revoked (the request is {})",
                if r.status == APPROVED {
                    "expired"
                } else {
                    r.status.as_str()
                }
            ),
        ));
    }
    let comment = clean_comment(d.comment)?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    // Read and ended inside the transaction, only while the grant is still in force: of two
    // revocations at once one wins, and a grant that no longer exists (replaced by another of
    // the same shape) is not reported as taken away.
    let binding = match &r.binding_id {
        Some(b) => bindings::Entity::find_by_id(b.clone()).one(&tx).await?,
        None => None,
    };
    if r.binding_id.is_some() && binding.is_none() {
        return Err(DomainError::conflict(
            "status",
            "this request's grant no longer exists (another grant of the same role there replaced it): revoke that one, or remove the binding",
        ));
    }
    {
        use access_requests::Column as C;
        use sea_orm::sea_query::Expr;
        let ended = access_requests::Entity::update_many()
            .col_expr(C::Status, Expr::value(REVOKED))
            .col_expr(C::GrantExpiresAt, Expr::value(now.millis()))
            .filter(C::Id.eq(r.id.clone()))
            .filter(C::Status.eq(APPROVED))
            .filter(
                sea_orm::Condition::any()
                    .add(C::GrantExpiresAt.is_null())
                    .add(C::GrantExpiresAt.gt(now.millis())),
            )
            .exec(&tx)
            .await?
            .rows_affected;
        if ended == 0 {
            return Err(DomainError::conflict(
                "status",
                "only a grant still in force can be revoked (it has ended since)",
            ));
        }
    }
    let m = access_requests::Entity::find_by_id(r.id.clone())
        .one(&tx)
        .await?
        .ok_or_else(|| DomainError::not_found("access request"))?;
    let dto = to_dto(&m, &c, false);
    record(
        &tx,
        svc,
        Some(who),
        "access_request.revoke",
        &m,
        &c,
        comment,
        json!({ "binding_id": r.binding_id }),
    )
    .await?;
    if let Some(b) = &binding {
        super::bindings::delete_in(svc, &tx, who, b, None).await?;
    }
    notify(
        &tx,
        svc,
        "access_request.revoked",
        format!("{} revoked early: {}", who.email, describe(&m, &c)),
        &dto,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    svc.jit.wake();
    Ok(dto)
}

// ---- the project's approver group ----

pub async fn get_approver_group(
    svc: &Services,
    who: &Principal,
    project: &str,
) -> DomainResult<ApproverGroupDto> {
    let p = super::projects::find_gated(svc, who, project, Permission::ProjectRead).await?;
    let group = match &p.approver_group_id {
        Some(g) => groups::Entity::find_by_id(g.clone())
            .one(&svc.db)
            .await?
            .map(|g| g.name),
        None => None,
    };
    Ok(ApproverGroupDto { group })
}

/// The approver group and, for those who may change the project (checked without a denial
/// record: a reader is simply shown no form), the groups to choose from. Changing it goes
/// through [`set_approver_group`] and its gate.
pub async fn approver_group_form(
    svc: &Services,
    who: &Principal,
    project: &str,
) -> DomainResult<crate::dto::ApproverGroupForm> {
    let current = get_approver_group(svc, who, project).await?;
    let p = super::projects::find(&svc.db, project).await?;
    let rights = svc.policy.effective(who.user_id).await?;
    let writable = rights.holds(Permission::ProjectWrite, &Target::Project(p.name.clone()));
    let mut choices: Vec<String> = if !writable {
        vec![]
    } else if rights.holds(Permission::GroupRead, &Target::Org) {
        groups::Entity::find()
            .all(&svc.db)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect()
    } else {
        // A project's administrator who may not read the organization's groups chooses among
        // those the project already names (other group names are not theirs to learn; one they
        // know can still be typed, and is checked when set).
        use crate::entities::bindings;
        use sea_orm::{ColumnTrait, QueryFilter, QuerySelect};
        let bound: Vec<Option<String>> = bindings::Entity::find()
            .select_only()
            .column(bindings::Column::GroupId)
            .filter(bindings::Column::ProjectId.eq(p.id.clone()))
            .filter(bindings::Column::GroupId.is_not_null())
            .distinct()
            .into_tuple()
            .all(&svc.db)
            .await?;
        let mut ids: Vec<String> = bound.into_iter().flatten().collect();
        ids.extend(p.approver_group_id.clone());
        groups::Entity::find()
            .filter(groups::Column::Id.is_in(ids))
            .all(&svc.db)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect()
    };
    choices.retain(|g| g != crate::bootstrap::ALL_USERS_GROUP);
    choices.sort_by_key(|g| g.to_lowercase());
    Ok(crate::dto::ApproverGroupForm {
        group: current.group,
        choices,
        writable,
    })
}

pub async fn set_approver_group(
    svc: &Services,
    who: &Principal,
    project: &str,
    req: ApproverGroupDto,
) -> DomainResult<ApproverGroupDto> {
    let p = super::projects::find_gated(svc, who, project, Permission::ProjectWrite).await?;
    // The group will approve any of the project's roles: only someone holding all of it there
    // may name (or change) who does.
    super::bindings::refuse_escalation(
        svc,
        who,
        &[super::bindings::approver_handout(&p.name)],
        "project.approver_group.update",
        "project",
        &p.name,
    )
    .await?;
    let before = get_approver_group(svc, who, &p.name).await?;
    let group = match req
        .group
        .as_ref()
        .map(|g| g.trim())
        .filter(|g| !g.is_empty())
    {
        Some(g) if g == crate::bootstrap::ALL_USERS_GROUP => {
            return Err(DomainError::invalid(
                "group",
                format!(
                    "{g:?} cannot approve: every new account joins it, so anyone who can make an account could approve their own request; name a group whose members are chosen"
                ),
            ))
        }
        Some(g) => Some(
            super::groups::find(&svc.db, g)
                .await
                .map_err(|_| DomainError::invalid("group", format!("no group named {g:?}")))?,
        ),
        None => None,
    };
    let mut a = p.clone().into_active_model();
    let tx = crate::audit::begin_change(&svc.db).await?;
    a.approver_group_id = Set(group.as_ref().map(|g| g.id.clone()));
    a.update(&tx).await?;
    let after = ApproverGroupDto {
        group: group.map(|g| g.name),
    };
    svc.audit_change(
        &tx,
        who,
        "project.approver_group.update",
        "project",
        &p.name,
        Some(&p.name),
        Some(json!(before)),
        Some(json!(after)),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// The roles one may ask for (project and namespace roles), as `(name, scope)`: what the
/// console's request form offers.
pub async fn requestable_roles(
    svc: &Services,
    who: &Principal,
) -> DomainResult<Vec<(String, String)>> {
    svc.policy
        .authorize_self(who, "access_request.roles")
        .await
        .map_err(|d| DomainError::forbidden(d.reason))?;
    let mut out: Vec<(String, String)> = roles::Entity::find()
        .all(&svc.db)
        .await?
        .into_iter()
        .filter(|r| r.scope == "project" || r.scope == "namespace")
        .map(|r| (r.name, r.scope))
        .collect();
    out.sort();
    Ok(out)
}

/// A refused break-glass: audited as denied (the refusal is the error unless the audit fails),
/// answered as `as_error` says.
async fn refuse_break_glass(
    svc: &Services,
    who: &Principal,
    role: &str,
    reason: String,
    as_error: fn(String) -> DomainError,
) -> DomainError {
    match svc
        .audit_denied(
            who,
            "access_request.break_glass",
            "access_request",
            role,
            &reason,
        )
        .await
    {
        Ok(()) => as_error(reason),
        Err(e) => e,
    }
}

fn in_conflict(reason: String) -> DomainError {
    DomainError::conflict("role", reason)
}

/// Break-glass: an active user takes one of the organization's break-glass roles at once,
/// without approval, for at most the role's maximum, giving a reason. The grant is a
/// time-bound binding like an approved request's; every organization administrator is alerted
/// (their inbox, the webhook) and the audit event is marked (`details.break_glass`).
pub async fn break_glass(
    svc: &Services,
    who: &Principal,
    req: CreateAccessRequest,
) -> DomainResult<AccessRequestDto> {
    svc.policy
        .authorize_self(who, "access_request.break_glass")
        .await
        .map_err(|d| DomainError::forbidden(d.reason))?;
    let now = svc.clock.now();
    let settings = super::jit_settings::load(&svc.db).await?;
    let asked_role = req.role.trim().to_owned();
    let duration = req.duration_secs;
    let p = prepare(svc, req).await?;
    let Some(rule) = settings
        .break_glass_roles
        .iter()
        .find(|r| r.role == p.role.name)
    else {
        let reason = format!("{asked_role} is not a break-glass role of the organization");
        return Err(
            refuse_break_glass(svc, who, &p.role.name, reason, DomainError::forbidden).await,
        );
    };
    if duration > rule.max_secs {
        return Err(DomainError::invalid(
            "duration_secs",
            format!(
                "break-glass {} lasts at most {}",
                p.role.name,
                jit_duration(rule.max_secs)
            ),
        ));
    }
    let me = who.user_id.to_string();
    let lately = sea_orm::PaginatorTrait::count(
        access_requests::Entity::find()
            .filter(access_requests::Column::RequesterId.eq(me.clone()))
            .filter(access_requests::Column::BreakGlass.eq(true))
            .filter(access_requests::Column::CreatedAt.gt(now.millis() - 86_400_000)),
        &svc.db,
    )
    .await?;
    if lately >= MAX_BREAK_GLASS_PER_DAY {
        let reason = format!(
            "you took break-glass access {lately} times in the last 24 hours, the most one person may; ask for access in a request"
        );
        return Err(refuse_break_glass(svc, who, &p.role.name, reason, in_conflict).await);
    }
    let ns_json = serde_json::to_string(&p.namespaces).unwrap_or_else(|_| "[]".into());
    let expires_at = now.millis() + duration * 1000;
    let tx = crate::audit::begin_change(&svc.db).await?;
    if let Err(m) = super::jit_settings::check_required_expiry(
        &tx,
        &p.role.name,
        Some(&p.project.id),
        Some(expires_at),
        now,
    )
    .await?
    {
        return Err(DomainError::invalid("duration_secs", m));
    }
    let existing = bindings::Entity::find()
        .filter(bindings::Column::UserId.eq(me.clone()))
        .filter(bindings::Column::RoleId.eq(p.role.id.clone()))
        .filter(bindings::Column::ProjectId.eq(p.project.id.clone()))
        .filter(bindings::Column::Namespaces.eq(ns_json.clone()))
        .one(&tx)
        .await?;
    if let Some(b) = existing {
        if b.expires_at.is_none() {
            return Err(DomainError::conflict(
                "role",
                "you already hold this role there, without an expiry",
            ));
        }
        // Not renewed while it lasts: taken again before each end, break-glass would be access
        // for good without anyone's approval. More time is asked for in a request.
        if let Some(ends) = b.expires_at.filter(|t| *t > now.millis()) {
            let reason = format!(
                "you hold {} there until {}: break-glass is not renewed while it lasts; ask for more time in an access request",
                p.role.name,
                crate::clock::Timestamp(ends).rfc3339()
            );
            drop(tx);
            return Err(refuse_break_glass(svc, who, &p.role.name, reason, in_conflict).await);
        }
        replace_grant(svc, &tx, who, &b, &p.role.name, expires_at, now, "you hold").await?;
    }
    let id = uuid::Uuid::new_v4().to_string();
    let binding = bindings::ActiveModel::from(bindings::Model {
        id: BindingId::new().to_string(),
        subject_kind: crate::dto::SubjectKind::User.as_str().to_owned(),
        user_id: Some(me.clone()),
        group_id: None,
        role_id: p.role.id.clone(),
        project_id: Some(p.project.id.clone()),
        namespaces: ns_json.clone(),
        created_at: now.millis(),
        expires_at: Some(expires_at),
        expiry_recorded_at: None,
        access_request_id: Some(id.clone()),
    })
    .insert(&tx)
    .await?;
    let m = access_requests::ActiveModel::from(access_requests::Model {
        id,
        requester_id: me,
        project_id: p.project.id.clone(),
        role_id: p.role.id.clone(),
        namespaces: ns_json,
        cluster: p.cluster,
        duration_secs: duration,
        reason: p.reason,
        status: APPROVED.to_owned(),
        approvals: "[]".to_owned(),
        created_at: now.millis(),
        expires_at: now.millis(),
        decided_at: Some(now.millis()),
        decided_by: Some("break-glass".to_owned()),
        decision_comment: None,
        binding_id: Some(binding.id.clone()),
        grant_expires_at: Some(expires_at),
        break_glass: true,
    })
    .insert(&tx)
    .await?;
    let c = context(svc, &m).await?;
    let dto = to_dto(&m, &c, false);
    record(
        &tx,
        svc,
        Some(who),
        "access_request.break_glass",
        &m,
        &c,
        Some(m.reason.clone()),
        json!({
            "break_glass": true,
            "binding_id": binding.id,
            "grant_expires_at": ts(expires_at),
            "after": dto,
        }),
    )
    .await?;
    notify(
        &tx,
        svc,
        "access_request.break_glass",
        format!(
            ":rotating_light: BREAK-GLASS: {} took {} on {} until {} ({}): {}",
            who.email,
            c.role.name,
            c.project.name,
            ts(expires_at),
            m.reason,
            request_link(svc, &m.id)
        ),
        &dto,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    svc.jit.wake();
    Ok(dto)
}
