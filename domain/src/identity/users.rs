//! Users, as administrators manage them.

use sea_orm::ExprTrait;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::json;
use std::collections::HashMap;

use super::password;
use crate::access::{Action, Principal, Target};
use crate::admin::bindings::Names;
use crate::admin::ts;
use crate::bootstrap::ALL_USERS_GROUP;
use crate::dto::{
    CreateUserRequest, CreatedUser, Explanation, Page, UpdateUserRequest, UserDetail, UserDto,
    UserQuery, UserStatus,
};
use crate::entities::{bindings, group_members, groups, users};
use crate::error::{DomainError, DomainResult};
use crate::identity::accounts::{STATUS_ACTIVE, STATUS_DEACTIVATED};
use crate::ids::UserId;
use crate::permissions::Permission;
use crate::types::{check_password_policy, DisplayName, Email};
use crate::Services;

fn to_dto(u: &users::Model, groups: Vec<String>) -> UserDto {
    UserDto {
        id: u.id.clone(),
        email: u.email.clone(),
        name: u.name.clone(),
        status: UserStatus::from_stored(&u.status),
        origin: crate::dto::UserOrigin::from_stored(&u.origin),
        must_change_password: u.must_change_password,
        has_password: u.password_hash.is_some(),
        created_at: ts(u.created_at),
        last_login_at: u.last_login_at.map(ts),
        groups,
    }
}

/// A user by email or id.
pub async fn find(svc: &Services, email_or_id: &str) -> DomainResult<users::Model> {
    let by_id = users::Entity::find_by_id(email_or_id.to_owned())
        .one(&svc.db)
        .await?;
    if let Some(u) = by_id {
        return Ok(u);
    }
    let email = Email::parse(email_or_id).map_err(|_| DomainError::not_found("user"))?;
    crate::identity::accounts::find_by_email(&svc.db, &email)
        .await?
        .ok_or_else(|| DomainError::not_found("user"))
}

async fn group_names_of(svc: &Services, user_id: &str) -> DomainResult<Vec<String>> {
    let ids: Vec<String> = group_members::Entity::find()
        .filter(group_members::Column::UserId.eq(user_id))
        .all(&svc.db)
        .await?
        .into_iter()
        .map(|m| m.group_id)
        .collect();
    let mut names: Vec<String> = groups::Entity::find()
        .filter(groups::Column::Id.is_in(ids))
        .all(&svc.db)
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect();
    names.sort();
    Ok(names)
}

