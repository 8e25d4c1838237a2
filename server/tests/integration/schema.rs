//! The entities describe the schema the migrations make: every foreign key in the database is
//! a relation declared on its entity (`belongs_to`), every declared relation is a foreign key,
//! and every `has_many` is the reverse of one of them; on SQLite and on PostgreSQL.

use sea_orm::{
    ConnectionTrait, Identity, Iterable, RelationDef, RelationTrait, RelationType, Statement,
};
use std::collections::BTreeSet;
use warden_domain::entities::*;
use warden_server::testing::TestApp;

/// A single-column foreign key: (table, column, referenced table, referenced column).
type Fk = (String, String, String, String);

fn column(id: &Identity) -> String {
    match id {
        Identity::Unary(c) => c.to_string(),
        other => panic!("a composite key in a relation: {other:?}"),
    }
}

fn fk(d: &RelationDef) -> Fk {
    (
        d.from_tbl.sea_orm_table().to_string(),
        column(&d.from_col),
        d.to_tbl.sea_orm_table().to_string(),
        column(&d.to_col),
    )
}

/// Each entity's declared relations: its `belongs_to` (as foreign keys) and its `has_many`
/// (turned round, so that each reads as the foreign key it follows).
fn declared() -> (BTreeSet<Fk>, BTreeSet<Fk>) {
    let mut belongs = BTreeSet::new();
    let mut many = BTreeSet::new();
    let mut add = |defs: Vec<RelationDef>| {
        for d in defs {
            match d.rel_type {
                RelationType::HasOne => assert!(belongs.insert(fk(&d))),
                RelationType::HasMany => assert!(many.insert(fk(&d.rev()))),
            }
        }
    };
    macro_rules! relations {
        ($($m:ident),* $(,)?) => {$(
            add($m::Relation::iter().map(|r| r.def()).collect());
        )*};
    }
    relations!(
        access_requests,
        agent_challenges,
        api_keys,
        audit_checkpoints,
        audit_events,
        audit_head,
        bindings,
        cluster_agent_credentials,
        cluster_bootstrap_tokens,
        cluster_shares,
        cluster_status_history,
        clusters,
        group_members,
        groups,
        identity_providers,
        jit_settings,
        kube_credentials,
        kube_service_accounts,
        kube_users,
        kubectl_settings,
        login_throttle,
        mfa_recovery_codes,
        one_time_tokens,
        org_settings,
        organization,
        projects,
        roles,
        sessions,
        siem_cursors,
        terminal_recording_chunks,
        user_identities,
        user_mfa,
        users,
        webhook_outbox,
    );
    (belongs, many)
}

/// The foreign keys the database holds, read from its catalogue.
async fn in_database(db: &sea_orm::DatabaseConnection) -> BTreeSet<Fk> {
    let backend = db.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Sqlite => {
            r#"SELECT m.name, p."from", p."table", p."to"
               FROM sqlite_master m JOIN pragma_foreign_key_list(m.name) p
               WHERE m.type = 'table'"#
        }
        _ => {
            "SELECT cl.relname::text, a.attname::text, fcl.relname::text, fa.attname::text
             FROM pg_constraint c
             JOIN pg_class cl ON cl.oid = c.conrelid
             JOIN pg_class fcl ON fcl.oid = c.confrelid
             JOIN pg_namespace n ON n.oid = cl.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
             JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1]
             WHERE c.contype = 'f' AND n.nspname = current_schema()
               AND array_length(c.conkey, 1) = 1"
        }
    };
    db.query_all_raw(Statement::from_string(backend, sql))
        .await
        .expect("read the foreign keys")
        .into_iter()
        .map(|r| {
            let s = |i| r.try_get_by_index::<String>(i).expect("a name");
            (s(0), s(1), s(2), s(3))
        })
        .collect()
}

#[tokio::test]
async fn the_entities_relations_are_the_databases_foreign_keys() {
    let app = TestApp::spawn().await;
    let (belongs, many) = declared();
    let schema = in_database(&app.state.services.db).await;
    assert!(
        schema.len() >= 20,
        "the migrations make foreign keys: {schema:?}"
    );
    let missing: Vec<_> = schema.difference(&belongs).collect();
    assert!(
        missing.is_empty(),
        "foreign keys without a `belongs_to` relation: {missing:?}"
    );
    let invented: Vec<_> = belongs.difference(&schema).collect();
    assert!(
        invented.is_empty(),
        "relations the database does not hold: {invented:?}"
    );
    let stray: Vec<_> = many.difference(&belongs).collect();
    assert!(
        stray.is_empty(),
        "`has_many` relations that no `belongs_to` answers: {stray:?}"
    );
    let one_sided: Vec<_> = belongs.difference(&many).collect();
    assert!(
        one_sided.is_empty(),
        "foreign keys whose referenced entity does not declare its `has_many`: {one_sided:?}"
    );
}
