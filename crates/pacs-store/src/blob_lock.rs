//! Locks on blob keys between the stores that make a blob durable and index it, and the
//! removal of blobs whose last row was deleted.
//!
//! A blob is named by its content hash, so two objects with the same bytes share one: a store
//! of bytes already present finds the blob there and only adds its row. If a removal checked
//! "no row refers to it" after that store found the blob but before its row committed, then
//! deleted the blob, the new row would point to nothing. So a store holds its key **shared**
//! from before its blob commit until its index commit, and a removal holds the key
//! **exclusively** from its reference check until the blob is gone: whichever comes second
//! waits, and a store that waited finds the blob absent and writes it again.
//!
//! The lock lives where the nodes that can race meet: one process on the embedded SQLite
//! index (a read-write lock for every key), the PostgreSQL engine when several nodes share
//! one (transaction-scoped advisory locks, released by the engine if a node dies or its
//! connection drops, so a crashed node never leaves a key locked).

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::IndexError;

/// Whether the lock is taken by a store (many at once) or by a removal (alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobLockMode {
    Store,
    Remove,
}

/// A held lock on one blob key; released when dropped (on PostgreSQL, its transaction is
/// rolled back, which the pool flushes as the connection comes back).
pub struct BlobLock {
    _held: Held,
}

enum Held {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
    Postgres(#[allow(dead_code)] Transaction<'static, Postgres>),
}

/// The advisory-lock class of blob keys (the two-integer key space, apart from the
/// single-integer one of the migration lock); the object id is the key's first 32 bits, so
/// two keys sharing them only wait for each other.
const BLOB_LOCK_CLASS: i32 = 0x626c_6f62; // "blob"

/// How long a removal waits for stores of the same key before it leaves the blob for a later
/// pass (its deletion row stays).
const REMOVAL_WAIT: &str = "30s";

pub(crate) enum BlobLocks {
    Process(Arc<RwLock<()>>),
    /// A pool of its own: a store holds its connection from blob commit to index commit, and
    /// must not take one the readers need. With the longest a store waits for its lock: an
    /// engine that stops answering must not hold stores forever (see `IndexOptions`).
    Postgres(PgPool, Duration),
}

impl BlobLocks {
    pub(crate) fn process() -> BlobLocks {
        BlobLocks::Process(Arc::new(RwLock::new(())))
    }

    pub(crate) fn postgres(options: PgConnectOptions, deadline: Duration) -> BlobLocks {
        BlobLocks::Postgres(
            PgPoolOptions::new()
                .max_connections(32)
                .min_connections(0)
                // Stores queue here under load; an engine that does not answer fails them within
                // seconds (A700, try again later), as every other index access does.
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(options),
            deadline,
        )
    }

    pub(crate) async fn lock(&self, key: &str, mode: BlobLockMode) -> Result<BlobLock, IndexError> {
        let held = match self {
            BlobLocks::Process(lock) => match mode {
                BlobLockMode::Store => Held::Shared(lock.clone().read_owned().await),
                BlobLockMode::Remove => Held::Exclusive(lock.clone().write_owned().await),
            },
            BlobLocks::Postgres(pool, deadline) => {
                // A removal waits up to REMOVAL_WAIT for the engine's lock, then some.
                let limit = match mode {
                    BlobLockMode::Store => *deadline,
                    BlobLockMode::Remove => *deadline + Duration::from_secs(30),
                };
                let locked = tokio::time::timeout(limit, Self::postgres_lock(pool, key, mode)).await;
                Held::Postgres(locked.map_err(|_| {
                    IndexError::Unavailable(format!("the index did not answer within {} s", limit.as_secs()))
                })??)
            }
        };
        Ok(BlobLock { _held: held })
    }

