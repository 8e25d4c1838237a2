//! Users: lookup, creation, passwords and one-time set-password links.

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, Set,
};

use crate::clock::Timestamp;
use crate::dto::UserSummary;
use crate::entities::{one_time_tokens, users};
use crate::error::{DomainError, DomainResult, OnConstraint};
use crate::ids::{TokenId, UserId};
use crate::secrets::{random_token, sha256_hex};
use crate::types::{DisplayName, Email};

pub const STATUS_ACTIVE: &str = crate::dto::UserStatus::Active.as_str();
pub const STATUS_DEACTIVATED: &str = crate::dto::UserStatus::Deactivated.as_str();
pub const ORIGIN_LOCAL: &str = crate::dto::UserOrigin::Local.as_str();
pub const PURPOSE_SET_PASSWORD: &str = "set_password";
/// How long a set-password link stays valid.
pub const SET_PASSWORD_TTL_SECS: i64 = 24 * 3600;

pub fn summary(m: &users::Model) -> UserSummary {
    UserSummary {
        id: m.id.clone(),
        email: m.email.clone(),
        name: m.name.clone(),
    }
}

pub fn user_id(m: &users::Model) -> DomainResult<UserId> {
    UserId::parse(&m.id).ok_or_else(|| DomainError::Internal(format!("corrupt user id {:?}", m.id)))
}

pub async fn find_by_email<C: ConnectionTrait>(
    db: &C,
    email: &Email,
) -> DomainResult<Option<users::Model>> {
    Ok(users::Entity::find()
        .filter(users::Column::Email.eq(email.as_str()))
        .one(db)
        .await?)
}

pub async fn find_by_id<C: ConnectionTrait>(
    db: &C,
    id: UserId,
) -> DomainResult<Option<users::Model>> {
    Ok(users::Entity::find_by_id(id.to_string()).one(db).await?)
}

pub struct NewUser {
    pub email: Email,
    pub name: DisplayName,
    pub password_hash: Option<String>,
    pub must_change_password: bool,
}

pub async fn create<C: ConnectionTrait>(
    db: &C,
    new: NewUser,
    now: Timestamp,
) -> DomainResult<users::Model> {
    let model = users::Model {
        id: UserId::new().to_string(),
        email: new.email.as_str().to_owned(),
        name: new.name.as_str().to_owned(),
        password_hash: new.password_hash,
        status: STATUS_ACTIVE.to_owned(),
        origin: ORIGIN_LOCAL.to_owned(),
        must_change_password: new.must_change_password,
        created_at: now.millis(),
        updated_at: now.millis(),
        last_login_at: None,
        session_generation: 0,
    };
    users::ActiveModel::from(model).insert(db).await.on_unique(
        "uq_users_email",
        "email",
        "a user with this email already exists",
    )
}

pub async fn set_password<C: ConnectionTrait>(
    db: &C,
    user: users::Model,
    password_hash: String,
    must_change: bool,
    now: Timestamp,
) -> DomainResult<users::Model> {
    // A password set ends every set-password link still waiting (in a mail archive, a
    // ticket): one found later sets no other password.
    one_time_tokens::Entity::update_many()
        .col_expr(
            one_time_tokens::Column::UsedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(one_time_tokens::Column::UserId.eq(user.id.clone()))
        .filter(one_time_tokens::Column::Purpose.eq(PURPOSE_SET_PASSWORD))
        .filter(one_time_tokens::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    let mut a = user.into_active_model();
    a.password_hash = Set(Some(password_hash));
    a.must_change_password = Set(must_change);
    a.updated_at = Set(now.millis());
    Ok(a.update(db).await?)
}

pub async fn record_login<C: ConnectionTrait>(
    db: &C,
    user: users::Model,
    now: Timestamp,
) -> DomainResult<users::Model> {
    let mut a = user.into_active_model();
    a.last_login_at = Set(Some(now.millis()));
    Ok(a.update(db).await?)
}

/// Issue a one-time set-password token for `user` (stored hashed); returns the raw token.
/// Earlier unused tokens of the user stop working.
pub async fn issue_set_password_token<C: ConnectionTrait>(
    db: &C,
    user: UserId,
    now: Timestamp,
) -> DomainResult<String> {
    one_time_tokens::Entity::update_many()
        .col_expr(
            one_time_tokens::Column::UsedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(one_time_tokens::Column::UserId.eq(user.to_string()))
        .filter(one_time_tokens::Column::Purpose.eq(PURPOSE_SET_PASSWORD))
        .filter(one_time_tokens::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    let raw = random_token(32);
    one_time_tokens::ActiveModel::from(one_time_tokens::Model {
        id: TokenId::new().to_string(),
        token_hash: sha256_hex(raw.as_bytes()),
        purpose: PURPOSE_SET_PASSWORD.to_owned(),
        user_id: user.to_string(),
        expires_at: now.plus_secs(SET_PASSWORD_TTL_SECS).millis(),
        used_at: None,
        created_at: now.millis(),
    })
    .insert(db)
    .await?;
    Ok(raw)
}

/// Find the user a valid, unused set-password token belongs to, without using it up.
pub async fn peek_set_password_token<C: ConnectionTrait>(
    db: &C,
    raw: &str,
    now: Timestamp,
) -> DomainResult<users::Model> {
    let token = valid_token(db, raw, now).await?;
    users::Entity::find_by_id(token.user_id)
        .one(db)
        .await?
        .ok_or_else(|| DomainError::invalid("token", "this link is not valid"))
}

/// A set-password link that cannot be used (unknown, expired, or used already).
fn link_invalid() -> DomainError {
    DomainError::invalid(
        "token",
        "this link is not valid, has expired or was already used; ask an administrator for a new one",
    )
}

async fn valid_token<C: ConnectionTrait>(
    db: &C,
    raw: &str,
    now: Timestamp,
) -> DomainResult<one_time_tokens::Model> {
    let token = one_time_tokens::Entity::find()
        .filter(one_time_tokens::Column::TokenHash.eq(sha256_hex(raw.as_bytes())))
        .filter(one_time_tokens::Column::Purpose.eq(PURPOSE_SET_PASSWORD))
        .one(db)
        .await?
        .ok_or_else(link_invalid)?;
    if token.used_at.is_some() || token.expires_at <= now.millis() {
        return Err(link_invalid());
    }
    Ok(token)
}

/// Use a set-password token: marks it used and returns the user. Call inside the transaction
/// that sets the password.
pub async fn consume_set_password_token<C: ConnectionTrait>(
    db: &C,
    raw: &str,
    now: Timestamp,
) -> DomainResult<users::Model> {
    let token = valid_token(db, raw, now).await?;
    let user_id = token.user_id.clone();
    // Used once: the row is marked only if no one else marked it first (two uses racing, on a
    // database whose transactions do not serialize them, find one row to mark between them).
    let marked = one_time_tokens::Entity::update_many()
        .col_expr(
            one_time_tokens::Column::UsedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(one_time_tokens::Column::Id.eq(token.id.clone()))
        .filter(one_time_tokens::Column::UsedAt.is_null())
        .exec(db)
        .await?
        .rows_affected;
    if marked != 1 {
        return Err(link_invalid());
    }
    users::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .ok_or_else(|| DomainError::invalid("token", "this link is not valid"))
}
