use sea_orm::entity::prelude::*;

/// Where the retained audit chain begins after older events were deleted: the last deleted
/// row's `seq` and `hash`, and a MAC over them (see `audit::retention`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_checkpoints")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    pub hash: String,
    /// Rows deleted by the run that wrote this checkpoint.
    pub deleted: i64,
    pub at: i64,
    pub mac: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
