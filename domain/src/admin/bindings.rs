//! Role bindings: a user or group holds a role at organization, project, or project +
//! namespaces scope. A subject may hold several bindings in one project.

use sea_orm::ExprTrait;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};

use super::ts;
use crate::access::{Action, Principal, Target};
use crate::dto::{BindingDto, BindingQuery, CreateBindingRequest, Page, SubjectKind, SubjectRef};
use crate::entities::{bindings, groups, projects, roles, users};
use crate::error::{DomainError, DomainResult};
use crate::ids::BindingId;
use crate::permissions::{Permission, Scope};
use crate::types::{DnsLabel, Email};
use crate::Services;

/// Lookup tables to render bindings without a query per row.
pub(crate) struct Names {
    users: HashMap<String, String>,
    groups: HashMap<String, String>,
    roles: HashMap<String, (String, String)>,
    projects: HashMap<String, String>,
}

impl Names {
    /// The names `rows` refer to (their users, groups, roles and projects), and only those:
    /// four small keyed queries, whatever the size of the organization.
    pub(crate) async fn load<C: ConnectionTrait>(
        db: &C,
        rows: &[bindings::Model],
    ) -> DomainResult<Self> {
        use std::collections::BTreeSet;
        let ids = |f: &dyn Fn(&bindings::Model) -> Option<String>| -> Vec<String> {
            rows.iter()
                .filter_map(f)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let (user_ids, group_ids, role_ids, project_ids) = (
            ids(&|b| b.user_id.clone()),
            ids(&|b| b.group_id.clone()),
            ids(&|b| Some(b.role_id.clone())),
            ids(&|b| b.project_id.clone()),
        );
        let mut names = Self {
            users: HashMap::new(),
            groups: HashMap::new(),
            roles: HashMap::new(),
            projects: HashMap::new(),
        };
        // In chunks: a statement's bound parameters are limited.
        for chunk in user_ids.chunks(1000) {
            names.users.extend(
                users::Entity::find()
                    .filter(users::Column::Id.is_in(chunk.to_vec()))
                    .all(db)
                    .await?
                    .into_iter()
                    .map(|u| (u.id, u.email)),
            );
        }
        for chunk in group_ids.chunks(1000) {
            names.groups.extend(
                groups::Entity::find()
                    .filter(groups::Column::Id.is_in(chunk.to_vec()))
                    .all(db)
                    .await?
                    .into_iter()
                    .map(|g| (g.id, g.name)),
            );
        }
        for chunk in role_ids.chunks(1000) {
            names.roles.extend(
                roles::Entity::find()
                    .filter(roles::Column::Id.is_in(chunk.to_vec()))
                    .all(db)
                    .await?
                    .into_iter()
                    .map(|r| (r.id, (r.name, r.scope))),
            );
        }
        for chunk in project_ids.chunks(1000) {
            names.projects.extend(
                projects::Entity::find()
                    .filter(projects::Column::Id.is_in(chunk.to_vec()))
                    .all(db)
                    .await?
                    .into_iter()
                    .map(|p| (p.id, p.name)),
            );
        }
        Ok(names)
    }

    pub(crate) fn dto(&self, b: &bindings::Model) -> BindingDto {
        let subject = match (&b.user_id, &b.group_id) {
            (Some(u), _) => SubjectRef {
                kind: SubjectKind::User,
                name: self.users.get(u).cloned().unwrap_or_default(),
            },
            (_, Some(g)) => SubjectRef {
                kind: SubjectKind::Group,
                name: self.groups.get(g).cloned().unwrap_or_default(),
            },
            _ => SubjectRef {
                kind: SubjectKind::parse(&b.subject_kind).unwrap_or(SubjectKind::User),
                name: String::new(),
            },
        };
        let (role, scope) = self.roles.get(&b.role_id).cloned().unwrap_or_default();
        BindingDto {
            id: b.id.clone(),
            subject,
            role,
            scope: crate::permissions::Scope::from_stored(&scope),
            project: b
                .project_id
                .as_ref()
                .and_then(|p| self.projects.get(p).cloned()),
            namespaces: serde_json::from_str(&b.namespaces).unwrap_or_default(),
            created_at: ts(b.created_at),
            expires_at: b.expires_at.map(ts),
            access_request: b.access_request_id.clone(),
            warnings: vec![],
        }
    }
}

pub fn describe(d: &BindingDto) -> String {
    let at = match (&d.project, d.namespaces.is_empty()) {
        (None, _) => "the organization".to_owned(),
        (Some(p), true) => format!("project {p}"),
        (Some(p), false) => format!("namespaces {} of project {p}", d.namespaces.join(", ")),
    };
    format!(
        "{} {} holds {} on {at}",
        d.subject.kind, d.subject.name, d.role
    )
}

pub(crate) async fn describe_all<C: ConnectionTrait>(
    db: &C,
    rows: &[bindings::Model],
) -> DomainResult<Vec<String>> {
    let names = Names::load(db, rows).await?;
    Ok(rows.iter().map(|b| describe(&names.dto(b))).collect())
}

/// The permission needed to create or delete a binding of this shape.
async fn gate_for(svc: &Services, who: &Principal, project: Option<&str>) -> DomainResult<()> {
    match project {
        None => svc
            .gate(who, Action::org(Permission::UserWrite))
            .await
            .map(|_| ()),
        Some(p) => svc
            .gate(who, Action::project(Permission::ProjectWrite, p))
            .await
            .map(|_| ()),
    }
}

/// Something a change would hand out: permissions at targets (what a new binding grants,
/// what a widened role adds where it is bound, what a group's bindings give a new member).
pub(crate) struct Handout {
    /// In words, for the audit log: `user x holds ROLE on project p`.
    pub what: String,
    pub permissions: Vec<Permission>,
    pub targets: Vec<Target>,
    /// For how long it is handed out: no one hands out for longer than they hold it (a grant
    /// of an hour, approved or taken as break-glass, does not make a permanent one).
    pub until: Until,
}

/// How long a [`Handout`] lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Until {
    /// Taken away, not handed out: holding it now is enough.
    Now,
    /// Until this instant (ms).
    At(i64),
    /// Until removed.
    Forever,
}

