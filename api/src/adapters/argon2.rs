//! Argon2id password hashing on a dedicated, bounded pool of threads.
//!
//! Argon2id is memory-hard by design: each hash fills `m` KiB (19 MiB at OWASP's minimum).
//! Run on tokio's blocking pool, hundreds could run at once and each allocation lingers in the
//! allocator, so memory grows with the login rate. Here a fixed number of workers (one per core
//! by default) each own one block buffer, so memory is bounded by workers × m; and a bounded
//! queue in front of them answers "saturated" at once when full, which the API turns into 503
//! with `Retry-After` rather than letting requests wait for seconds.
//!
//! A worker keeps its buffer only while jobs follow each other: when it finds the queue empty
//! it frees the buffer before it waits, so an idle service holds no Argon2 memory, and a busy
//! one allocates once per busy spell rather than once per hash. See [`BlockBuffer`] for how
//! the memory actually goes back to the operating system.
//!
//! The workers can run at a lower scheduling priority than the rest of the process (a nice
//! value): a hash takes tens of milliseconds of CPU, a token check or a refresh a fraction of
//! one, and while logins keep every worker busy the cheap requests would otherwise wait for a
//! core behind them. The hashes still get every cycle nothing else wants, so the rate of
//! logins stays what the cores allow.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, TryLockError};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;
use twofold_domain::services::{HasherError, PasswordHasher};
use twofold_domain::values::{NewPassword, PasswordHash};
use zeroize::Zeroizing;