pub async fn list(svc: &Services, who: &Principal, q: &UserQuery) -> DomainResult<Page<UserDto>> {
    use sea_orm::sea_query::{Expr, Query, SelectStatement};
    use sea_orm::{Condition, QueryOrder, QuerySelect, QueryTrait};
    svc.gate(who, Action::org(Permission::UserRead)).await?;
    let given = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
    let after = crate::admin::cursor::decode("users", q.cursor.as_deref())?;
    let limit = crate::admin::cursor::limit(q.limit);

    // Filter, sort and page in the database (keyset on the unique email).
    let mut cond = Condition::all();
    if let Some(s) = q.status {
        cond = cond.add(users::Column::Status.eq(s.as_str()));
    }
    if let Some(c) = crate::admin::cursor::contains_any(
        q.q.as_deref(),
        [
            Expr::col(users::Column::Email),
            Expr::col(users::Column::Name),
        ],
    ) {
        cond = cond.add(c);
    }
    if let Some(g) = given(&q.group) {
        cond = cond.add(
            users::Column::Id.in_subquery(
                group_members::Entity::find()
                    .select_only()
                    .column(group_members::Column::UserId)
                    .inner_join(groups::Entity)
                    .filter(groups::Column::Name.eq(g))
                    .into_query(),
            ),
        );
    }
    let now = svc.clock.now();
    // Users a live binding matching `matching` applies to: theirs, or one of their groups'.
    // Correlated `EXISTS` on the user's own rows (indexed by user), so a page stops at its
    // limit instead of first collecting every holder in the organization.
    let holders = |matching: SelectStatement, column: bindings::Column| {
        let live = Condition::any()
            .add(Expr::col((bindings::Entity, bindings::Column::ExpiresAt)).is_null())
            .add(Expr::col((bindings::Entity, bindings::Column::ExpiresAt)).gt(now.millis()));
        let hit = Expr::col((bindings::Entity, column)).in_subquery(matching);
        Condition::any()
            .add(Expr::exists(
                Query::select()
                    .expr(Expr::val(1))
                    .from(bindings::Entity)
                    .and_where(
                        Expr::col((bindings::Entity, bindings::Column::UserId))
                            .equals((users::Entity, users::Column::Id)),
                    )
                    .cond_where(live.clone())
                    .and_where(hit.clone())
                    .to_owned(),
            ))
            .add(Expr::exists(
                Query::select()
                    .expr(Expr::val(1))
                    .from(group_members::Entity)
                    .inner_join(
                        bindings::Entity,
                        Expr::col((bindings::Entity, bindings::Column::GroupId))
                            .equals((group_members::Entity, group_members::Column::GroupId)),
                    )
                    .and_where(
                        Expr::col((group_members::Entity, group_members::Column::UserId))
                            .equals((users::Entity, users::Column::Id)),
                    )
                    .cond_where(live)
                    .and_where(hit)
                    .to_owned(),
            ))
    };
    if let Some(r) = given(&q.role) {
        cond = cond.add(holders(
            Query::select()
                .column(crate::entities::roles::Column::Id)
                .from(crate::entities::roles::Entity)
                .and_where(Expr::col(crate::entities::roles::Column::Name).eq(r))
                .to_owned(),
            bindings::Column::RoleId,
        ));
    }
    if let Some(p) = given(&q.project) {
        cond = cond.add(holders(
            Query::select()
                .column(crate::entities::projects::Column::Id)
                .from(crate::entities::projects::Entity)
                .and_where(Expr::col(crate::entities::projects::Column::Name).eq(p))
                .to_owned(),
            bindings::Column::ProjectId,
        ));
    }
    if let Some(a) = after {
        cond = cond.add(users::Column::Email.gt(a));
    }
    let mut rows = users::Entity::find()
        .filter(cond)
        .order_by_asc(users::Column::Email)
        .limit(limit + 1)
        .all(&svc.db)
        .await?;
    let next = crate::admin::cursor::page(&mut rows, limit, "users", |u| &u.email);

    // The page's users' groups, in one query.
    let ids: Vec<String> = rows.iter().map(|u| u.id.clone()).collect();
    let mut groups_of: HashMap<String, Vec<String>> = HashMap::new();
    if !ids.is_empty() {
        // Through the entities' declared relation (`group_members` belongs to `groups`).
        let pairs: Vec<(String, String)> = group_members::Entity::find()
            .select_only()
            .column(group_members::Column::UserId)
            .column(groups::Column::Name)
            .inner_join(groups::Entity)
            .filter(group_members::Column::UserId.is_in(ids))
            .into_tuple()
            .all(&svc.db)
            .await?;
        for (u, g) in pairs {
            groups_of.entry(u).or_default().push(g);
        }
    }
    let items = rows
        .iter()
        .map(|u| {
            let mut g = groups_of.remove(&u.id).unwrap_or_default();
            g.sort();
            to_dto(u, g)
        })
        .collect();
    Ok(Page { items, next })
}

pub async fn get(svc: &Services, who: &Principal, email_or_id: &str) -> DomainResult<UserDetail> {
    let u = find(svc, email_or_id).await;
    let is_self = u.as_ref().is_ok_and(|u| u.id == who.user_id.to_string());
    if !is_self {
        svc.gate(who, Action::org(Permission::UserRead)).await?;
    }
    let u = u?;
    let gnames = group_names_of(svc, &u.id).await?;
    let gids: Vec<String> = group_members::Entity::find()
        .filter(group_members::Column::UserId.eq(u.id.clone()))
        .all(&svc.db)
        .await?
        .into_iter()
        .map(|m| m.group_id)
        .collect();
    let mut rows = bindings::Entity::find()
        .filter(bindings::Column::UserId.eq(u.id.clone()))
        .filter(crate::admin::bindings::live(svc.clock.now()))
        .all(&svc.db)
        .await?;
    rows.extend(
        bindings::Entity::find()
            .filter(bindings::Column::GroupId.is_in(gids))
            .filter(crate::admin::bindings::live(svc.clock.now()))
            .all(&svc.db)
            .await?,
    );
    let names = Names::load(&svc.db, &rows).await?;
    let uid = crate::identity::accounts::user_id(&u)?;
    let eff = svc.policy.effective(uid).await?;
    let access = eff.grants();
    Ok(UserDetail {
        user: to_dto(&u, gnames),
        bindings: rows.iter().map(|b| names.dto(b)).collect(),
        access,
        mfa_enabled: crate::identity::mfa::is_enabled(&svc.db, uid).await?,
    })
}

