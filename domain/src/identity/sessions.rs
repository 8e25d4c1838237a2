//! Browser sessions: a tower-sessions store over sea-orm (same table on SQLite and
//! PostgreSQL), and the authentication record Warden keeps in a session.

use sea_orm::ExprTrait;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use crate::clock::{SharedClock, Timestamp};
use crate::entities::sessions;
use crate::ids::UserId;

/// The key under which [`AuthRecord`] is stored in the session.
pub const AUTH_KEY: &str = "warden.auth";

/// Who signed in, and when. Idle and absolute timeouts are checked against it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthRecord {
    pub user_id: UserId,
    pub login_at: Timestamp,
    pub last_seen: Timestamp,
    /// The user's session generation at sign-in: a session of an older generation is dead
    /// (password changed or reset, user deactivated), whatever its row says.
    #[serde(default)]
    pub generation: i64,
    /// When the user last proved a second factor in this session (at sign-in or a step-up).
    #[serde(default)]
    pub mfa_at: Option<Timestamp>,
    /// The identity provider (id) the session signed in with; `None`: a local password. A
    /// password's session ends when local sign-in is no longer open to its user.
    #[serde(default)]
    pub provider: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DbSessionStore {
    db: DatabaseConnection,
    clock: SharedClock,
}

impl DbSessionStore {
    pub fn new(db: DatabaseConnection, clock: SharedClock) -> Self {
        Self { db, clock }
    }

    /// Remove expired sessions; run periodically.
    pub async fn delete_expired(&self) -> Result<u64, sea_orm::DbErr> {
        let r = sessions::Entity::delete_many()
            .filter(sessions::Column::ExpiresAt.lte(self.clock.now().millis()))
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected)
    }
}

/// End every session of a user (deactivation, password change or reset): the user's session
/// generation moves on, so no session made before (even one a concurrent request writes back,
/// or a sign-in that checked the old password) is accepted again, and the rows are deleted.
/// Returns the new generation.
pub async fn delete_user_sessions<C: sea_orm::ConnectionTrait>(
    db: &C,
    user: UserId,
) -> Result<i64, sea_orm::DbErr> {
    use sea_orm::sea_query::Expr;
    crate::entities::users::Entity::update_many()
        .col_expr(
            crate::entities::users::Column::SessionGeneration,
            Expr::col(crate::entities::users::Column::SessionGeneration).add(1),
        )
        .filter(crate::entities::users::Column::Id.eq(user.to_string()))
        .exec(db)
        .await?;
    sessions::Entity::delete_many()
        .filter(sessions::Column::UserId.eq(user.to_string()))
        .exec(db)
        .await?;
    Ok(crate::entities::users::Entity::find_by_id(user.to_string())
        .one(db)
        .await?
        .map_or(0, |u| u.session_generation))
}

/// The row key of a session: the SHA-256 of its id. The id is the cookie's value, a bearer
/// credential like an API key, so the table holds only its digest: whoever reads the database
/// (a backup, a read-only role) finds no cookie to replay. Rows stored by keys of old (the id
/// itself) match no cookie any more and leave with their expiry.
pub fn row_id(id: &Id) -> String {
    crate::secrets::sha256_hex(id.to_string().as_bytes())
}

fn backend(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

fn to_model(record: &Record) -> session_store::Result<sessions::Model> {
    let user_id = record
        .data
        .get(AUTH_KEY)
        .and_then(|v| serde_json::from_value::<AuthRecord>(v.clone()).ok())
        .map(|a| a.user_id.to_string());
    Ok(sessions::Model {
        id: row_id(&record.id),
        data: serde_json::to_string(&record.data)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?,
        expires_at: Timestamp::from_offset(record.expiry_date).millis(),
        user_id,
    })
}

#[async_trait::async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // Never overwrite an existing session with a colliding id.
        while sessions::Entity::find_by_id(row_id(&record.id))
            .one(&self.db)
            .await
            .map_err(backend)?
            .is_some()
        {
            record.id = Id::default();
        }
        let m = to_model(record)?;
        sessions::Entity::insert(sessions::ActiveModel::from(m))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Update an existing session, never re-create one: a session deleted while a request
    /// held it (sign-out, password change, deactivation) stays deleted when that request ends.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let m = to_model(record)?;
        sessions::Entity::update_many()
            .col_expr(
                sessions::Column::Data,
                sea_orm::sea_query::Expr::value(m.data),
            )
            .col_expr(
                sessions::Column::ExpiresAt,
                sea_orm::sea_query::Expr::value(m.expires_at),
            )
            .col_expr(
                sessions::Column::UserId,
                sea_orm::sea_query::Expr::value(m.user_id),
            )
            .filter(sessions::Column::Id.eq(m.id))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(m) = sessions::Entity::find_by_id(row_id(id))
            .filter(sessions::Column::ExpiresAt.gt(self.clock.now().millis()))
            .one(&self.db)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let data = serde_json::from_str(&m.data)
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date: Timestamp(m.expires_at).to_offset(),
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        sessions::Entity::delete_by_id(row_id(id))
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
