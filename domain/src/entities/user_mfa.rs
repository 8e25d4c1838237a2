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

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "Column::UserId",
        to = "super::users::Column::Id"
    )]
    User,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
