use sea_orm::entity::prelude::*;

/// One chunk of a terminal's recording (asciicast v2 lines, in order of `seq`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "terminal_recording_chunks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub recording_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i32,
    #[sea_orm(column_type = "Blob")]
    pub data: Vec<u8>,
    /// The recording's start (ms), the same on every chunk: retention removes it whole.
    pub started_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
