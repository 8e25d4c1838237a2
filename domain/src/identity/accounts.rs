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
    /// Who chose `password_hash` for the person (a user manager), if someone else did.
    pub password_set_by: Option<UserId>,
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
    let user = users::ActiveModel::from(model).insert(db).await.on_unique(
        "uq_users_email",
        "email",
        "a user with this email already exists",
    )?;
    if let Some(setter) = new.password_set_by.filter(|_| user.password_hash.is_some()) {
        one_time_tokens::ActiveModel::from(one_time_tokens::Model {
            id: TokenId::new().to_string(),
            token_hash: sha256_hex(random_token(32).as_bytes()),
            purpose: PURPOSE_CHOSEN_PASSWORD.to_owned(),
            user_id: user.id.clone(),
            expires_at: i64::MAX,
            used_at: None,
            created_at: now.millis(),
            issued_by: Some(setter.to_string()),
        })
        .insert(db)
        .await?;
    }
    Ok(user)
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
    end_set_password_links(db, &user.id, now).await?;
    // Set by its owner (a change, or a link used): nobody else knows it.
    end_tokens(db, &user.id, PURPOSE_CHOSEN_PASSWORD, now).await?;
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

/// End the user's set-password links not yet used: a password set, the account handed to a
/// provider or deactivated. Whoever holds one (the person who made the account, a mail
/// archive) sets no password with it afterwards.
pub async fn end_set_password_links<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    now: Timestamp,
) -> DomainResult<u64> {
    end_tokens(db, user_id, PURPOSE_SET_PASSWORD, now).await
}

/// Mark the user's unused rows of `purpose` used.
async fn end_tokens<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
    purpose: &str,
    now: Timestamp,
) -> DomainResult<u64> {
    Ok(one_time_tokens::Entity::update_many()
        .col_expr(
            one_time_tokens::Column::UsedAt,
            sea_orm::sea_query::Expr::value(now.millis()),
        )
        .filter(one_time_tokens::Column::UserId.eq(user_id))
        .filter(one_time_tokens::Column::Purpose.eq(purpose))
        .filter(one_time_tokens::Column::UsedAt.is_null())
        .exec(db)
        .await?
        .rows_affected)
}

/// The mark of a first password someone else chose for the account (a `one_time_tokens` row
/// of this purpose, naming them in `issued_by`; its hash is of a value never handed out, so
/// it is no link): ended when the account's owner sets a password.
pub const PURPOSE_CHOSEN_PASSWORD: &str = "chosen_password";

/// Who chose the account's current password, if someone else did and its owner has not
/// replaced it.
pub async fn password_chosen_by<C: ConnectionTrait>(
    db: &C,
    user_id: &str,
) -> DomainResult<Option<String>> {
    Ok(one_time_tokens::Entity::find()
        .filter(one_time_tokens::Column::UserId.eq(user_id))
        .filter(one_time_tokens::Column::Purpose.eq(PURPOSE_CHOSEN_PASSWORD))
        .filter(one_time_tokens::Column::UsedAt.is_null())
        .one(db)
        .await?
        .and_then(|t| t.issued_by))
}

/// Issue a one-time set-password token for `user` (stored hashed); returns the raw token.
/// Earlier unused tokens of the user stop working.
pub async fn issue_set_password_token<C: ConnectionTrait>(
    db: &C,
    user: UserId,
    issued_by: Option<UserId>,
    now: Timestamp,
) -> DomainResult<String> {
    end_set_password_links(db, &user.to_string(), now).await?;
    let raw = random_token(32);
    one_time_tokens::ActiveModel::from(one_time_tokens::Model {
        id: TokenId::new().to_string(),
        token_hash: sha256_hex(raw.as_bytes()),
        purpose: PURPOSE_SET_PASSWORD.to_owned(),
        user_id: user.to_string(),
        expires_at: now.plus_secs(SET_PASSWORD_TTL_SECS).millis(),
        used_at: None,
        created_at: now.millis(),
        issued_by: issued_by.filter(|i| *i != user).map(|i| i.to_string()),
    })
    .insert(db)
    .await?;
    Ok(raw)
}

/// Find the user a valid, unused set-password token belongs to, without using it up, and who
/// made the link for them (if someone else did).
pub async fn peek_set_password_token<C: ConnectionTrait>(
    db: &C,
    raw: &str,
    now: Timestamp,
) -> DomainResult<(users::Model, Option<String>)> {
    let token = valid_token(db, raw, now).await?;
    let user = users::Entity::find_by_id(token.user_id)
        .one(db)
        .await?
        .filter(|u| u.status == STATUS_ACTIVE)
        .ok_or_else(link_invalid)?;
    Ok((user, token.issued_by))
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
    // A deactivated account's link sets nothing (its password would be the live one the day
    // the account is reactivated).
    users::Entity::find_by_id(user_id)
        .one(db)
        .await?
        .filter(|u| u.status == STATUS_ACTIVE)
        .ok_or_else(link_invalid)
}
