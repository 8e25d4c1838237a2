use sea_orm::entity::prelude::*;

/// kubectl settings of one level (`org`, `user:<id>`, `cluster:<id>`); `None` inherits.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kubectl_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub scope: String,
    pub subject_id: Option<String>,
    pub validity_secs: Option<i64>,
    pub max_validity_secs: Option<i64>,
    pub sa_idle_secs: Option<i64>,
    pub require_recent_sign_in: Option<bool>,
    pub recent_sign_in_secs: Option<i64>,
    pub disable_cli: Option<bool>,
    pub secrets_org_admins_only: Option<bool>,
    pub updated_at: i64,
    pub terminal_idle_secs: Option<i64>,
    pub terminal_max_secs: Option<i64>,
    pub terminal_max_concurrent: Option<i64>,
    pub terminal_record_input: Option<bool>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
