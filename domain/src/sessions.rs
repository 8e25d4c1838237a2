//! Browser sessions: a tower-sessions store over sea-orm (same table on SQLite and
//! PostgreSQL), and the authentication record Warden keeps in a session.

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

/// End every session of a user (deactivation, password change by an administrator).
pub async fn delete_user_sessions<C: sea_orm::ConnectionTrait>(
    db: &C,
    user: UserId,
) -> Result<u64, sea_orm::DbErr> {
    let r = sessions::Entity::delete_many()
        .filter(sessions::Column::UserId.eq(user.to_string()))
        .exec(db)
        .await?;
    Ok(r.rows_affected)
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
        id: record.id.to_string(),
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
        while sessions::Entity::find_by_id(record.id.to_string())
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

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let m = to_model(record)?;
        sessions::Entity::insert(sessions::ActiveModel::from(m))
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(sessions::Column::Id)
                    .update_columns([
                        sessions::Column::Data,
                        sessions::Column::ExpiresAt,
                        sessions::Column::UserId,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(m) = sessions::Entity::find_by_id(id.to_string())
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
        sessions::Entity::delete_by_id(id.to_string())
            .exec(&self.db)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
