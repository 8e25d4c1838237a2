//! `warden dev seed`: fill the database with a realistic organization (users, groups and their
//! members, projects, clusters owned by and shared with projects, bindings at organization,
//! project and namespace scope), to measure the console and the API at organization scale.
//!
//! Speed comes from multi-row `INSERT`s inside a few transactions (one per table and chunk
//! of rows), the rows being built in memory. The content is deterministic for a given seed
//! apart from the times, which end at `now`. The organization must exist (the first start's
//! bootstrap); the seed refuses a database that already holds users other than the bootstrap
//! administrator unless `force` is set, and then adds to it (new names never clash with the
//! rows already there).

use sea_orm::TransactionSession;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, TransactionTrait,
};

use crate::audit::generate::Rng;
use crate::bootstrap::ALL_USERS_GROUP;
use crate::clock::Timestamp;
use crate::dto::cluster_status;
use crate::entities::{
    bindings, cluster_shares, clusters, group_members, groups, organization, projects, roles, users,
};
use crate::error::{DomainError, DomainResult};
use crate::permissions::Scope;

/// What to create.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub users: u64,
    pub groups: u64,
    pub projects: u64,
    pub clusters: u64,
    pub bindings: u64,
    pub seed: u64,
    /// Add to a database that already has users besides the bootstrap administrator.
    pub force: bool,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            users: 10_000,
            groups: 1_000,
            projects: 500,
            clusters: 1_000,
            bindings: 50_000,
            seed: 0x5345_4544,
            force: false,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seeded {
    pub users: u64,
    pub groups: u64,
    pub memberships: u64,
    pub projects: u64,
    pub clusters: u64,
    pub shares: u64,
    pub bindings: u64,
}

/// Rows per `INSERT` statement (well under SQLite's and PostgreSQL's bound-parameter limits
/// for the widest table here, clusters: 20 columns).
const ROWS_PER_INSERT: usize = 500;
/// Statements per transaction.
const INSERTS_PER_TRANSACTION: usize = 20;

const FIRST: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yusuf", "zoe",
    "amir", "bea", "chen", "dmitri", "elena", "fatima", "goran", "hana", "ines", "jonas", "kemal",
    "lucia", "mateo", "noor", "oskar", "priya", "quentin", "rosa", "sven",
];
const LAST: &[&str] = &[
    "smith", "jones", "garcia", "mueller", "rossi", "dubois", "tanaka", "kim", "novak", "silva",
    "nguyen", "khan", "larsen", "petrov", "okafor", "cohen", "lopez", "weber", "sato", "brown",
    "ivanova", "haddad", "moreau", "jensen", "costa",
];
const TEAMS: &[&str] = &[
    "platform",
    "sre",
    "payments",
    "checkout",
    "search",
    "identity",
    "data",
    "mobile",
    "ml",
    "growth",
    "security",
    "support",
    "billing",
    "infra",
    "frontend",
    "backend",
    "qa",
    "release",
    "observability",
    "networking",
];
const TEAM_KINDS: &[&str] = &[
    "engineers",
    "oncall",
    "leads",
    "readers",
    "contractors",
    "admins",
];
const PRODUCTS: &[&str] = &[
    "payments",
    "checkout",
    "search",
    "identity",
    "ledger",
    "catalog",
    "inventory",
    "shipping",
    "pricing",
    "reviews",
    "recommend",
    "notify",
    "media",
    "maps",
    "chat",
    "analytics",
    "billing",
    "fraud",
    "loyalty",
    "booking",
];
const ENVS: &[&str] = &["prod", "staging", "dev", "qa", "edge", "ci"];
const REGIONS: &[&str] = &[
    "eu-west",
    "eu-central",
    "us-east",
    "us-west",
    "ap-south",
    "ap-east",
];
const APPS: &[&str] = &[
    "api", "web", "worker", "batch", "db", "cache", "jobs", "gateway",
];
const K8S_VERSIONS: &[&str] = &["v1.29.10", "v1.30.6", "v1.31.2", "v1.32.0"];