impl Until {
    /// A binding's end: `expires_at`, or never.
    pub(crate) fn of(expires_at: Option<i64>) -> Self {
        expires_at.map_or(Until::Forever, Until::At)
    }

    /// Whether handing out this long outlasts a grant held until `held` (`None`: until removed).
    fn outlasts(self, held: Option<i64>) -> bool {
        match (self, held) {
            (Until::Now, _) | (_, None) => false,
            (Until::Forever, Some(_)) => true,
            (Until::At(u), Some(h)) => u > h,
        }
    }
}

impl Handout {
    /// What the same grants are when taken away rather than handed out ([`Until::Now`]).
    pub(crate) fn taken_away(mut self) -> Self {
        self.until = Until::Now;
        self
    }

    /// A break-glass role is anyone's on any project for the taking, without approval: making a
    /// role break-glass, or widening one that is, hands `permissions` out organization-wide.
    pub(crate) fn break_glass(role: &str, permissions: Vec<Permission>) -> Self {
        Self {
            what: format!("break-glass role {role} on every project"),
            permissions,
            targets: vec![Target::Org],
            until: Until::Forever,
        }
    }
}

/// The permissions a role grants, read the way the gate reads them (unknown names and names
/// above the role's scope grant nothing).
pub(crate) fn granted_by(role: &roles::Model) -> Vec<Permission> {
    let Some(scope) = Scope::parse(&role.scope) else {
        return vec![];
    };
    super::roles::permissions_of(role)
        .iter()
        .filter_map(|n| Permission::parse(n))
        .filter(|p| p.allowed_in(scope))
        .collect()
}

/// Where a binding applies, as the gate's targets.
pub(crate) fn targets(project: Option<&str>, namespaces: &[String]) -> Vec<Target> {
    match project {
        None => vec![Target::Org],
        Some(p) if namespaces.is_empty() => vec![Target::Project(p.to_owned())],
        Some(p) => namespaces
            .iter()
            .map(|n| Target::Namespace {
                project: p.to_owned(),
                namespace: n.clone(),
            })
            .collect(),
    }
}

/// What existing bindings hand out: each one's role permissions (or only `permissions`, when
/// given) at the binding's targets. Bindings of a deleted role or project grant nothing.
pub(crate) async fn handouts<C: ConnectionTrait>(
    db: &C,
    rows: &[bindings::Model],
    permissions: Option<&[Permission]>,
) -> DomainResult<Vec<Handout>> {
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let names = Names::load(db, rows).await?;
    let role_rows: HashMap<String, roles::Model> = roles::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let mut out = Vec::new();
    for b in rows {
        let Some(role) = role_rows.get(&b.role_id) else {
            continue;
        };
        let project = match &b.project_id {
            Some(pid) => match names.projects.get(pid) {
                Some(name) => Some(name.as_str()),
                None => continue,
            },
            None => None,
        };
        let namespaces: Vec<String> = serde_json::from_str(&b.namespaces).unwrap_or_default();
        out.push(Handout {
            what: describe(&names.dto(b)),
            permissions: match permissions {
                Some(only) => only.to_vec(),
                None => granted_by(role),
            },
            targets: targets(project, &namespaces),
            until: Until::of(b.expires_at),
        });
    }
    Ok(out)
}

/// What membership of a project's approver group carries: approving access requests for any
/// of the project's roles, that is handing out every permission a project role can carry
/// there (`project.write` alone would let a membership manager without cluster rights make a
/// friend an approver, who then grants them `CLUSTER_ADMIN`).
pub(crate) fn approver_handout(project: &str) -> Handout {
    Handout {
        what: format!("approver of access requests for project {project}"),
        permissions: Permission::ALL
            .iter()
            .copied()
            .filter(|p| p.allowed_in(Scope::Project))
            .collect(),
        targets: vec![Target::Project(project.to_owned())],
        until: Until::Forever,
    }
}

/// What membership of these groups carries besides their bindings: approving access requests
/// for the projects whose approver group one of them is ([`approver_handout`]).
pub(crate) async fn approver_handouts<C: ConnectionTrait>(
    db: &C,
    group_ids: &[String],
) -> DomainResult<Vec<Handout>> {
    if group_ids.is_empty() {
        return Ok(vec![]);
    }
    Ok(projects::Entity::find()
        .filter(projects::Column::ApproverGroupId.is_in(group_ids.iter().cloned()))
        .all(db)
        .await?
        .into_iter()
        .map(|p| approver_handout(&p.name))
        .collect())
}