    async fn postgres_lock(
        pool: &PgPool,
        key: &str,
        mode: BlobLockMode,
    ) -> Result<Transaction<'static, Postgres>, IndexError> {
        // One round trip: the transaction's BEGIN carries the lock (the numbers are ours, not
        // the key's text, so nothing needs binding).
        let object = lock_object(key);
        let statement = match mode {
            BlobLockMode::Store => {
                format!("BEGIN; SELECT pg_advisory_xact_lock_shared({BLOB_LOCK_CLASS}, {object})")
            }
            BlobLockMode::Remove => format!(
                "BEGIN; SET LOCAL lock_timeout = '{REMOVAL_WAIT}'; \
                 SELECT pg_advisory_xact_lock({BLOB_LOCK_CLASS}, {object})"
            ),
        };
        Ok(pool.begin_with(statement).await?)
    }
}

/// The advisory lock's object id for a key: its first 8 hex digits (0 for anything that is
/// not a key, which the blob stores refuse anyway).
fn lock_object(key: &str) -> i32 {
    key.get(..8)
        .and_then(|head| u32::from_str_radix(head, 16).ok())
        .map_or(0, |n| n as i32)
}

/// Whether a removal gave up waiting for the stores of its key (PostgreSQL's lock_timeout):
/// the blob is left for a later pass, not an error to report.
pub fn is_lock_timeout(e: &IndexError) -> bool {
    match e {
        IndexError::Database(sqlx::Error::Database(db)) => db.code().as_deref() == Some("55P03"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::test_index_url;
    use crate::{Index, SqlIndex};

    /// Two nodes on PostgreSQL (two indexes on one database); on SQLite one process, so both
    /// roles use the one index.
    async fn two_nodes(dir: &std::path::Path) -> (Arc<SqlIndex>, Arc<SqlIndex>) {
        let url = test_index_url(dir).await;
        let a = Arc::new(SqlIndex::open_url(&url).await.unwrap());
        let b = if url.starts_with("postgres") {
            Arc::new(SqlIndex::open_url(&url).await.unwrap())
        } else {
            a.clone()
        };
        (a, b)
    }

    /// Whether `lock` is still waiting after a while, then taken once `holder` is dropped.
    async fn waits_for(holder: BlobLock, index: Arc<SqlIndex>, key: &str, mode: BlobLockMode) {
        let key = key.to_string();
        let mut waiting = tokio::spawn(async move { index.lock_blob(&key, mode).await.map(drop) });
        let early = tokio::time::timeout(Duration::from_millis(400), &mut waiting).await;
        assert!(early.is_err(), "{mode:?} lock taken while the other was held");
        drop(holder);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("lock taken once released")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_removal_waits_for_stores_of_its_key_and_a_store_for_a_removal() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = two_nodes(dir.path()).await;
        let key = "ab".repeat(32);
        // Stores share a key.
        let first = a.lock_blob(&key, BlobLockMode::Store).await.unwrap();
        let second = tokio::time::timeout(Duration::from_secs(5), b.lock_blob(&key, BlobLockMode::Store))
            .await
            .expect("two stores of one key at once")
            .unwrap();
        drop(second);
        // A removal on the other node waits for the store, and a store for a removal.
        waits_for(first, b.clone(), &key, BlobLockMode::Remove).await;
        let removal = b.lock_blob(&key, BlobLockMode::Remove).await.unwrap();
        waits_for(removal, a.clone(), &key, BlobLockMode::Store).await;
        // Another key is not held up (on PostgreSQL, where locks are per key).
        if !Arc::ptr_eq(&a, &b) {
            let _store = a.lock_blob(&key, BlobLockMode::Store).await.unwrap();
            let other = "cd".repeat(32);
            tokio::time::timeout(Duration::from_secs(5), b.lock_blob(&other, BlobLockMode::Remove))
                .await
                .expect("a removal of another key goes ahead")
                .unwrap();
        }
    }

    #[test]
    fn lock_objects_come_from_the_key_s_first_32_bits() {
        let key = format!("ffffffff{}", "0".repeat(56));
        assert_eq!(lock_object(&key), -1);
        assert_eq!(lock_object(&"00000001".repeat(8)), 1);
        assert_eq!(lock_object("xyz"), 0);
        assert_eq!(lock_object("0000"), 0);
    }
}
