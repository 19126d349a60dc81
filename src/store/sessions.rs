//! Dashboard sessions signed out before they expired (`revoked_sessions`): a logout holds
//! across restarts of this replica. The web layer keeps the live set in memory
//! (`web::session`) and asks the store only in these words.

use super::{Store, StoreError};

impl Store {
    /// Remembers that session `id` is signed out until it would have expired (`expires_ms`).
    pub(crate) async fn revoke_session(&self, id: String, expires_ms: i64) -> Result<(), StoreError> {
        self.with_conn(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO revoked_sessions (id, expires_ms) VALUES (?1, ?2)",
                rusqlite::params![id, expires_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// The sessions signed out and not expired at `now_ms` (`(id, expires_ms)`); the expired
    /// ones are forgotten.
    pub(crate) async fn revoked_sessions(&self, now_ms: i64) -> Result<Vec<(String, i64)>, StoreError> {
        self.with_conn(move |c| {
            c.execute("DELETE FROM revoked_sessions WHERE expires_ms <= ?1", [now_ms])?;
            let mut stmt = c.prepare("SELECT id, expires_ms FROM revoked_sessions")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_revoked_session_is_remembered_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store.revoke_session("a".into(), 1_000).await.unwrap();
        store.revoke_session("b".into(), 5_000).await.unwrap();
        assert_eq!(store.revoked_sessions(500).await.unwrap().len(), 2);
        assert_eq!(store.revoked_sessions(1_000).await.unwrap(), [("b".to_owned(), 5_000)]);
        assert_eq!(store.revoked_sessions(0).await.unwrap().len(), 1, "the expired one is gone");
    }
}