/// For powers as good as everything (a sign-in provider, the audit log's retention): refused,
/// and audited, unless `who` holds every permission an organization-wide grant can carry.
pub(crate) async fn refuse_unless_everything_held(
    svc: &Services,
    who: &Principal,
    why: &str,
    action: &str,
    kind: &str,
    name: &str,
) -> DomainResult<()> {
    let everything = Handout {
        what: why.to_owned(),
        permissions: Permission::ALL
            .iter()
            .copied()
            .filter(|p| p.allowed_in(Scope::Organization))
            .collect(),
        targets: vec![Target::Org],
        until: Until::Forever,
    };
    refuse_escalation(svc, who, &[everything], action, kind, name).await
}

/// No escalation: a user may hand out only permissions they hold themselves wherever the
/// grant applies (organization administrators hold everything at organization scope, which
/// covers every project and namespace). A refusal is audited as a denial of `action` on
/// `kind`/`name` and answered `Forbidden`. Handing out also takes a fresh second factor
/// ([`refuse_stale_second_factor`]).
pub(crate) async fn refuse_escalation(
    svc: &Services,
    who: &Principal,
    handouts: &[Handout],
    action: &str,
    kind: &str,
    name: &str,
) -> DomainResult<()> {
    if let Some(gap) = first_not_held(svc, who, handouts).await? {
        let reason = match gap.held_until {
            None => format!(
                "cannot hand out {} on {} ({}): the granter does not hold it there",
                gap.permission.name(),
                gap.target.describe(),
                gap.what,
            ),
            Some(end) => format!(
                "cannot hand out {} on {} ({}) for longer than the granter holds it there: their grant ends at {}; give this one an expiry no later than that",
                gap.permission.name(),
                gap.target.describe(),
                gap.what,
                crate::clock::Timestamp(end).rfc3339(),
            ),
        };
        svc.audit_denied(who, action, kind, name, &reason).await?;
        return Err(DomainError::forbidden(reason));
    }
    // Handing out (not taking away) takes a fresh second factor: the session alone must not
    // make its taker, or an account of theirs, an administrator.
    if handouts.iter().any(|h| h.until != Until::Now) {
        refuse_stale_second_factor(svc, who, action, kind, name).await?;
    }
    Ok(())
}

/// Step-up for what gives access away (a grant, a membership, a loosened safeguard, another
/// person's account as a whole): from a browser session whose second factor is older than
/// the organization's step-up age (a console left open, its cookie taken), a fresh code
/// first, as a terminal takes. Refused `StepUpRequired` (403 `step_up_required`), audited as
/// a denial of `action` on `kind`/`name`. Other credentials are not asked: API keys are made
/// with a fresh code, and Warden's own work is no session.
pub(crate) async fn refuse_stale_second_factor(
    svc: &Services,
    who: &Principal,
    action: &str,
    kind: &str,
    name: &str,
) -> DomainResult<()> {
    if !crate::identity::mfa::second_factor_is_stale(svc, who).await? {
        return Ok(());
    }
    svc.audit_denied(
        who,
        action,
        kind,
        name,
        "the last second factor is older than the organization's step-up age",
    )
    .await?;
    Err(DomainError::StepUpRequired)
}

/// A permission at a target that a handout needs and its granter lacks: not held there at all
/// (`held_until: None`), or held only until `held_until`, sooner than the handout ends.
struct Gap<'a> {
    permission: Permission,
    target: &'a Target,
    what: &'a str,
    held_until: Option<i64>,
}

/// The first permission of `handouts`, with its target, that `who` does not hold there for as
/// long as it is handed out.
async fn first_not_held<'a>(
    svc: &Services,
    who: &Principal,
    handouts: &'a [Handout],
) -> DomainResult<Option<Gap<'a>>> {
    let eff = svc.policy.effective(who.user_id).await?;
    Ok(handouts.iter().find_map(|h| {
        h.permissions.iter().find_map(|p| {
            h.targets.iter().find_map(|t| {
                let gap = |held_until| Gap {
                    permission: *p,
                    target: t,
                    what: h.what.as_str(),
                    held_until,
                };
                match eff.held_until(*p, t) {
                    None => Some(gap(None)),
                    Some(held) if h.until.outlasts(held) => Some(gap(held)),
                    Some(_) => None,
                }
            })
        })
    }))
}

/// Whether `eff` holds, through grants without an expiry, every permission an
/// organization-wide grant can carry: an administrator the organization keeps.
fn administers(eff: &crate::access::Effective) -> bool {
    eff.active
        && Permission::ALL
            .iter()
            .filter(|p| p.allowed_in(Scope::Organization))
            .all(|p| {
                eff.bindings.iter().any(|b| {
                    b.expires_at.is_none()
                        && b.permissions
                            .iter()
                            .any(|h| h.implies(*p) && b.covers(&Target::Org, *h))
                })
            })
}

/// Whether the organization has an administrator (an active user holding everything
/// organization-wide, for good), read through `tx` as it stands: inside an audited change's
/// transaction, after the change, it sees every change committed before (they all take the
/// chain's lock first) and this one.
pub(crate) async fn has_administrator<C: sea_orm::ConnectionTrait>(
    tx: &C,
    now: crate::clock::Timestamp,
) -> DomainResult<bool> {
    has_administrator_who(tx, now, None).await
}

/// Whether the organization has an administrator (see [`has_administrator`]) who can still
/// sign in to the console without the identity provider `without`: an active account with a
/// local password that the organization's sign-in settings accept for them, or linked to
/// another enabled provider. Turning the last such provider off would leave administrators no
/// one can be (API keys cannot give access away).
pub(crate) async fn has_administrator_signing_in_without<C: sea_orm::ConnectionTrait>(
    tx: &C,
    now: crate::clock::Timestamp,
    org: &crate::settings::OrgSettings,
    without: &str,
) -> DomainResult<bool> {
    has_administrator_who(tx, now, Some((org, without))).await
}

