use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "groups")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub description: String,
    pub builtin: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The foreign keys of the table (`belongs_to`, as the migrations declare them) and the
/// tables whose foreign keys name it (`has_many`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::bindings::Entity")]
    Bindings,
    #[sea_orm(has_many = "super::group_members::Entity")]
    GroupMembers,
}

impl Related<super::bindings::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Bindings.def()
    }
}

impl Related<super::group_members::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::GroupMembers.def()
    }
}

/// Groups and users are many-to-many, through `group_members`.
impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        super::group_members::Relation::User.def()
    }
    fn via() -> Option<RelationDef> {
        Some(super::group_members::Relation::Group.def().rev())
    }
}

impl ActiveModelBehavior for ActiveModel {}
