use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "one_time_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub token_hash: String,
    pub purpose: String,
    pub user_id: String,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub created_at: i64,
    /// Who made the link for someone else (none: Warden itself, or the person it is for).
    pub issued_by: Option<String>,
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
