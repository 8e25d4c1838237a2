use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "clusters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub description: String,
    /// JSON object: label key -> value.
    pub labels: String,
    pub project_id: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub last_seen: Option<i64>,
    pub registered_at: Option<i64>,
    pub connected_at: Option<i64>,
    pub kubernetes_version: Option<String>,
    pub node_count: Option<i32>,
    pub agent_version: Option<String>,
    pub fingerprint: Option<String>,
    /// JSON: namespaces and nodes as last reported.
    pub facts: String,
    /// JSON: the agent's dial-out proxy settings.
    pub proxy: String,
    pub created_at: i64,
    pub updated_at: i64,
    /// The agent's Ed25519 public key (base64url), registered with its bootstrap token. NULL
    /// for a cluster registered before agents had keys: its credential is refused until it is
    /// registered again.
    pub agent_public_key: Option<String>,
    pub agent_key_registered_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
