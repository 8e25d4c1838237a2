use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_mfa")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// The TOTP secret in base32, sealed with the master key when one is set.
    pub secret: String,
    /// Set once the user confirmed enrolment with a first code.
    pub confirmed_at: Option<i64>,
    /// The last time step accepted: a code of this step or an earlier one is refused.
    pub last_step: Option<i64>,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
