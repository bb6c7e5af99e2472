//! Password hashing: argon2id on a small bounded pool whose memory is allocated once.
//!
//! Argon2 is made to cost memory: one hash or verification fills [`ARGON2_M_KIB`] KiB
//! (19 MiB). Run once per request with no bound, 200 parallel wrong passwords from anyone (no
//! account needed) took the server to gigabytes, which the allocator then kept. So every hash
//! and verification the server makes goes through one [`PasswordPool`]: a few slots (one per
//! core, at most [`MAX_SLOTS`]), each owning its Argon2 memory, allocated at its first use and
//! reused, so nothing is allocated per attempt and memory stays bounded by the slot count.
//! Attempts beyond the slots wait in a queue of at most [`MAX_QUEUED`] for at most
//! [`MAX_WAIT`], and are otherwise refused as [`Busy`] (503 with `Retry-After`).
//!
//! Cost parameters: argon2id, version 0x13, m = 19456 KiB, t = 2, p = 1, 16-byte salt, 32-byte
//! output (the `argon2` crate's defaults, OWASP's first recommendation), about 30 ms per
//! verification on one core of a current server. A stored hash needing more memory than a slot
//! holds is refused (and logged) rather than allocated for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

/// Memory cost of one hash, in KiB.
pub const ARGON2_M_KIB: u32 = Params::DEFAULT_M_COST;
/// Passes over that memory.
pub const ARGON2_T: u32 = Params::DEFAULT_T_COST;
/// Lanes.
pub const ARGON2_P: u32 = Params::DEFAULT_P_COST;
/// Most hashes computed at once, whatever the core count.
pub const MAX_SLOTS: usize = 4;
/// Most attempts waiting for a slot; more are refused at once.
pub const MAX_QUEUED: usize = 32;
/// Longest wait for a slot.
pub const MAX_WAIT: Duration = Duration::from_secs(2);

/// The pool was full: come back later.
#[derive(Debug)]
pub struct Busy;

/// Argon2 working memory for one hash.
type Memory = Vec<Block>;

fn new_memory() -> Memory {
    vec![Block::new(); Params::DEFAULT.block_count()]
}

fn argon2_with(params: Params, algorithm: Algorithm, version: Version) -> Argon2<'static> {
    Argon2::new(algorithm, version, params)
}