const SALT_BYTES: usize = 16;
const OUTPUT_BYTES: usize = 32;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Argon2Params {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Argon2Params {
    /// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
    pub const OWASP_MINIMUM: Self = Self {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// Cheap parameters that make tests fast and passwords trivially crackable. Never use them
    /// for a real deployment.
    pub const fn insecure_for_tests() -> Self {
        Self {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn to_params(self) -> Result<Params, HasherError> {
        Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(OUTPUT_BYTES),
        )
        .map_err(|_| HasherError::Failed)
    }
}

type Job = Box<dyn FnOnce(&mut BlockBuffer) + Send>;

/// The smallest allocation, in blocks, that glibc's malloc always serves with its own `mmap`
/// and returns with `munmap` when freed: just over 32 MiB, `DEFAULT_MMAP_THRESHOLD_MAX` on
/// 64-bit targets. Below it glibc's threshold is dynamic: once a 19 MiB buffer has been freed,
/// the threshold rises past it, later buffers come from a thread arena, and freeing one leaves
/// its pages resident (the arena trims only past twice the threshold). Measured with the
/// benchmark: idle RSS after a login burst stayed 2 × 19 MiB above the fresh service's.
const ALWAYS_MAPPED_BLOCKS: usize = 32 * 1024 + 1;

/// A worker's Argon2 memory, allocated when a busy spell starts and freed when it ends.
///
/// The allocation reserves at least [`ALWAYS_MAPPED_BLOCKS`] of capacity but writes only the
/// blocks the parameters need, so the pages beyond them are never touched and cost address
/// space, not memory. Freeing it unmaps it at once. (Calling `malloc_trim` would need `unsafe`,
/// which the workspace forbids; another global allocator would change every other allocation
/// of the process for the sake of this one.) Other allocators map allocations this large on
/// their own anyway.
pub struct BlockBuffer {
    blocks: Vec<Block>,
    /// How many buffers of the pool hold memory.
    held: Arc<AtomicUsize>,
}

impl BlockBuffer {
    fn new(held: Arc<AtomicUsize>) -> Self {
        Self {
            blocks: Vec::new(),
            held,
        }
    }

    /// `count` zeroed blocks, allocating on first use after a release.
    fn blocks(&mut self, count: usize) -> &mut [Block] {
        if self.blocks.capacity() < count {
            if self.blocks.capacity() == 0 {
                self.held.fetch_add(1, Ordering::Relaxed);
            }
            self.blocks = Vec::with_capacity(count.max(ALWAYS_MAPPED_BLOCKS));
        }
        self.blocks.resize(count, Block::default());
        self.blocks.as_mut_slice()
    }

    /// Gives the memory back.
    fn release(&mut self) {
        if self.blocks.capacity() > 0 {
            self.blocks = Vec::new();
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The hashing pool.
pub struct Argon2Hasher {
    params: Argon2Params,
    jobs: SyncSender<Job>,
    /// How many jobs may wait for a worker (the queue's capacity).
    capacity: usize,
    /// Jobs handed to the queue and not yet taken by a worker: counted up before a job goes
    /// in and down after a worker took it out, so it never reads less than the queue holds.
    waiting: Arc<AtomicUsize>,
    /// How many workers hold their Argon2 memory (the `/metrics` gauge).
    held: Arc<AtomicUsize>,
    /// Verified against when the user does not exist, so that an unknown email costs the same
    /// time as a wrong password.
    dummy_hash: PasswordHash,
}

impl Argon2Hasher {
    /// Starts `workers` threads behind a queue of `queue` waiting jobs, each `nice` steps of
    /// nice value below the priority the process runs at (0 leaves them at it; the nice value
    /// stops at 19, the lowest priority).
    pub fn start(
        params: Argon2Params,
        workers: usize,
        queue: usize,
        nice: i32,
    ) -> Result<Self, HasherError> {
        params.to_params()?;
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let held = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(AtomicUsize::new(0));
        for index in 0..workers.max(1) {
            let receiver = Arc::clone(&receiver);
            let memory = BlockBuffer::new(Arc::clone(&held));
            let waiting = Arc::clone(&waiting);
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || {
                    lower_priority(nice);
                    work(&receiver, &waiting, memory);
                })
                .map_err(|_| HasherError::Failed)?;
        }
        let mut dummy_password = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut dummy_password);
        let mut memory = BlockBuffer::new(Arc::clone(&held));
        let dummy_hash = hash_with(params, &dummy_password, &mut memory);
        memory.release();
        let dummy_hash = dummy_hash?;
        Ok(Self {
            params,
            jobs,
            capacity: queue,
            waiting,
            held,
            dummy_hash,
        })
    }

    /// Whether a hash submitted now would find room in the queue: a cheap look, taken before
    /// a request does the work that leads to its hash, so that a request the pool would turn
    /// away is turned away before that work. It reserves nothing: the queue may fill before
    /// the hash is submitted, which then is refused as [`HasherError::Saturated`] as ever.
    ///
    /// It may answer "no room" for a moment too long (a job is counted until a worker has
    /// taken it out), never "room" when the queue is full. With a queue of 0 (hashes never
    /// wait) it looks at the waiting jobs only, so an idle pool always has room.
    pub fn has_room(&self) -> bool {
        self.waiting.load(Ordering::Acquire) < self.capacity.max(1)
    }

    /// How many workers hold Argon2 memory right now: 0 when idle, at most the pool size.
    pub fn buffers_held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The Argon2 memory of one worker, in bytes.
    pub fn buffer_bytes(&self) -> u64 {
        u64::from(self.params.memory_kib) * 1024
    }

    /// Spends one verification's worth of time and memory, for a login to an unknown email.
    pub async fn verify_dummy(&self, password: &SecretString) -> Result<(), HasherError> {
        self.verify(password, &self.dummy_hash.clone())
            .await
            .map(|_| ())
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut BlockBuffer) -> T + Send + 'static,
    ) -> Result<T, HasherError> {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |memory| {
            let _entered = span.enter();
            let _ = reply.send(job(memory));
        });
        self.submit(job)?;
        answer.await.map_err(|_| HasherError::Failed)
    }

    /// Puts `job` in the queue, or answers `Saturated` at once when it is full.
    fn submit(&self, job: Job) -> Result<(), HasherError> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let sent = self.jobs.try_send(job);
        if sent.is_err() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(HasherError::Saturated),
            Err(TrySendError::Disconnected(_)) => Err(HasherError::Failed),
        }
    }

    /// Keeps every worker busy and the queue full until the returned guard is dropped, for
    /// tests of what a saturated pool answers. Waits (up to 10 s) for the workers to take
    /// their jobs before filling the queue.
    #[cfg(test)]
    pub(crate) fn hold_busy(&self, workers: usize) -> Vec<std::sync::mpsc::Sender<()>> {
        let mut gates = Vec::new();
        let mut block = || {
            let (gate, wait) = std::sync::mpsc::channel::<()>();
            gates.push(gate);
            self.submit(Box::new(move |_| {
                let _ = wait.recv();
            }))
        };
        for _ in 0..workers {
            assert_eq!(block(), Ok(()));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.waiting.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        for _ in 0..self.capacity {
            assert_eq!(block(), Ok(()));
        }
        gates
    }
}

/// The lowest priority a nice value gives.
const LOWEST_PRIORITY: i32 = 19;

/// How many steps of nice value the workers run below the process unless configured.
pub const DEFAULT_NICE_STEPS: i32 = 10;

/// Raises the calling thread's nice value by `steps` (on Linux a nice value belongs to a
/// thread, not to the whole process). Lowering one's own priority needs no privilege; should
/// it fail anyway, only the priority is lost, so that is logged, not fatal.
fn lower_priority(steps: i32) {
    if steps <= 0 {
        return;
    }
    let lowered = rustix::process::getpriority_process(None).and_then(|current| {
        rustix::process::setpriority_process(None, (current + steps).min(LOWEST_PRIORITY))
    });
    if let Err(error) = lowered {
        tracing::warn!(steps, %error, "a password hashing thread keeps its priority");
    }
}

fn work(receiver: &Mutex<Receiver<Job>>, waiting: &AtomicUsize, mut memory: BlockBuffer) {
    loop {
        // The next job if one is waiting right now. While another worker holds the lock it
        // is waiting for a job itself, so the queue is empty: this one is idle too, and must
        // not sit on its buffer while it waits for the lock.
        let next = match receiver.try_lock() {
            Ok(receiver) => match receiver.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            },
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Poisoned(_)) => return,
        };
        let job = match next {
            Some(job) => job,
            None => {
                // Idle: give the memory back before waiting.
                memory.release();
                let received = match receiver.lock() {
                    Ok(receiver) => receiver.recv(),
                    Err(_) => return,
                };
                match received {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        waiting.fetch_sub(1, Ordering::AcqRel);
        job(&mut memory);
    }
}

fn argon2(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn raw_hash(
    params: &Params,
    password: &[u8],
    salt: &[u8],
    output: &mut [u8],
    memory: &mut BlockBuffer,
) -> Result<(), HasherError> {
    argon2(params.clone())
        .hash_password_into_with_memory(password, salt, output, memory.blocks(params.block_count()))
        .map_err(|_| HasherError::Failed)
}

fn hash_with(
    params: Argon2Params,
    password: &[u8],
    memory: &mut BlockBuffer,
) -> Result<PasswordHash, HasherError> {
    let argon_params = params.to_params()?;
    let mut salt = [0u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut output = Zeroizing::new([0u8; OUTPUT_BYTES]);
    raw_hash(&argon_params, password, &salt, output.as_mut(), memory)?;
    Ok(PasswordHash::from_phc(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        params.memory_kib,
        params.iterations,
        params.parallelism,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(output.as_ref()),
    )))
}

fn verify_with(password: &[u8], phc: &str, memory: &mut BlockBuffer) -> Result<bool, HasherError> {
    let parsed = argon2::password_hash::PasswordHash::new(phc).map_err(|_| HasherError::Failed)?;
    let params = Params::try_from(&parsed).map_err(|_| HasherError::Failed)?;
    let mut salt = [0u8; 64];
    let salt = parsed
        .salt
        .ok_or(HasherError::Failed)?
        .decode_b64(&mut salt)
        .map_err(|_| HasherError::Failed)?;
    let expected = parsed.hash.ok_or(HasherError::Failed)?;
    let mut output = Zeroizing::new(vec![0u8; expected.len()]);
    raw_hash(&params, password, salt, output.as_mut_slice(), memory)?;
    Ok(output.as_slice().ct_eq(expected.as_bytes()).into())
}

#[async_trait]
impl PasswordHasher for Argon2Hasher {
    async fn hash(&self, password: &NewPassword) -> Result<PasswordHash, HasherError> {
        let params = self.params;
        let password = Zeroizing::new(password.secret().expose_secret().as_bytes().to_vec());
        self.run(move |memory| hash_with(params, &password, memory))
            .await?
    }

    async fn verify(
        &self,
        password: &SecretString,
        hash: &PasswordHash,
    ) -> Result<bool, HasherError> {
        let password = Zeroizing::new(password.expose_secret().as_bytes().to_vec());
        let phc = hash.as_phc().to_owned();
        self.run(move |memory| verify_with(&password, &phc, memory))
            .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(queue: usize) -> Argon2Hasher {
        Argon2Hasher::start(Argon2Params::insecure_for_tests(), 1, queue, 0).unwrap()
    }

    #[tokio::test]
    async fn the_workers_run_the_given_steps_below_the_process_priority() {
        let process = rustix::process::getpriority_process(None).unwrap();
        let hasher = Argon2Hasher::start(Argon2Params::insecure_for_tests(), 2, 4, 3).unwrap();
        let seen = futures::future::join_all(
            (0..4).map(|_| hasher.run(|_| rustix::process::getpriority_process(None).unwrap())),
        )
        .await;
        let expected = (process + 3).min(LOWEST_PRIORITY);
        assert!(seen.iter().all(|nice| *nice == Ok(expected)), "{seen:?}");
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap(),
            process,
            "the calling thread kept its priority"
        );
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_no_other() {
        let hasher = hasher(4);
        let password = NewPassword::parse(SecretString::from("correct horse")).unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.as_phc().starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(!hash.as_phc().contains("correct horse"));
        assert!(hasher.verify(password.secret(), &hash).await.unwrap());
        let wrong = SecretString::from("correct horsf");
        assert!(!hasher.verify(&wrong, &hash).await.unwrap());
    }

    #[tokio::test]
    async fn hashes_made_by_the_argon2_crate_verify_here() {
        use argon2::password_hash::{PasswordHasher as _, SaltString};
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let phc = argon2(Argon2Params::insecure_for_tests().to_params().unwrap())
            .hash_password(b"interop password", &salt)
            .unwrap()
            .to_string();
        let hasher = hasher(4);
        let hash = PasswordHash::from_phc(phc);
        let password = SecretString::from("interop password");
        assert!(hasher.verify(&password, &hash).await.unwrap());
    }

    #[tokio::test]
    async fn an_idle_pool_holds_no_argon2_memory() {
        let hasher = Argon2Hasher::start(Argon2Params::OWASP_MINIMUM, 2, 8, 0).unwrap();
        assert_eq!(
            hasher.buffers_held(),
            0,
            "the start-up hash kept its buffer"
        );
        let password = SecretString::from("a password");
        let hash = hasher.dummy_hash.clone();
        let attempts = (0..6).map(|_| hasher.verify(&password, &hash));
        for result in futures::future::join_all(attempts).await {
            assert_eq!(result, Ok(false));
        }
        // A worker frees its buffer right after its last job, just after that job answered.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while hasher.buffers_held() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(hasher.buffers_held(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_answers_saturated_at_once() {
        let hasher = Argon2Hasher::start(Argon2Params::OWASP_MINIMUM, 1, 1, 0).unwrap();
        let password = SecretString::from("a password");
        let hash = hasher.dummy_hash.clone();
        let attempts = (0..8).map(|_| hasher.verify(&password, &hash));
        let results = futures::future::join_all(attempts).await;
        assert!(
            results.contains(&Err(HasherError::Saturated)),
            "{results:?}"
        );
    }

    #[tokio::test]
    async fn a_full_queue_leaves_no_room_until_a_worker_takes_a_job() {
        let hasher = hasher(1);
        assert!(hasher.has_room(), "an idle pool");
        let held = hasher.hold_busy(1);
        assert!(!hasher.has_room(), "one hash running and one waiting");
        let password = SecretString::from("a password");
        let hash = hasher.dummy_hash.clone();
        assert_eq!(
            hasher.verify(&password, &hash).await,
            Err(HasherError::Saturated)
        );
        drop(held);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !hasher.has_room() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(hasher.has_room());
        assert_eq!(hasher.verify(&password, &hash).await, Ok(false));
    }
}
