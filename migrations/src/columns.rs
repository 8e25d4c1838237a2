//! Column and key helpers shared by the migrations: portable DDL only (the same statements
//! on SQLite and PostgreSQL), timestamps as BIGINT milliseconds (UTC).

use sea_orm_migration::prelude::*;

pub(crate) fn id(name: &str) -> Alias {
    Alias::new(name)
}

/// A primary key holding a UUID in text form.
pub(crate) fn uuid_pk() -> ColumnDef {
    ColumnDef::new(id("id"))
        .string_len(36)
        .not_null()
        .primary_key()
        .to_owned()
}

pub(crate) fn text(name: &str) -> ColumnDef {
    ColumnDef::new(id(name)).text().not_null().to_owned()
}

pub(crate) fn text_null(name: &str) -> ColumnDef {
    ColumnDef::new(id(name)).text().null().to_owned()
}

pub(crate) fn string(name: &str, len: u32) -> ColumnDef {
    ColumnDef::new(id(name))
        .string_len(len)
        .not_null()
        .to_owned()
}

pub(crate) fn string_null(name: &str, len: u32) -> ColumnDef {
    ColumnDef::new(id(name)).string_len(len).null().to_owned()
}

pub(crate) fn millis(name: &str) -> ColumnDef {
    ColumnDef::new(id(name)).big_integer().not_null().to_owned()
}

pub(crate) fn millis_null(name: &str) -> ColumnDef {
    ColumnDef::new(id(name)).big_integer().null().to_owned()
}

pub(crate) fn int(name: &str) -> ColumnDef {
    ColumnDef::new(id(name)).integer().not_null().to_owned()
}

pub(crate) fn boolean(name: &str) -> ColumnDef {
    ColumnDef::new(id(name))
        .boolean()
        .not_null()
        .default(false)
        .to_owned()
}

pub(crate) fn bool_null(name: &str) -> ColumnDef {
    ColumnDef::new(id(name)).boolean().null().to_owned()
}

pub(crate) fn fk(
    name: &str,
    from: (&str, &str),
    to: &str,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(id(from.0), id(from.1))
        .to(id(to), id("id"))
        .on_delete(on_delete)
        .to_owned()
}
