use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub seq: i64,
    pub id: String,
    pub at: i64,
    pub kind: String,
    pub actor_id: Option<String>,
    pub actor_name: String,
    pub session_type: String,
    pub project: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub action: String,
    pub resource_kind: Option<String>,
    pub resource_name: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub http_method: Option<String>,
    pub path: Option<String>,
    pub status: Option<i32>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub duration_ms: Option<i64>,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
