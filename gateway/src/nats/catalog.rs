//! Session headers in the key-value bucket, one key per session (the subject token).

use async_nats::jetstream::kv::CreateErrorKind;
use bytes::Bytes;

use super::{Store, StoreError, subjects, unavailable};
use crate::sessions::model::{Session, SessionId};

#[derive(Debug, thiserror::Error)]
pub enum CreateSessionFailure {
    #[error("a session with this id exists")]
    Exists,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Creates the header only if no session has this id: the bucket's create is atomic, so
    /// of two racing creates exactly one wins, on any gateway.
    pub async fn create_session(&self, session: &Session) -> Result<(), CreateSessionFailure> {
        let bucket = self.sessions_bucket()?;
        let value =
            serde_json::to_vec(session).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        match bucket
            .create(subjects::token(&session.id), Bytes::from(value))
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {
                Err(CreateSessionFailure::Exists)
            }
            // The create was sent but its outcome is unknown: a retry may find it stored.
            Err(err) if err.kind() == CreateErrorKind::Ack => {
                Err(StoreError::Timeout(err.to_string()).into())
            }
            Err(err) => Err(unavailable(err).into()),
        }
    }

    pub async fn session(&self, id: &SessionId) -> Result<Option<Session>, StoreError> {
        let bucket = self.sessions_bucket()?;
        let value = bucket.get(subjects::token(id)).await.map_err(|err| {
            if err.kind() == async_nats::jetstream::kv::EntryErrorKind::TimedOut {
                StoreError::Timeout(err.to_string())
            } else {
                unavailable(err)
            }
        })?;
        value
            .map(|value| {
                serde_json::from_slice(&value).map_err(|err| StoreError::Corrupt(err.to_string()))
            })
            .transpose()
    }
}