/// The namespaces of a project (the bindings at namespace scope name some of them).
pub fn namespaces_of(project: &str) -> Vec<String> {
    APPS.iter()
        .take(4)
        .map(|a| format!("{project}-{a}"))
        .collect()
}

async fn insert_chunks<A, C>(db: &C, rows: Vec<A>) -> DomainResult<()>
where
    A: ActiveModelTrait + Send,
    <A::Entity as EntityTrait>::Model: sea_orm::IntoActiveModel<A>,
    C: TransactionTrait,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let tx = db.begin().await?;
        for _ in 0..INSERTS_PER_TRANSACTION {
            let chunk: Vec<A> = rows.by_ref().take(ROWS_PER_INSERT).collect();
            if chunk.is_empty() {
                break;
            }
            <A::Entity as EntityTrait>::insert_many(chunk)
                .exec_without_returning(&tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Create the organization described by `opts`. `progress` is told each table as it is done.
pub async fn seed(
    db: &DatabaseConnection,
    opts: &SeedOptions,
    now: Timestamp,
    mut progress: impl FnMut(&str, u64),
) -> DomainResult<Seeded> {
    if organization::Entity::find().count(db).await? == 0 {
        return Err(DomainError::conflict(
            "organization",
            "the organization is not initialised: start warden once (or run a command that bootstraps it) first",
        ));
    }
    let existing_users = users::Entity::find().count(db).await?;
    if existing_users > 1 && !opts.force {
        return Err(DomainError::conflict(
            "users",
            format!(
                "the database already has {existing_users} users: seeding is for an empty organization (pass --force to add to it anyway)"
            ),
        ));
    }
    let mut rng = Rng(opts.seed ^ existing_users.wrapping_mul(0x9E37));
    let now = now.millis();
    let year = 365 * 86_400_000i64;
    let mut out = Seeded::default();

    // Numbering continues after the rows already there, so names never clash on --force.
    let base_user = existing_users;
    let base_group = groups::Entity::find().count(db).await?;
    let base_project = projects::Entity::find().count(db).await?;
    let base_cluster = clusters::Entity::find().count(db).await?;

    // ---- users ----
    let mut user_ids = Vec::with_capacity(opts.users as usize);
    let mut rows = Vec::with_capacity(opts.users as usize);
    for i in 0..opts.users {
        let n = base_user + i;
        let first = FIRST[(n as usize) % FIRST.len()];
        let last = LAST[(n as usize / FIRST.len()) % LAST.len()];
        let id = rng.uuid();
        let created = now - year + rng.below(year as u64 - 86_400_000) as i64;
        let cap = |s: &str| {
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        };
        rows.push(users::ActiveModel::from(users::Model {
            id: id.clone(),
            email: format!("{first}.{last}.{n}@example.com"),
            name: format!("{} {}", cap(first), cap(last)),
            password_hash: None,
            status: if rng.chance(4) {
                crate::identity::accounts::STATUS_DEACTIVATED
            } else {
                crate::identity::accounts::STATUS_ACTIVE
            }
            .into(),
            origin: crate::identity::accounts::ORIGIN_LOCAL.into(),
            must_change_password: rng.chance(10),
            created_at: created,
            updated_at: created,
            last_login_at: rng
                .chance(80)
                .then(|| now - rng.below(30 * 86_400_000) as i64),
            session_generation: 0,
        }));
        user_ids.push(id);
    }
    insert_chunks(db, rows).await?;
    out.users = opts.users;
    progress("users", out.users);

    // ---- groups and their members (everyone is in All Users, as `users::create` does) ----
    let mut group_ids = Vec::with_capacity(opts.groups as usize);
    let mut rows = Vec::with_capacity(opts.groups as usize);
    for i in 0..opts.groups {
        let n = base_group + i;
        let team = TEAMS[(n as usize) % TEAMS.len()];
        let kind = TEAM_KINDS[(n as usize / TEAMS.len()) % TEAM_KINDS.len()];
        let id = rng.uuid();
        rows.push(groups::ActiveModel::from(groups::Model {
            id: id.clone(),
            name: format!("{team}-{kind}-{n}"),
            description: format!("The {team} {kind}"),
            builtin: false,
            created_at: now - year,
            updated_at: now - year,
        }));
        group_ids.push(id);
    }
    insert_chunks(db, rows).await?;
    out.groups = opts.groups;
    progress("groups", out.groups);

    let all_users = groups::Entity::find()
        .filter(groups::Column::Name.eq(ALL_USERS_GROUP))
        .one(db)
        .await?;
    let mut rows = Vec::new();
    for uid in &user_ids {
        if let Some(g) = &all_users {
            rows.push(group_members::ActiveModel::from(group_members::Model {
                group_id: g.id.clone(),
                user_id: uid.clone(),
                created_at: now,
            }));
        }
        if group_ids.is_empty() {
            continue;
        }
        // One to four teams each, distinct.
        let k = 1 + rng.below(4) as usize;
        let mut picked: Vec<&String> = Vec::with_capacity(k);
        for _ in 0..k {
            let g = rng.pick(&group_ids);
            if !picked.contains(&g) {
                picked.push(g);
            }
        }
        for g in picked {
            rows.push(group_members::ActiveModel::from(group_members::Model {
                group_id: g.clone(),
                user_id: uid.clone(),
                created_at: now,
            }));
        }
    }
    out.memberships = rows.len() as u64;
    insert_chunks(db, rows).await?;
    progress("group members", out.memberships);

    // ---- projects ----
    let mut project_rows: Vec<(String, String)> = Vec::with_capacity(opts.projects as usize);
    let mut rows = Vec::with_capacity(opts.projects as usize);
    for i in 0..opts.projects {
        let n = base_project + i;
        let product = PRODUCTS[(n as usize) % PRODUCTS.len()];
        let name = format!("{product}-{n}");
        let id = rng.uuid();
        rows.push(projects::ActiveModel::from(projects::Model {
            id: id.clone(),
            name: name.clone(),
            description: format!("The {product} team's services ({n})"),
            created_at: now - year,
            updated_at: now - year,
            approver_group_id: None,
        }));
        project_rows.push((id, name));
    }
    insert_chunks(db, rows).await?;
    out.projects = opts.projects;
    progress("projects", out.projects);

    // ---- clusters, owned by a project; one in five shared with one to three others ----
    if !project_rows.is_empty() {
        let mut rows = Vec::with_capacity(opts.clusters as usize);
        let mut shares = Vec::new();
        for i in 0..opts.clusters {
            let n = base_cluster + i;
            let env = ENVS[(n as usize) % ENVS.len()];
            let region = REGIONS[(n as usize / ENVS.len()) % REGIONS.len()];
            let id = rng.uuid();
            let owner = rng.pick(&project_rows).0.clone();
            let status = match rng.below(10) {
                0..=6 => cluster_status::CONNECTED,
                7..=8 => cluster_status::DISCONNECTED,
                _ => cluster_status::PENDING,
            };
            let seen = (status != cluster_status::PENDING).then(|| now - rng.below(600_000) as i64);
            rows.push(clusters::ActiveModel::from(clusters::Model {
                id: id.clone(),
                name: format!("{env}-{region}-{n}"),
                description: format!("{env} in {region}"),
                labels: serde_json::json!({ "env": env, "region": region }).to_string(),
                project_id: owner.clone(),
                status: status.into(),
                status_reason: match status {
                    cluster_status::PENDING => {
                        Some("waiting for the agent's first connection".into())
                    }
                    cluster_status::DISCONNECTED => Some("the agent's connection closed".into()),
                    _ => None,
                },
                last_seen: seen,
                registered_at: seen.map(|_| now - year / 2),
                connected_at: seen,
                kubernetes_version: seen.map(|_| (*rng.pick(K8S_VERSIONS)).to_owned()),
                node_count: seen.map(|_| 1 + rng.below(60) as i32),
                agent_version: seen.map(|_| "0.1.0".to_owned()),
                fingerprint: None,
                facts: "{}".into(),
                proxy: "{}".into(),
                created_at: now - year / 2,
                updated_at: now - year / 2,
                agent_public_key: None,
                agent_key_registered_at: None,
            }));
            if rng.chance(20) {
                let mut with: Vec<&String> = Vec::new();
                for _ in 0..1 + rng.below(3) {
                    let p = &rng.pick(&project_rows).0;
                    if *p != owner && !with.contains(&p) {
                        with.push(p);
                    }
                }
                for p in with {
                    shares.push(cluster_shares::ActiveModel::from(cluster_shares::Model {
                        cluster_id: id.clone(),
                        project_id: p.clone(),
                        created_at: now,
                    }));
                }
            }
        }
        insert_chunks(db, rows).await?;
        out.clusters = opts.clusters;
        progress("clusters", out.clusters);
        out.shares = shares.len() as u64;
        insert_chunks(db, shares).await?;
        progress("cluster shares", out.shares);
    }

    // ---- bindings: mostly project scope, a third namespace scope, a few organization-wide;
    // seven in ten to a user, the rest to a group ----
    let role_rows = roles::Entity::find().all(db).await?;
    let by_scope = |s: Scope| -> Vec<String> {
        role_rows
            .iter()
            .filter(|r| Scope::parse(&r.scope) == Some(s) && r.name != "ADMIN")
            .map(|r| r.id.clone())
            .collect()
    };
    let (org_roles, project_roles, ns_roles) = (
        by_scope(Scope::Organization),
        by_scope(Scope::Project),
        by_scope(Scope::Namespace),
    );
    let mut rows = Vec::with_capacity(opts.bindings as usize);
    for _ in 0..opts.bindings {
        let to_user = group_ids.is_empty() || rng.chance(70);
        if to_user && user_ids.is_empty() {
            break;
        }
        let (kind, user_id, group_id) = if to_user {
            (
                crate::dto::SubjectKind::User,
                Some(rng.pick(&user_ids).clone()),
                None,
            )
        } else {
            (
                crate::dto::SubjectKind::Group,
                None,
                Some(rng.pick(&group_ids).clone()),
            )
        };
        let r = rng.below(100);
        let (role, project, namespaces) = if r < 1 && !org_roles.is_empty() {
            (rng.pick(&org_roles).clone(), None, Vec::new())
        } else if r < 66 && !project_roles.is_empty() && !project_rows.is_empty() {
            let p = rng.pick(&project_rows);
            (rng.pick(&project_roles).clone(), Some(p.0.clone()), vec![])
        } else if !ns_roles.is_empty() && !project_rows.is_empty() {
            let p = rng.pick(&project_rows);
            let all = namespaces_of(&p.1);
            let k = 1 + rng.below(2) as usize;
            let ns: Vec<String> = all
                .into_iter()
                .skip(rng.below(3) as usize)
                .take(k)
                .collect();
            (rng.pick(&ns_roles).clone(), Some(p.0.clone()), ns)
        } else {
            continue;
        };
        let created = now - rng.below(year as u64) as i64;
        rows.push(bindings::ActiveModel::from(bindings::Model {
            id: rng.uuid(),
            subject_kind: kind.as_str().into(),
            user_id,
            group_id,
            role_id: role,
            project_id: project,
            namespaces: serde_json::to_string(&namespaces).unwrap_or_else(|_| "[]".into()),
            created_at: created,
            // One in twenty is temporary (some of those already past, kept a day for "why").
            expires_at: rng
                .chance(5)
                .then(|| now - 3_600_000 + rng.below(30 * 86_400_000) as i64),
            expiry_recorded_at: None,
            access_request_id: None,
        }));
    }
    out.bindings = rows.len() as u64;
    insert_chunks(db, rows).await?;
    progress("bindings", out.bindings);

    // Fresh statistics for the planner after a bulk load.
    db.execute_unprepared("ANALYZE").await?;
    Ok(out)
}
