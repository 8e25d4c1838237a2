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

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::projects::Entity",
        from = "Column::ProjectId",
        to = "super::projects::Column::Id"
    )]
    Project,
    #[sea_orm(has_many = "super::cluster_agent_credentials::Entity")]
    ClusterAgentCredentials,
    #[sea_orm(has_many = "super::cluster_bootstrap_tokens::Entity")]
    ClusterBootstrapTokens,
    #[sea_orm(has_many = "super::cluster_shares::Entity")]
    ClusterShares,
    #[sea_orm(has_many = "super::cluster_status_history::Entity")]
    ClusterStatusHistory,
    #[sea_orm(has_many = "super::kube_service_accounts::Entity")]
    KubeServiceAccounts,
}

impl Related<super::projects::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Project.def()
    }
}

impl Related<super::cluster_agent_credentials::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ClusterAgentCredentials.def()
    }
}

impl Related<super::cluster_bootstrap_tokens::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ClusterBootstrapTokens.def()
    }
}

impl Related<super::cluster_shares::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ClusterShares.def()
    }
}

impl Related<super::cluster_status_history::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::ClusterStatusHistory.def()
    }
}

impl Related<super::kube_service_accounts::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::KubeServiceAccounts.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