/// Whether the active account `user_id` can sign in with a local password (as `org` allows)
/// or through an enabled identity provider other than `without`.
async fn signs_in_without<C: sea_orm::ConnectionTrait>(
    tx: &C,
    user_id: &str,
    org: &crate::settings::OrgSettings,
    without: &str,
) -> DomainResult<bool> {
    use crate::entities::{identity_providers, user_identities};
    let Some(u) = users::Entity::find_by_id(user_id.to_owned())
        .one(tx)
        .await?
    else {
        return Ok(false);
    };
    if u.status != crate::identity::accounts::STATUS_ACTIVE {
        return Ok(false);
    }
    if u.password_hash.is_some() && org.allows_local_sign_in(&u.email) {
        return Ok(true);
    }
    let providers: Vec<String> = user_identities::Entity::find()
        .filter(user_identities::Column::UserId.eq(user_id))
        .filter(user_identities::Column::ProviderId.ne(without))
        .all(tx)
        .await?
        .into_iter()
        .map(|l| l.provider_id)
        .collect();
    if providers.is_empty() {
        return Ok(false);
    }
    Ok(identity_providers::Entity::find()
        .filter(identity_providers::Column::Id.is_in(providers))
        .filter(identity_providers::Column::Enabled.eq(true))
        .one(tx)
        .await?
        .is_some())
}