/// Hashes `password` with a fresh random salt into a PHC string, in `memory`.
fn hash_in(memory: &mut [Block], password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(|e| e.to_string())?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_with(Params::DEFAULT, Algorithm::Argon2id, Version::V0x13)
        .hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, memory)
        .map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.into(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&Params::DEFAULT).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`, computed in `memory` (constant-time
/// comparison of the outputs). Anything unreadable, or needing more memory, does not match.
fn verify_in(memory: &mut [Block], password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else {
        return false;
    };
    let algorithm = Algorithm::try_from(hash.algorithm);
    let version = hash.version.map_or(Ok(Version::V0x13), Version::try_from);
    let (Ok(algorithm), Ok(version), Ok(params)) = (algorithm, version, Params::try_from(&hash)) else {
        return false;
    };
    if params.block_count() > memory.len() {
        tracing::warn!(
            m_kib = params.m_cost(),
            "a stored password hash needs more memory than allowed: refused"
        );
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = [0u8; Output::MAX_LENGTH];
    let out = &mut out[..expected.len()];
    argon2_with(params, algorithm, version)
        .hash_password_into_with_memory(password.as_bytes(), salt, out, memory)
        .is_ok()
        && Output::new(out).is_ok_and(|computed| computed == expected)
}

/// Hashes a password with argon2id and a random salt (PHC string), outside any pool: for
/// the command line, which hashes once and exits.
pub fn hash_password(password: &str) -> Result<String, String> {
    hash_in(&mut new_memory(), password)
}

/// A PHC string of the pool's parameters for a password nobody has (random salt and output,
/// never computed): verified against when a user does not exist, so that an unknown user name
/// costs the same hash and time as a wrong password.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; Params::DEFAULT_OUTPUT_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        let salt = SaltString::generate(&mut OsRng);
        let params = ParamsString::try_from(&Params::DEFAULT).expect("default argon2 parameters");
        PasswordHash {
            algorithm: Algorithm::Argon2id.into(),
            version: Some(Version::V0x13.into()),
            params,
            salt: Some(salt.as_salt()),
            hash: Output::new(&random).ok(),
        }
        .to_string()
    })
}

/// The server's bounded Argon2 pool (see the module documentation).
pub(crate) struct PasswordPool {
    slots: Arc<Semaphore>,
    /// Memory of the slots not in use; at most one per slot ever exists.
    memories: Arc<Mutex<Vec<Memory>>>,
    queued: AtomicUsize,
}

/// Leaves the queue count when the waiting request ends, however it ends (a client that
/// disconnects drops the request's future).
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PasswordPool {
    /// One slot per core, at most [`MAX_SLOTS`].
    pub(crate) fn sized_to_cores() -> PasswordPool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PasswordPool::new(cores.clamp(1, MAX_SLOTS))
    }

    pub(crate) fn new(slots: usize) -> PasswordPool {
        PasswordPool {
            slots: Arc::new(Semaphore::new(slots)),
            memories: Arc::new(Mutex::new(Vec::with_capacity(slots))),
            queued: AtomicUsize::new(0),
        }
    }

    /// Whether `password` matches `phc`.
    pub(crate) async fn verify(&self, password: &str, phc: &str) -> Result<bool, Busy> {
        let (password, phc) = (password.to_string(), phc.to_string());
        self.run(move |memory| verify_in(memory, &password, &phc)).await
    }

    /// A new PHC string for `password`.
    pub(crate) async fn hash(&self, password: &str) -> Result<Result<String, String>, Busy> {
        let password = password.to_string();
        self.run(move |memory| hash_in(memory, &password)).await
    }

    /// Runs `job` on a blocking thread with a slot's memory, once a slot is free.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut [Block]) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return Err(Busy);
                }
                let _queued = Queued(&self.queued);
                match tokio::time::timeout(MAX_WAIT, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(Busy),
                }
            }
        };
        let memories = self.memories.clone();
        // The permit and the memory go back only when the hash is done, even if the request
        // that asked for it has gone: the slot count bounds the memory in use.
        let done = tokio::task::spawn_blocking(move || {
            let mut memory = memories
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_else(new_memory);
            let result = job(&mut memory);
            memories.lock().unwrap_or_else(|e| e.into_inner()).push(memory);
            drop(permit);
            result
        })
        .await;
        // A panic inside argon2 loses that slot's memory (allocated again next time), not the slot.
        done.map_err(|_| Busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_are_argon2id_phc_strings_the_argon2_crate_reads_both_ways() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        let mut memory = new_memory();
        assert!(verify_in(&mut memory, "correct horse", &phc));
        assert!(!verify_in(&mut memory, "correct hors", &phc));
        // A hash made by the crate's own hasher (as earlier openpacs versions stored them).
        let salt = SaltString::generate(&mut OsRng);
        let older = Argon2::default()
            .hash_password(b"older one", &salt)
            .unwrap()
            .to_string();
        assert!(verify_in(&mut memory, "older one", &older));
        assert!(!verify_in(&mut memory, "older two", &older));
        assert!(!verify_in(&mut memory, "x", "not a phc string"));
        assert!(!verify_in(&mut memory, "", decoy_hash()));
        assert!(PasswordHash::new(decoy_hash()).is_ok());
    }

    #[test]
    fn hashes_needing_more_memory_than_a_slot_are_refused() {
        let params = Params::new(ARGON2_M_KIB * 2, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let bigger = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(!verify_in(&mut new_memory(), "pw", &bigger));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn attempts_beyond_the_slots_and_the_queue_are_refused_as_busy() {
        let pool = Arc::new(PasswordPool::new(1));
        let phc = hash_password("pw-pw-pw-pw").unwrap();
        // Hold the only slot until told to let go.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let holder = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move |_| held.recv().is_ok()).await })
        };
        while pool.slots.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let waiters: Vec<_> = (0..MAX_QUEUED)
            .map(|_| {
                let (pool, phc) = (pool.clone(), phc.clone());
                tokio::spawn(async move { pool.verify("wrong", &phc).await })
            })
            .collect();
        while pool.queued.load(Ordering::Acquire) < MAX_QUEUED {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(pool.verify("pw-pw-pw-pw", &phc).await, Err(Busy)));
        release.send(()).unwrap();
        assert!(holder.await.unwrap().unwrap());
        for waiter in waiters {
            // Each either ran (and did not match) or gave up after MAX_WAIT.
            assert!(!matches!(waiter.await.unwrap(), Ok(true)));
        }
        assert_eq!(pool.queued.load(Ordering::Acquire), 0);
        assert!(pool.memories.lock().unwrap().len() <= 1, "one slot, one memory");
        assert!(pool.verify("pw-pw-pw-pw", &phc).await.unwrap());
    }
}