pub async fn create(
    svc: &Services,
    who: &Principal,
    req: CreateUserRequest,
) -> DomainResult<CreatedUser> {
    svc.gate(who, Action::org(Permission::UserWrite)).await?;
    let mut fields = std::collections::BTreeMap::new();
    let email = Email::parse(&req.email)
        .map_err(|e| fields.insert("email".to_owned(), e.0))
        .ok();
    let name = DisplayName::parse(&req.name)
        .map_err(|e| fields.insert("name".to_owned(), e.0))
        .ok();
    if let (Some(pw), Some(e)) = (&req.password, &email) {
        if let Err(err) = check_password_policy(pw, e.as_str()) {
            fields.insert("password".to_owned(), err.0);
        }
    }
    if !fields.is_empty() {
        return Err(DomainError::Invalid { fields });
    }
    let (email, name) = (email.expect("checked"), name.expect("checked"));
    let hash = match &req.password {
        Some(pw) => Some(password::hash(pw).await?),
        None => None,
    };
    let now = svc.clock.now();
    let tx = crate::audit::begin_change(&svc.db).await?;
    let u = crate::identity::accounts::create(
        &tx,
        crate::identity::accounts::NewUser {
            email: email.clone(),
            name,
            password_hash: hash,
            must_change_password: true,
            password_set_by: req.password.is_some().then_some(who.user_id),
        },
        now,
    )
    .await?;
    if let Some(g) = groups::Entity::find()
        .filter(groups::Column::Name.eq(ALL_USERS_GROUP))
        .one(&tx)
        .await?
    {
        group_members::ActiveModel::from(group_members::Model {
            group_id: g.id,
            user_id: u.id.clone(),
            created_at: now.millis(),
        })
        .insert(&tx)
        .await?;
    }
    let link = if req.password.is_none() {
        let uid = crate::identity::accounts::user_id(&u)?;
        Some(
            svc.set_password_url(
                &crate::identity::accounts::issue_set_password_token(
                    &tx,
                    uid,
                    Some(who.user_id),
                    now,
                )
                .await?,
            ),
        )
    } else {
        None
    };
    let dto = to_dto(&u, vec![ALL_USERS_GROUP.to_owned()]);
    svc.audit_change(
        &tx,
        who,
        "user.create",
        "user",
        email.as_str(),
        None,
        None,
        Some(json!(dto)),
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(CreatedUser {
        user: dto,
        set_password_url: link,
    })
}

pub async fn update(
    svc: &Services,
    who: &Principal,
    email_or_id: &str,
    req: UpdateUserRequest,
) -> DomainResult<UserDto> {
    svc.gate(who, Action::org(Permission::UserWrite)).await?;
    let u = find(svc, email_or_id).await?;
    if req.status.is_some() {
        // Deactivating locks the holder out; reactivating hands back what they hold.
        crate::admin::bindings::refuse_takeover(
            svc,
            who,
            &u,
            "user.update",
            "change the status of",
        )
        .await?;
    }
    let before = to_dto(&u, vec![]);
    let uid = crate::identity::accounts::user_id(&u)?;
    let mut a = u.clone().into_active_model();
    let mut deactivate = false;
    if let Some(status) = &req.status {
        match status {
            UserStatus::Active => a.status = Set(STATUS_ACTIVE.into()),
            UserStatus::Deactivated => {
                if uid == who.user_id {
                    return Err(DomainError::conflict(
                        "status",
                        "you cannot deactivate yourself",
                    ));
                }
                deactivate = u.status != STATUS_DEACTIVATED;
                a.status = Set(STATUS_DEACTIVATED.into());
            }
        }
    }
    if let Some(n) = &req.name {
        a.name = Set(DisplayName::parse(n)
            .map_err(|e| DomainError::invalid_value("name", e))?
            .as_str()
            .to_owned());
    }
    a.updated_at = Set(svc.clock.now().millis());
    let after_groups = group_names_of(svc, &u.id).await?;
    let tx = crate::audit::begin_change(&svc.db).await?;
    // Only an administrator's going can leave the organization without one.
    let had =
        deactivate && crate::admin::bindings::administers_in(&tx, uid, svc.clock.now()).await?;
    let u = a.update(&tx).await?;
    if deactivate {
        // Everything the person could sign in or call with ends, for good: reactivating the
        // account later must not revive a key or kubeconfig that may be in someone else's
        // hands (they sign in again and make new ones).
        crate::identity::sessions::delete_user_sessions(&tx, uid).await?;
        revoke_credentials_in(svc, &tx, who, &u).await?;
        crate::identity::accounts::end_set_password_links(&tx, &u.id, svc.clock.now()).await?;
    }
    let after = to_dto(&u, after_groups);
    svc.audit_change(
        &tx,
        who,
        "user.update",
        "user",
        &u.email,
        None,
        Some(json!(before)),
        Some(json!(after)),
    )
    .await?;
    // Two administrators who deactivate each other at once: the second is refused.
    let tx = crate::admin::bindings::keep_an_administrator(
        svc,
        tx,
        had,
        who,
        "user.update",
        "user",
        &u.email,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(after)
}

/// End, inside `tx`, the credentials `u` calls Warden with outside the console: every API key
/// and every kubeconfig (each with its audit event). What deactivation does, and what a
/// provider that stops vouching does for the people it was the only way in for.
pub(crate) async fn revoke_credentials_in<C: sea_orm::ConnectionTrait>(
    svc: &Services,
    tx: &C,
    who: &Principal,
    u: &users::Model,
) -> DomainResult<()> {
    crate::admin::api_keys::revoke_all_in(svc, tx, Some(who), &u.id).await?;
    crate::kubectl::revoke_in(tx, Some(who), u, svc.clock.now()).await?;
    Ok(())
}

pub async fn delete(svc: &Services, who: &Principal, email_or_id: &str) -> DomainResult<()> {
    svc.gate(who, Action::org(Permission::UserWrite)).await?;
    let u = find(svc, email_or_id).await?;
    let uid = crate::identity::accounts::user_id(&u)?;
    if uid == who.user_id {
        return Err(DomainError::conflict("user", "you cannot delete yourself"));
    }
    crate::admin::bindings::refuse_takeover(svc, who, &u, "user.delete", "delete").await?;
    let before = to_dto(&u, group_names_of(svc, &u.id).await?);
    let tx = crate::audit::begin_change(&svc.db).await?;
    let had = crate::admin::bindings::administers_in(&tx, uid, svc.clock.now()).await?;
    crate::identity::sessions::delete_user_sessions(&tx, uid).await?;
    users::Entity::delete_by_id(u.id.clone()).exec(&tx).await?;
    svc.audit_change(
        &tx,
        who,
        "user.delete",
        "user",
        &u.email,
        None,
        Some(json!(before)),
        None,
    )
    .await?;
    // Two administrators who delete each other at once: the second is refused.
    let tx = crate::admin::bindings::keep_an_administrator(
        svc,
        tx,
        had,
        who,
        "user.delete",
        "user",
        &u.email,
    )
    .await?;
    tx.commit().await?;
    svc.policy.bump();
    Ok(())
}

/// What else a password or second-factor reset ends: a reset usually means the account may be
/// in someone else's hands, and API keys and kubeconfigs outlive the password and the
/// authenticator.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetOptions {
    pub revoke_api_keys: bool,
    pub revoke_kubeconfigs: bool,
    /// The operator's reset only (`warden admin reset-password --reset-mfa`): the second
    /// factor goes too, for an administrator whose authenticator is lost and who has no other
    /// administrator to remove it.
    pub reset_mfa: bool,
}

/// An administrator's reset: returns the one-time set-password URL. With `opts`, the user's
/// API keys and kubeconfig credentials are revoked too (each audited); the rights for that are
/// checked before anything changes.
pub async fn reset_password(
    svc: &Services,
    who: &Principal,
    email_or_id: &str,
    opts: ResetOptions,
) -> DomainResult<String> {
    svc.gate(who, Action::org(Permission::UserWrite)).await?;
    if opts.revoke_kubeconfigs {
        svc.gate(who, Action::org(Permission::KubeconfigWrite))
            .await?;
    }
    let u = find(svc, email_or_id).await?;
    crate::admin::bindings::refuse_takeover(
        svc,
        who,
        &u,
        "user.reset_password",
        "reset the password of",
    )
    .await?;
    let email = Email::parse(&u.email).map_err(|e| DomainError::Internal(e.0))?;
    let done = crate::identity::authn::admin_reset_password(svc, Some(who), &email, opts).await?;
    Ok(svc.set_password_url(&done.token))
}

/// "Why": may `user` do `permission` at `project` / `namespace`, and which binding allows it.
pub async fn explain(
    svc: &Services,
    who: &Principal,
    email_or_id: &str,
    permission: &str,
    project: Option<&str>,
    namespace: Option<&str>,
    cluster: Option<&str>,
) -> DomainResult<Explanation> {
    let u = find(svc, email_or_id).await;
    let is_self = u.as_ref().is_ok_and(|u| u.id == who.user_id.to_string());
    if !is_self {
        svc.gate(who, Action::org(Permission::UserRead)).await?;
    }
    let u = u?;
    let p = Permission::parse(permission).ok_or_else(|| {
        DomainError::invalid("permission", format!("unknown permission {permission:?}"))
    })?;
    let uid = UserId::parse(&u.id).ok_or_else(|| DomainError::Internal("bad user id".into()))?;
    let decide = |project: Option<String>| {
        let target = match (project, namespace) {
            (None, _) => Target::Org,
            (Some(p), None) => Target::Project(p),
            (Some(p), Some(n)) => Target::Namespace {
                project: p,
                namespace: n.to_owned(),
            },
        };
        let action = Action {
            permission: p,
            target,
        };
        async move {
            Ok::<_, DomainError>(match svc.policy.explain(uid, &action).await? {
                Ok(via) => Explanation {
                    allowed: true,
                    because: via,
                    cluster: None,
                },
                Err(reason) => Explanation {
                    allowed: false,
                    because: reason,
                    cluster: None,
                },
            })
        }
    };
    let Some(cluster) = cluster.map(str::trim).filter(|c| !c.is_empty()) else {
        return decide(project.map(str::to_owned)).await;
    };
    // The asker must be allowed to read the cluster (the gate audits a refusal), so the answer
    // tells nothing about clusters they cannot see.
    let c = crate::clusters::get(svc, who, cluster).await?.cluster;
    let holders: Vec<&String> = std::iter::once(&c.project)
        .chain(c.shared_with.iter())
        .collect();
    let mut answer = match project {
        Some(p) if !holders.iter().any(|h| h.as_str() == p) => {
            return Ok(Explanation {
                allowed: false,
                because: format!(
                    "cluster {} is not in project {p} (it belongs to {}{}): a grant in {p} does not reach it",
                    c.name,
                    c.project,
                    if c.shared_with.is_empty() {
                        String::new()
                    } else {
                        format!(", shared with {}", c.shared_with.join(", "))
                    }
                ),
                cluster: None,
            });
        }
        Some(p) => decide(Some(p.to_owned())).await?,
        // No project named: any project holding the cluster may grant it.
        None => {
            let mut first = None;
            let mut allowed = None;
            for h in &holders {
                let e = decide(Some((*h).clone())).await?;
                if e.allowed {
                    allowed = Some(e);
                    break;
                }
                first.get_or_insert(e);
            }
            match (allowed, first) {
                (Some(e), _) | (None, Some(e)) => e,
                (None, None) => decide(Some(c.project.clone())).await?,
            }
        }
    };
    if answer.allowed {
        answer.cluster = Some(cluster_side(
            &c,
            namespace,
            p == Permission::KubectlFullaccess,
        ));
    }
    Ok(answer)
}

/// Whether the cluster side is in place for a grant Warden gives (connected; the namespace
/// exists as far as the agent last reported).
fn cluster_side(
    c: &crate::dto::ClusterDto,
    namespace: Option<&str>,
    full_access: bool,
) -> crate::dto::ClusterSide {
    let name = &c.name;
    let (ready, says) = if c.status != crate::dto::ClusterStatus::Connected {
        let why = c
            .status_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        (
            false,
            format!(
                "granted in Warden, but cluster {name} is {}{why}: requests fail until its agent connects",
                c.status
            ),
        )
    } else if let Some(ns) = namespace.filter(|_| c.namespaces.is_empty()) {
        (
            false,
            format!(
                "granted in Warden; cluster {name} is connected but has not reported its namespaces yet, so whether {ns} exists is not known"
            ),
        )
    } else if let Some(ns) = namespace.filter(|ns| !c.namespaces.iter().any(|n| n == ns)) {
        (
            false,
            format!(
                "granted in Warden; namespace {ns} does not exist on cluster {name}: requests into it answer NotFound until it is created, and work from the first request after"
            ),
        )
    } else if !full_access && namespace == Some(crate::access::kube::WARDEN_NAMESPACE) {
        (
            false,
            format!(
                "namespace {} on cluster {name} is Warden's own: only full access reaches it",
                crate::access::kube::WARDEN_NAMESPACE
            ),
        )
    } else {
        (
            true,
            match namespace {
                Some(ns) => format!("in place on cluster {name}: connected, namespace {ns} exists"),
                None => format!("in place on cluster {name}: connected"),
            },
        )
    };
    crate::dto::ClusterSide {
        cluster: name.clone(),
        ready,
        says,
    }
}