async fn has_administrator_who<C: sea_orm::ConnectionTrait>(
    tx: &C,
    now: crate::clock::Timestamp,
    signing_in: Option<(&crate::settings::OrgSettings, &str)>,
) -> DomainResult<bool> {
    use crate::entities::group_members;
    // Only organization-wide grants without an expiry make an administrator, and one of them
    // must carry `user.write` (an administrator holds every organization permission): the
    // holders of those are the candidates, whatever else is bound organization-wide (a
    // viewer's role bound to All Users names no one).
    let carrying: Vec<String> = roles::Entity::find()
        .all(tx)
        .await?
        .into_iter()
        .filter(|r| {
            granted_by(r)
                .iter()
                .any(|p| p.implies(Permission::UserWrite))
        })
        .map(|r| r.id)
        .collect();
    if carrying.is_empty() {
        return Ok(false);
    }
    let org = bindings::Entity::find()
        .filter(bindings::Column::ProjectId.is_null())
        .filter(bindings::Column::ExpiresAt.is_null())
        .filter(bindings::Column::RoleId.is_in(carrying))
        .all(tx)
        .await?;
    let mut candidates: Vec<String> = org.iter().filter_map(|b| b.user_id.clone()).collect();
    let groups: Vec<String> = org.iter().filter_map(|b| b.group_id.clone()).collect();
    if !groups.is_empty() {
        candidates.extend(
            group_members::Entity::find()
                .filter(group_members::Column::GroupId.is_in(groups))
                .all(tx)
                .await?
                .into_iter()
                .map(|m| m.user_id),
        );
    }
    candidates.sort();
    candidates.dedup();
    for c in &candidates {
        let Some(uid) = crate::ids::UserId::parse(c) else {
            continue;
        };
        if let Some((org, without)) = signing_in {
            if !signs_in_without(tx, c, org, without).await? {
                continue;
            }
        }
        if administers(&crate::access::effective_in(tx, uid, now.millis()).await?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `user` administers the organization, read through `tx` as it stands (see
/// [`has_administrator`]): a change that takes only their access away can leave the
/// organization without an administrator only if they are one.
pub(crate) async fn administers_in<C: sea_orm::ConnectionTrait>(
    tx: &C,
    user: crate::ids::UserId,
    now: crate::clock::Timestamp,
) -> DomainResult<bool> {
    Ok(administers(
        &crate::access::effective_in(tx, user, now.millis()).await?,
    ))
}

/// No change leaves the organization without an administrator: `tx` is the change's
/// transaction with the change made, `had` what [`has_administrator`] said in it before the
/// change. Given back when someone still administers (or no one did); otherwise rolled back,
/// and the change refused (409, audited), for then only direct access to the database could
/// bring one back. Checked inside the transaction, not before it: two administrators who
/// remove each other at the same moment are taken one after the other, and the second is
/// refused.
pub(crate) async fn keep_an_administrator(
    svc: &Services,
    tx: crate::audit::ChangeTx,
    had: bool,
    who: &Principal,
    action: &str,
    kind: &str,
    name: &str,
) -> DomainResult<crate::audit::ChangeTx> {
    if !had || has_administrator(&tx, svc.clock.now()).await? {
        return Ok(tx);
    }
    // The denial goes to the log after the rollback: the change's transaction holds the
    // chain's lock, which the denial's own write takes.
    tx.rollback().await?;
    let reason = "no one else administers the organization: it would be left without an administrator; make someone else one first";
    svc.audit_denied(who, action, kind, name, reason).await?;
    Err(DomainError::conflict("subject", reason))
}

/// No takeover through delegated administration: acting on another account as a whole (its
/// password, its second factor, its activation, its existence) takes holding everything the
/// account holds where it holds it, as adding someone to a group does. Someone who manages
/// users resets a developer's password, not an administrator's: the reset link, or the
/// second factor removed, would hand them the administrator's rights. One's own account is
/// not a takeover. It also takes a fresh second factor ([`refuse_stale_second_factor`]). A
/// refusal is audited as a denial of `action` on the user.
pub(crate) async fn refuse_takeover(
    svc: &Services,
    who: &Principal,
    target: &users::Model,
    action: &str,
    verb: &str,
) -> DomainResult<()> {
    let target_id = crate::identity::accounts::user_id(target)?;
    if target_id == who.user_id {
        return Ok(());
    }
    let eff = svc.policy.effective(target_id).await?;
    let mut held: Vec<Handout> = eff
        .bindings
        .iter()
        .map(|b| Handout {
            what: format!("role {} through {}", b.role, b.via),
            permissions: b.permissions.iter().copied().collect(),
            targets: targets(b.project.as_deref(), &b.namespaces),
            until: Until::of(b.expires_at),
        })
        .collect();
    let groups: Vec<String> = crate::entities::group_members::Entity::find()
        .filter(crate::entities::group_members::Column::UserId.eq(target.id.clone()))
        .all(&svc.db)
        .await?
        .into_iter()
        .map(|m| m.group_id)
        .collect();
    held.extend(approver_handouts(&svc.db, &groups).await?);
    if let Some(gap) = first_not_held(svc, who, &held).await? {
        let yours = match gap.held_until {
            None => "which you do not".to_owned(),
            Some(end) => format!(
                "longer than you do (yours ends at {})",
                crate::clock::Timestamp(end).rfc3339()
            ),
        };
        let reason = format!(
            "cannot {verb} {}: they hold {} on {} ({}), {yours}; only someone holding everything an account holds may act on it as a whole",
            target.email,
            gap.permission.name(),
            gap.target.describe(),
            gap.what,
        );
        svc.audit_denied(who, action, "user", &target.email, &reason)
            .await?;
        return Err(DomainError::forbidden(reason));
    }
    // The session alone must not hand out a reset link or strip a second factor.
    refuse_stale_second_factor(svc, who, action, "user", &target.email).await
}

/// Bindings still in force at `now` (expired ones are kept a day to explain the expiry).
pub fn live(now: crate::clock::Timestamp) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(bindings::Column::ExpiresAt.is_null())
        .add(bindings::Column::ExpiresAt.gt(now.millis()))
}

/// The longest a grant may last when it has an expiry (a year).
pub const MAX_EXPIRY_SECS: i64 = 366 * 24 * 3600;

/// `expires_at` (RFC 3339) or `expires_in_secs`, in the future and within a year.
fn parse_expiry(
    req: &CreateBindingRequest,
    now: crate::clock::Timestamp,
) -> Result<Option<i64>, String> {
    let at = match (&req.expires_at, req.expires_in_secs) {
        (Some(_), Some(_)) => return Err("give expires_at or expires_in_secs, not both".into()),
        (Some(s), None) if s.trim().is_empty() => return Ok(None),
        (Some(s), None) => {
            let t = time::OffsetDateTime::parse(
                s.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|_| format!("{s:?} is not an RFC 3339 time"))?;
            crate::clock::Timestamp::from_offset(t).millis()
        }
        (None, Some(secs)) => now.millis().saturating_add(secs.saturating_mul(1000)),
        (None, None) => return Ok(None),
    };
    if at <= now.millis() {
        return Err("must be in the future".into());
    }
    if at - now.millis() > MAX_EXPIRY_SECS * 1000 {
        return Err("must be within a year".into());
    }
    Ok(Some(at))
}

/// The most namespaces one binding (or access request) names: past it, a project-wide grant
/// says what is meant, and no list costs the server more than a moment.
pub const MAX_NAMESPACES: usize = 100;

/// A binding's or access request's namespaces, checked and without repeats: DNS labels,
/// never Warden's own namespace, a system namespace only when `confirm_system` says so.
pub(crate) fn namespace_list(
    given: &[String],
    confirm_system: bool,
) -> Result<Vec<String>, String> {
    if given.len() > MAX_NAMESPACES {
        return Err(format!(
            "at most {MAX_NAMESPACES} namespaces per grant ({} given); grant the project instead",
            given.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut namespaces = Vec::new();
    for n in given {
        match DnsLabel::parse(n.trim()) {
            // Warden's own namespace holds every user's service account and the agent's:
            // a grant there would reach them all.
            Ok(l) if l.as_str() == crate::agent_protocol::NAMESPACE => {
                return Err(format!(
                    "{:?} is Warden's own namespace and cannot be granted",
                    crate::agent_protocol::NAMESPACE
                ));
            }
            // The cluster's own namespaces: its controllers' service accounts and tokens live
            // there. Granted only when the administrator says so.
            Ok(l) if crate::dto::SYSTEM_NAMESPACES.contains(&l.as_str()) && !confirm_system => {
                return Err(format!(
                    "{:?} is a system namespace: a grant there reaches the cluster's own components and their credentials; confirm it explicitly (confirm_system_namespaces) if that is what you mean",
                    l.as_str()
                ));
            }
            Ok(l) => {
                if seen.insert(l.to_string()) {
                    namespaces.push(l.to_string());
                }
            }
            Err(e) => return Err(format!("{n:?} {}", e.0)),
        }
    }
    Ok(namespaces)
}

pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateBindingRequest,
) -> DomainResult<BindingDto> {
    let mut fields = BTreeMap::new();
    let role = match super::roles::find(&svc.db, req.role.trim()).await {
        Ok(r) => Some(r),
        Err(DomainError::NotFound { .. }) => {
            fields.insert("role".to_owned(), format!("no role named {:?}", req.role));
            None
        }
        Err(e) => return Err(e),
    };
    let scope = role.as_ref().and_then(|r| Scope::parse(&r.scope));
    let project_name = req
        .project
        .as_ref()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty());
    let namespaces = match namespace_list(&req.namespaces, req.confirm_system_namespaces) {
        Ok(n) => n,
        Err(e) => {
            fields.insert("namespaces".to_owned(), e);
            vec![]
        }
    };
    match (scope, &project_name) {
        (Some(Scope::Organization), Some(_)) => {
            fields.insert(
                "project".into(),
                "an organization role is bound without a project (use null)".into(),
            );
        }
        (Some(Scope::Project | Scope::Namespace), None) => {
            fields.insert(
                "project".into(),
                format!(
                    "a {} role needs a project",
                    scope.map(|s| s.as_str()).unwrap_or("")
                ),
            );
        }
        _ => {}
    }
    match scope {
        Some(Scope::Namespace) if namespaces.is_empty() && !fields.contains_key("namespaces") => {
            fields.insert(
                "namespaces".into(),
                "a namespace role needs at least one namespace".into(),
            );
        }
        Some(Scope::Organization | Scope::Project) if !namespaces.is_empty() => {
            fields.insert(
                "namespaces".into(),
                "only namespace roles take namespaces".into(),
            );
        }
        _ => {}
    }
    let now = svc.clock.now();
    let expires_at = match parse_expiry(&req, now) {
        Ok(e) => e,
        Err(msg) => {
            fields.insert("expires_at".into(), msg);
            None
        }
    };
    if !fields.is_empty() {
        return Err(DomainError::Invalid { fields });
    }
    let role = role.expect("checked above");

    // Authorize before revealing anything about the project or the subject.
    gate_for(svc, who, project_name.as_deref()).await?;
    let project = match &project_name {
        Some(p) => Some(
            super::projects::find(&svc.db, p)
                .await
                .map_err(|_| DomainError::invalid("project", format!("no project named {p:?}")))?,
        ),
        None => None,
    };
    // Whatever the scope: the binding may grant only what its creator holds where it applies.
    let handout = Handout {
        what: format!(
            "{} {} would hold {}",
            req.subject.kind,
            req.subject.name.trim(),
            role.name
        ),
        permissions: granted_by(&role),
        targets: targets(project.as_ref().map(|p| p.name.as_str()), &namespaces),
        until: Until::of(expires_at),
    };
    refuse_escalation(
        svc,
        who,
        &[handout],
        "binding.create",
        "binding",
        &role.name,
    )
    .await?;
    let (user_id, group_id) = if req.subject.kind == SubjectKind::User {
        let email = Email::parse(&req.subject.name)
            .map_err(|e| DomainError::invalid_value("subject.name", e))?;
        let u = crate::identity::accounts::find_by_email(&svc.db, &email)
            .await?
            .ok_or_else(|| {
                DomainError::invalid("subject.name", format!("no user with email {email}"))
            })?;
        (Some(u.id), None)
    } else {
        let g = super::groups::find(&svc.db, req.subject.name.trim())
            .await
            .map_err(|_| {
                DomainError::invalid(
                    "subject.name",
                    format!("no group named {:?}", req.subject.name),
                )
            })?;
        (None, Some(g.id))
    };
    let ns_json = serde_json::to_string(&namespaces).unwrap_or_else(|_| "[]".into());
    let dup = bindings::Entity::find()
        .filter(bindings::Column::RoleId.eq(role.id.clone()))
        .filter(match &user_id {
            Some(u) => bindings::Column::UserId.eq(u.clone()),
            None => bindings::Column::GroupId.eq(group_id.clone().unwrap_or_default()),
        })
        .filter(match &project {
            Some(p) => bindings::Column::ProjectId.eq(p.id.clone()),
            None => bindings::Column::ProjectId.is_null(),
        })
        .filter(bindings::Column::Namespaces.eq(ns_json.clone()))
        .one(&svc.db)
        .await?;
    // An expired binding of the same shape is only kept to explain the expiry: the new one
    // replaces it, in the same transaction and audited (a refusal below leaves it as it was).
    let (expired, dup) = match dup {
        Some(d) if d.expires_at.is_some_and(|t| t <= now.millis()) => (Some(d), None),
        d => (None, d),
    };
    if dup.is_some() {
        return Err(DomainError::conflict(
            "role",
            "this subject already holds this role there",
        ));
    }
    let tx = crate::audit::begin_change(&svc.db).await?;
    if let Some(d) = expired {
        delete_in(
            svc,
            &tx,
            who,
            &d,
            Some(json!({"replaced_by_a_new_binding": true})),
        )
        .await?;
    }
    // Inside the transaction: a cluster shared into the project meanwhile counts (changes that
    // bring clusters into projects take the same lock).
    if let Err(msg) = super::jit_settings::check_required_expiry(
        &tx,
        &role.name,
        project.as_ref().map(|p| p.id.as_str()),
        expires_at,
        now,
    )
    .await?
    {
        return Err(DomainError::invalid("expires_at", msg));
    }
    let m = bindings::ActiveModel::from(bindings::Model {
        id: BindingId::new().to_string(),
        subject_kind: req.subject.kind.as_str().to_owned(),
        user_id,
        group_id,
        role_id: role.id.clone(),
        project_id: project.as_ref().map(|p| p.id.clone()),
        namespaces: ns_json,
        created_at: now.millis(),
        expires_at,
        expiry_recorded_at: None,
        access_request_id: None,
    })
    .insert(&tx)
    .await?;
    let dto = Names::load(&tx, std::slice::from_ref(&m)).await?.dto(&m);
    svc.audit_change(
        &tx,
        who,
        "binding.create",
        "binding",
        &describe(&dto),
        dto.project.as_deref(),
        None,
        Some(json!(dto)),
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    let mut dto = dto;
    if let Some(p) = dto.project.clone().filter(|_| !dto.namespaces.is_empty()) {
        // Advice only: the binding is made whatever this lookup does.
        let clusters = project_namespaces(svc, who, &p).await.unwrap_or_default();
        dto.warnings = crate::dto::missing_namespaces(&clusters, &dto.namespaces);
    }
    Ok(dto)
}

/// The namespaces the clusters of a project report (`project.read` there; only the clusters
/// the caller may see).
pub async fn namespaces_of_project(
    svc: &Services,
    who: &Principal,
    project: &str,
) -> DomainResult<Vec<crate::dto::ClusterNamespaces>> {
    let p = super::projects::find(&svc.db, project).await;
    let name = p
        .as_ref()
        .map(|p| p.name.clone())
        .unwrap_or_else(|_| project.to_owned());
    svc.gate(who, Action::project(Permission::ProjectRead, name.clone()))
        .await?;
    p?;
    project_namespaces(svc, who, &name).await
}

/// The clusters of a project (owned and shared in) that the caller may see, with the
/// namespaces each reports.
async fn project_namespaces(
    svc: &Services,
    who: &Principal,
    project: &str,
) -> DomainResult<Vec<crate::dto::ClusterNamespaces>> {
    let q = crate::dto::ClusterQuery {
        project: Some(project.to_owned()),
        limit: Some(500),
        ..Default::default()
    };
    Ok(crate::clusters::list(svc, who, &q)
        .await?
        .items
        .into_iter()
        .map(|c| crate::dto::ClusterNamespaces {
            cluster: c.name,
            status: c.status,
            namespaces: c.namespaces,
        })
        .collect())
}

pub async fn list(
    svc: &Services,
    who: &Principal,
    q: &BindingQuery,
) -> DomainResult<Page<BindingDto>> {
    let eff = svc.policy.effective(who.user_id).await?;
    let org_reader = eff.org_permissions().contains(&Permission::UserRead);
    if let Some(p) = q.project.as_ref().filter(|p| !p.is_empty()) {
        svc.gate(who, Action::project(Permission::ProjectRead, p.clone()))
            .await?;
    } else if !org_reader && q.user.as_deref() != Some(who.email.as_str()) {
        // Without organization-wide read, list only what one can see.
        if eff.visible_projects().is_empty() {
            svc.gate(who, Action::org(Permission::UserRead)).await?;
        }
    }
    use sea_orm::sea_query::{Expr, Func, Query};
    use sea_orm::{Condition, QuerySelect};
    let after = super::cursor::decode("bindings", q.cursor.as_deref())?;
    let limit = super::cursor::limit(q.limit);
    // The ids of `table`'s rows that `name` matches.
    let ids_named = |table: &str, name: sea_orm::sea_query::SimpleExpr| {
        Query::select()
            .column(sea_orm::sea_query::Alias::new("id"))
            .from(sea_orm::sea_query::Alias::new(table))
            .and_where(name)
            .to_owned()
    };
    let mut cond = Condition::all().add(live(svc.clock.now()));
    if let Some(p) = q.project.as_ref().filter(|p| !p.is_empty()) {
        cond = cond.add(bindings::Column::ProjectId.in_subquery(ids_named(
            "projects",
            Expr::col(projects::Column::Name).eq(p.clone()),
        )));
    }
    if let Some(u) = &q.user {
        cond = cond.add(bindings::Column::UserId.in_subquery(ids_named(
            "users",
            Expr::expr(Func::lower(Expr::col(users::Column::Email))).eq(u.to_lowercase()),
        )));
    }
    if let Some(g) = &q.group {
        cond = cond.add(bindings::Column::GroupId.in_subquery(ids_named(
            "groups",
            Expr::col(groups::Column::Name).eq(g.clone()),
        )));
    }
    if let Some(r) = &q.role {
        cond = cond.add(bindings::Column::RoleId.in_subquery(ids_named(
            "roles",
            Expr::col(roles::Column::Name).eq(r.clone()),
        )));
    }
    if !org_reader {
        // One's own bindings, and those of the projects one can see.
        let visible = eff.visible_projects();
        let mut mine = Condition::any().add(bindings::Column::UserId.eq(who.user_id.to_string()));
        if !visible.is_empty() {
            mine = mine.add(bindings::Column::ProjectId.in_subquery(ids_named(
                "projects",
                Expr::col(projects::Column::Name).is_in(visible),
            )));
        }
        cond = cond.add(mine);
    }
    if let Some(a) = after {
        cond = cond.add(bindings::Column::Id.gt(a));
    }
    let mut rows = bindings::Entity::find()
        .filter(cond)
        .order_by_asc(bindings::Column::Id)
        .limit(limit + 1)
        .all(&svc.db)
        .await?;
    let next = super::cursor::page(&mut rows, limit, "bindings", |b| &b.id);
    let names = Names::load(&svc.db, &rows).await?;
    Ok(Page {
        items: rows.iter().map(|b| names.dto(b)).collect(),
        next,
    })
}

pub async fn delete(svc: &Services, who: &Principal, id: &str) -> DomainResult<()> {
    let b = bindings::Entity::find_by_id(id.to_owned())
        .one(&svc.db)
        .await?
        .ok_or_else(|| DomainError::not_found("binding"))?;
    let names = Names::load(&svc.db, std::slice::from_ref(&b)).await?;
    let dto = names.dto(&b);
    gate_for(svc, who, dto.project.as_deref()).await?;
    // Taking a grant away is bounded as handing it out is: someone who manages users removes a
    // developer's binding, not every administrator's ADMIN (which they may not hand out, and
    // whose holders they may not deactivate either).
    let held: Vec<Handout> = handouts(&svc.db, std::slice::from_ref(&b), None)
        .await?
        .into_iter()
        .map(Handout::taken_away)
        .collect();
    refuse_escalation(
        svc,
        who,
        &held,
        "binding.delete",
        "binding",
        &describe(&dto),
    )
    .await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    // Only an organization-wide grant for good can make an administrator.
    let had = b.project_id.is_none()
        && b.expires_at.is_none()
        && has_administrator(&tx, svc.clock.now()).await?;
    delete_in(svc, &tx, who, &b, None).await?;
    let tx = keep_an_administrator(
        svc,
        tx,
        had,
        who,
        "binding.delete",
        "binding",
        &describe(&dto),
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(())
}

/// Remove a binding and audit its removal (`binding.delete`, the binding as it was, and
/// `after` when something replaces it), in the caller's transaction: every way a binding goes
/// away is told the same way, and told once.
pub(crate) async fn delete_in<C: sea_orm::ConnectionTrait>(
    svc: &Services,
    tx: &C,
    who: &Principal,
    b: &bindings::Model,
    after: Option<serde_json::Value>,
) -> DomainResult<()> {
    let before = Names::load(tx, std::slice::from_ref(b)).await?.dto(b);
    let gone = bindings::Entity::delete_by_id(b.id.clone())
        .exec(tx)
        .await?;
    // Read before this transaction: a removal committed meanwhile (a second click, another
    // administrator, the expiry sweep) already told it. The caller's whole change is refused
    // rather than audited a second time.
    if gone.rows_affected == 0 {
        return Err(DomainError::conflict(
            "binding",
            "this binding was removed meanwhile; reload to see what holds now",
        ));
    }
    svc.audit_change(
        tx,
        who,
        "binding.delete",
        "binding",
        &describe(&before),
        before.project.as_deref(),
        Some(json!(before)),
        after,
    )
    .await
}

/// Ends the grants whose time is up: each expired binding is audited once
/// (`binding.expired`, by the system), the authorization epoch moves so every live stream and
/// terminal that depended on it is re-checked at once (the gate already ignores it), and
/// bindings expired for more than a day are removed. Returns how many grants ended now. The
/// server runs this every second (`server/src/jit.rs`).
pub async fn expire_due(svc: &Services) -> DomainResult<usize> {
    use sea_orm::{IntoActiveModel, Set};
    let now = svc.clock.now();
    let due = bindings::Entity::find()
        .filter(bindings::Column::ExpiresAt.lte(now.millis()))
        .filter(bindings::Column::ExpiryRecordedAt.is_null())
        .all(&svc.db)
        .await?;
    let mut ended = 0;
    if !due.is_empty() {
        let names = Names::load(&svc.db, &due).await?;
        for b in due {
            let dto = names.dto(&b);
            let mut a = b.clone().into_active_model();
            a.expiry_recorded_at = Set(Some(now.millis()));
            // Only the first of several Wardens records it, with its audit event.
            let tx = crate::audit::begin_change(&svc.db).await?;
            let updated = bindings::Entity::update_many()
                .set(a)
                .filter(bindings::Column::Id.eq(b.id.clone()))
                .filter(bindings::Column::ExpiryRecordedAt.is_null())
                .exec(&tx)
                .await?;
            if updated.rows_affected == 0 {
                continue;
            }
            ended += 1;
            let mut ev = crate::audit::AuditEvent::new(
                crate::audit::AuditKind::System,
                crate::audit::Actor::System,
                crate::audit::SessionType::System,
                "binding.expired",
                crate::audit::Outcome::Allowed,
            )
            .resource("binding", describe(&dto))
            .reason(format!(
                "the grant expired at {}",
                dto.expires_at.clone().unwrap_or_default()
            ))
            .details(json!({ "before": dto, "after": null, "binding_id": b.id }));
            if let Some(p) = &dto.project {
                ev = ev.project(p.clone());
            }
            crate::audit::append(&tx, now, vec![ev]).await?;
            tx.commit().await?;
        }
        if ended > 0 {
            svc.policy.bump();
        }
    }
    let gone = bindings::Entity::delete_many()
        .filter(bindings::Column::ExpiresAt.lte(now.millis() - crate::access::EXPIRED_KEPT_MS))
        .exec(&svc.db)
        .await?;
    if gone.rows_affected > 0 {
        svc.policy.bump();
    }
    Ok(ended)
}

/// When the next binding expires (ms), to sleep until then.
pub async fn next_expiry(svc: &Services) -> DomainResult<Option<i64>> {
    Ok(bindings::Entity::find()
        .filter(bindings::Column::ExpiresAt.is_not_null())
        .filter(bindings::Column::ExpiryRecordedAt.is_null())
        .order_by_asc(bindings::Column::ExpiresAt)
        .one(&svc.db)
        .await?
        .and_then(|b| b.expires_at))
}
