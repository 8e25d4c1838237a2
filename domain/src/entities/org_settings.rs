use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "org_settings")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i32,
    pub session_idle_minutes: i32,
    pub session_absolute_hours: i32,
    pub lockout_threshold: i32,
    pub lockout_window_minutes: i32,
    pub lockout_minutes: i32,
    /// `nobody`, `admins` or `everyone`: who must sign in with a second factor.
    pub mfa_policy: String,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
