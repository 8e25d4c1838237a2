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
    /// `everyone` or `break_glass_only`: who may sign in with a local password.
    pub local_sign_in: String,
    /// JSON array of emails that keep their local password when it is `break_glass_only`.
    pub break_glass_users: String,
    /// How old a second factor may be before a step-up asks for a fresh one.
    pub step_up_max_age_minutes: i32,
    /// Audit events older than this many days are deleted; NULL keeps them forever.
    pub audit_retention_days: Option<i32>,
    pub updated_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
