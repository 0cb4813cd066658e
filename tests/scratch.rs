//! The scratch resources of tests: the Postgres databases, the JetStream streams and key-value
//! buckets (under a NATS prefix) and the temporary folders (which hold private keys) that a test
//! makes.
//!
//! Every name carries a marker and the id of the test process that made it:
//! `twofold_test_p<pid>_<uuid>`, NATS prefix `it-p<pid>-[<label>-]<uuid>` (streams `IT_P<pid>_…`
//! and `KV_IT_P<pid>_…`), folder `twofold-it-p<pid>-<label>-<uuid>` in the temporary directory.
//! So:
//! - a [`Scratch`] guard removes what its test made when the test ends, passed or panicked;
//! - [`sweep`] removes what a test process left when it was killed, and nothing that a test
//!   still running (in another checkout, say) uses, nor anything that is not a test's.
//!
//! Both assume that the tests, Postgres and NATS run on one machine, as `scripts/test` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// How every scratch database name starts.
pub const DATABASE_MARKER: &str = "twofold_test_";
/// How every scratch NATS prefix starts (its streams start with `IT_`, its buckets' with `KV_IT_`).
pub const NATS_MARKER: &str = "it-";
/// How every scratch folder's name starts.
pub const DIR_MARKER: &str = "twofold-it-";

/// How long one clean-up may take before it gives up (and leaves the rest to the sweep).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to NATS may take during a clean-up.
const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Scratch resources named before the names carried a process id are swept once this old:
/// longer than any run of the suite.
const UNTAGGED_MAX_AGE: Duration = Duration::from_secs(3600);

fn process_tag() -> String {
    format!("p{}", std::process::id())
}

fn unique() -> String {
    Uuid::new_v4().simple().to_string()
}

/// A fresh scratch database name (the database is not created).
pub fn database_name() -> String {
    format!("{DATABASE_MARKER}{}_{}", process_tag(), unique())
}

/// A fresh scratch NATS prefix; `label` (lower-case letters and digits, or empty) says whose.
pub fn nats_prefix(label: &str) -> String {
    if label.is_empty() {
        format!("{NATS_MARKER}{}-{}", process_tag(), unique())
    } else {
        format!("{NATS_MARKER}{}-{label}-{}", process_tag(), unique())
    }
}

/// A fresh scratch folder path in the temporary directory (the folder is not created).
pub fn dir_path(label: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "{DIR_MARKER}{}-{label}-{}",
        process_tag(),
        unique()
    ))
}

/// Creates a scratch database on the Postgres server at `server` (a URL without a database,
/// such as `postgres://postgres@127.0.0.1:5432`) and returns its URL.
pub async fn create_database(server: &str) -> Result<String, String> {
    let server = server.trim_end_matches('/');
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .map_err(|error| format!("Postgres at {server} is not reachable: {error}"))?;
    let name = database_name();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .map_err(|error| format!("cannot create the database {name}: {error}"))?;
    let _ = admin.close().await;
    Ok(format!("{server}/{name}"))
}

/// One thing a test made that outlives it unless removed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    /// A database, by its URL.
    Database(String),
    /// The streams (their consumers with them) and buckets under a NATS prefix.
    Streams { nats_url: String, prefix: String },
    /// A folder and everything in it.
    Dir(PathBuf),
}

impl Resource {
    /// The database at `url`, if its name is a scratch name.
    pub fn database(url: &str) -> Option<Self> {
        let name = database_of(url)?;
        is_tagged(name.strip_prefix(DATABASE_MARKER)?, '_').then(|| Self::Database(url.to_owned()))
    }

    /// What a scratch NATS prefix declared on the NATS at `nats_url`.
    pub fn streams(nats_url: &str, prefix: &str) -> Option<Self> {
        is_tagged(prefix.strip_prefix(NATS_MARKER)?, '-').then(|| Self::Streams {
            nats_url: nats_url.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// A scratch folder.
    pub fn dir(path: &Path) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        is_tagged(name.strip_prefix(DIR_MARKER)?, '-').then(|| Self::Dir(path.to_owned()))
    }

    async fn remove(&self) -> Result<(), String> {
        match self {
            Self::Database(url) => drop_database(url).await,
            Self::Streams { nats_url, prefix } => delete_streams(nats_url, prefix).await,
            Self::Dir(path) => remove_dir(path).await,
        }
    }
}

/// The database name in a Postgres URL.
fn database_of(url: &str) -> Option<&str> {
    let path = url.split(['?', '#']).next()?;
    let (_, name) = path.rsplit_once('/')?;
    (!name.is_empty()).then_some(name)
}

/// The URL of the `postgres` database on the server of `url`.
fn admin_url(url: &str) -> Option<String> {
    let name = database_of(url)?;
    let start = url.find(&format!("/{name}"))?;
    Some(format!(
        "{}/postgres{}",
        &url[..start],
        &url[start + 1 + name.len()..]
    ))
}

/// `p<pid>` followed by `separator`: what this module names, never anything else.
fn is_tagged(rest: &str, separator: char) -> bool {
    tagged_pid(rest, separator).is_some()
}

fn tagged_pid(rest: &str, separator: char) -> Option<u32> {
    let rest = rest.strip_prefix(['p', 'P'])?;
    let (digits, tail) = rest.split_once(separator)?;
    if digits.is_empty() || tail.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

async fn drop_database(url: &str) -> Result<(), String> {
    let name = database_of(url).ok_or("no database name")?;
    let admin = admin_url(url).ok_or("no server")?;
    let mut connection = PgConnection::connect(&admin)
        .await
        .map_err(|error| format!("cannot connect to Postgres: {error}"))?;
    // FORCE ends the sessions still open on it (the service's pool, a test's own pool).
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .map(|_| ())
        .map_err(|error| error.to_string());
    let _ = connection.close().await;
    dropped
}

async fn connect_nats(nats_url: &str) -> Result<async_nats::jetstream::Context, String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(NATS_CONNECT_TIMEOUT)
        .connect(nats_url)
        .await
        .map_err(|error| format!("cannot connect to NATS at {nats_url}: {error}"))?;
    Ok(async_nats::jetstream::new(client))
}

/// Whether `stream` is one the prefix declared: the work queue, the dead letters, the status
/// bucket (`KV_<PREFIX>_…`), or any stream added to the topology later.
fn declared_under(stream: &str, prefix: &str) -> bool {
    let upper = format!("{}_", prefix.to_ascii_uppercase().replace('-', "_"));
    stream
        .strip_prefix("KV_")
        .unwrap_or(stream)
        .starts_with(&upper)
}

async fn delete_streams(nats_url: &str, prefix: &str) -> Result<(), String> {
    let jetstream = connect_nats(nats_url).await?;
    let names: Vec<String> = jetstream
        .stream_names()
        .try_collect()
        .await
        .map_err(|error| format!("cannot list the streams: {error}"))?;
    for name in names.iter().filter(|name| declared_under(name, prefix)) {
        jetstream
            .delete_stream(name)
            .await
            .map_err(|error| format!("cannot delete the stream {name}: {error}"))?;
    }
    Ok(())
}

async fn remove_dir(path: &Path) -> Result<(), String> {
    // A file written at this moment (a late email) can make one attempt fail.
    for attempt in 0..3 {
        match std::fs::remove_dir_all(path) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) if attempt == 2 => return Err(error.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(())
}

/// How many live guards hold each resource.
static HOLDERS: Mutex<BTreeMap<Resource, usize>> = Mutex::new(BTreeMap::new());

/// Removes the resources it holds when it is dropped, also while a test panics: each one when
/// the last guard holding it (in this process) goes, so that two service instances of one test
/// can share a database. Drop blocks until they are removed (on a thread of its own, so it
/// works inside and outside a Tokio runtime); what cannot be removed is reported on standard
/// error and left to [`sweep`].
#[derive(Debug, Default)]
pub struct Scratch {
    held: Vec<Resource>,
}

impl Scratch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds `resource`; `None` (a name that is not a scratch name) is ignored, so that a
    /// guard never removes anything a test did not make.
    pub fn hold(&mut self, resource: Option<Resource>) -> &mut Self {
        if let Some(resource) = resource {
            let mut holders = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
            *holders.entry(resource.clone()).or_insert(0) += 1;
            self.held.push(resource);
        }
        self
    }

    /// What this guard holds.
    pub fn held(&self) -> &[Resource] {
        &self.held
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut released = Vec::new();
        {
            let mut holders = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
            for resource in self.held.drain(..) {
                let last = match holders.get_mut(&resource) {
                    Some(count) if *count > 1 => {
                        *count -= 1;
                        false
                    }
                    _ => true,
                };
                if last {
                    holders.remove(&resource);
                    released.push(resource);
                }
            }
        }
        if released.is_empty() {
            return;
        }
        for problem in remove_blocking(released) {
            eprintln!("scratch: {problem}");
        }
    }
}

/// Removes `resources` on a thread with a runtime of its own; returns what failed.
fn remove_blocking(resources: Vec<Resource>) -> Vec<String> {
    let worker = std::thread::spawn(move || -> Vec<String> {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => return vec![format!("no runtime to clean up with: {error}")],
        };
        runtime.block_on(async {
            // The database and the streams first, the folder last: a late email may still be
            // written into it.
            let (folders, others): (Vec<_>, Vec<_>) = resources
                .iter()
                .partition(|resource| matches!(resource, Resource::Dir(_)));
            let mut problems = Vec::new();
            for batch in [others, folders] {
                let removals = batch.iter().map(|resource| async move {
                    match tokio::time::timeout(CLEANUP_TIMEOUT, resource.remove()).await {
                        Ok(Ok(())) => None,
                        Ok(Err(error)) => Some(format!("cannot remove {resource:?}: {error}")),
                        Err(_) => Some(format!("removing {resource:?} timed out")),
                    }
                });
                problems.extend(
                    futures::future::join_all(removals)
                        .await
                        .into_iter()
                        .flatten(),
                );
            }
            problems
        })
    });
    worker
        .join()
        .unwrap_or_else(|_| vec!["the clean-up thread panicked".to_owned()])
}

/// A fresh scratch folder, removed with everything in it when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    _scratch: Scratch,
}

impl ScratchDir {
    /// Creates a scratch folder; `label` (letters, digits and `-`) says whose it is.
    pub fn new(label: &str) -> std::io::Result<Self> {
        let path = dir_path(label);
        let mut scratch = Scratch::new();
        scratch.hold(Resource::dir(&path));
        std::fs::create_dir_all(&path)?;
        Ok(Self {
            path,
            _scratch: scratch,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

// ---------------------------------------------------------------------------------------------
// The sweep.

/// Who made a scratch resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Maker {
    /// The test process with this id.
    Process(u32),
    /// A test from before names carried the process id.
    Untagged,
}

impl Maker {
    /// Whether what it made can go: its process has ended (a process id can be reused, which
    /// only delays the removal), or, untagged, it is older than any run.
    fn is_gone(self, created: Option<SystemTime>, now: SystemTime) -> bool {
        match self {
            Self::Process(pid) => !process_running(pid),
            Self::Untagged => created
                .and_then(|created| now.duration_since(created).ok())
                .is_some_and(|age| age > UNTAGGED_MAX_AGE),
        }
    }
}

/// Whether the process `pid` runs: a zombie (killed, not yet reaped) does not.
fn process_running(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // `pid (command) state ...`: the command may hold spaces and parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        return !matches!(state, Some("Z" | "X"));
    }
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .map_or(true, |status| status.success())
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The maker of the database `name`, if it is a scratch database.
fn database_maker(name: &str) -> Option<Maker> {
    let rest = name.strip_prefix(DATABASE_MARKER)?;
    if let Some(pid) = tagged_pid(rest, '_') {
        return Some(Maker::Process(pid));
    }
    (is_hex(rest, 32) && rest.bytes().all(|b| !b.is_ascii_uppercase())).then_some(Maker::Untagged)
}

/// Prefixes the tests used before their names carried the process id, upper-cased as in
/// stream names.
const UNTAGGED_STREAM_HEADS: [&str; 5] = [
    "IT_",
    "MAILER_IT_",
    "MAILER_METRICS_",
    "CRASH_",
    "SHUTDOWN_",
];
/// Labels of the folders the tests made before their names carried the process id.
const UNTAGGED_DIR_LABELS: [&str; 10] = [
    "it",
    "crash",
    "shutdown",
    "config",
    "nats",
    "mailer-once",
    "mailer-pair",
    "mailer-garbage",
    "mailer-smtp",
    "mailer-metrics",
];

/// The maker of the stream `name`, if it belongs to a scratch prefix.
fn stream_maker(name: &str) -> Option<Maker> {
    let name = name.strip_prefix("KV_").unwrap_or(name);
    if let Some(pid) = name
        .strip_prefix("IT_")
        .and_then(|rest| tagged_pid(rest, '_'))
    {
        return Some(Maker::Process(pid));
    }
    UNTAGGED_STREAM_HEADS.iter().find_map(|head| {
        let rest = name.strip_prefix(head)?;
        let (id, tail) = rest.split_once('_')?;
        (is_hex(id, 32) && tail.starts_with("MAIL")).then_some(Maker::Untagged)
    })
}

/// The maker of the folder `name` (in the temporary directory), if it is a scratch folder.
fn dir_maker(name: &str) -> Option<Maker> {
    if let Some(pid) = name
        .strip_prefix(DIR_MARKER)
        .and_then(|rest| tagged_pid(rest, '-'))
    {
        return Some(Maker::Process(pid));
    }
    let rest = name.strip_prefix("twofold-")?;
    UNTAGGED_DIR_LABELS.iter().find_map(|label| {
        let id = rest.strip_prefix(label)?.strip_prefix('-')?;
        Uuid::try_parse(id)
            .ok()
            .filter(|_| id.len() == 36)
            .map(|_| Maker::Untagged)
    })
}

/// One scratch resource a sweep found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<T> {
    pub name: T,
    /// Its maker is gone: a killed test process, or an untagged name older than an hour.
    pub abandoned: bool,
    pub removed: bool,
}

/// What a sweep found, and what it removed.
#[derive(Debug, Default)]
pub struct Swept {
    pub databases: Vec<Found<String>>,
    /// Streams and buckets (`KV_…`).
    pub streams: Vec<Found<String>>,
    pub dirs: Vec<Found<PathBuf>>,
    /// What could not be looked at or removed.
    pub problems: Vec<String>,
}

/// Where the sweep looks.
#[derive(Debug, Clone)]
pub struct SweepTargets {
    /// The Postgres server, as a URL without a database.
    pub postgres: String,
    pub nats: String,
    pub temp_dir: PathBuf,
}

/// Finds every scratch resource and, unless `dry_run`, removes those whose maker is gone: the
/// process that made it has ended (a killed run), or it is untagged and older than an hour.
pub async fn sweep(targets: &SweepTargets, dry_run: bool) -> Swept {
    let now = SystemTime::now();
    let mut swept = Swept::default();
    if let Err(error) = sweep_databases(&targets.postgres, dry_run, now, &mut swept).await {
        swept.problems.push(format!("databases: {error}"));
    }
    if let Err(error) = sweep_streams(&targets.nats, dry_run, now, &mut swept).await {
        swept.problems.push(format!("streams: {error}"));
    }
    if let Err(error) = sweep_dirs(&targets.temp_dir, dry_run, now, &mut swept).await {
        swept.problems.push(format!("folders: {error}"));
    }
    swept
}

async fn sweep_databases(
    server: &str,
    dry_run: bool,
    now: SystemTime,
    swept: &mut Swept,
) -> Result<(), String> {
    let server = server.trim_end_matches('/');
    let mut admin = PgConnection::connect(&format!("{server}/postgres"))
        .await
        .map_err(|error| format!("Postgres at {server} is not reachable: {error}"))?;
    // pg_stat_file needs a superuser: without one, untagged databases have no age (and stay).
    let databases: Vec<(String, Option<i64>)> = match sqlx::query_as(
        "SELECT datname::text, extract(epoch FROM \
         (pg_stat_file('base/' || oid || '/PG_VERSION', true)).modification)::int8 \
         FROM pg_database WHERE datname LIKE 'twofold\\_test\\_%'",
    )
    .fetch_all(&mut admin)
    .await
    {
        Ok(rows) => rows,
        Err(_) => sqlx::query_scalar::<_, String>(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'twofold\\_test\\_%'",
        )
        .fetch_all(&mut admin)
        .await
        .map_err(|error| error.to_string())?
        .into_iter()
        .map(|name| (name, None))
        .collect(),
    };
    for (name, created) in databases {
        let Some(maker) = database_maker(&name) else {
            continue;
        };
        let created = created
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map(|seconds| SystemTime::UNIX_EPOCH + Duration::from_secs(seconds));
        let abandoned = maker.is_gone(created, now);
        let mut removed = false;
        if abandoned && !dry_run {
            match drop_database(&format!("{server}/{name}")).await {
                Ok(()) => removed = true,
                Err(error) => swept.problems.push(format!("cannot drop {name}: {error}")),
            }
        }
        swept.databases.push(Found {
            name,
            abandoned,
            removed,
        });
    }
    let _ = admin.close().await;
    Ok(())
}

async fn sweep_streams(
    nats_url: &str,
    dry_run: bool,
    now: SystemTime,
    swept: &mut Swept,
) -> Result<(), String> {
    let jetstream = connect_nats(nats_url).await?;
    let streams: Vec<async_nats::jetstream::stream::Info> = jetstream
        .streams()
        .try_collect()
        .await
        .map_err(|error| format!("cannot list the streams: {error}"))?;
    for info in streams {
        let name = info.config.name;
        let Some(maker) = stream_maker(&name) else {
            continue;
        };
        let created = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(
            u64::try_from(info.created.unix_timestamp()).unwrap_or(0),
        ));
        let abandoned = maker.is_gone(created, now);
        let mut removed = false;
        if abandoned && !dry_run {
            match jetstream.delete_stream(&name).await {
                Ok(_) => removed = true,
                Err(error) => swept
                    .problems
                    .push(format!("cannot delete {name}: {error}")),
            }
        }
        swept.streams.push(Found {
            name,
            abandoned,
            removed,
        });
    }
    Ok(())
}

async fn sweep_dirs(
    temp_dir: &Path,
    dry_run: bool,
    now: SystemTime,
    swept: &mut Swept,
) -> Result<(), String> {
    let entries = std::fs::read_dir(temp_dir)
        .map_err(|error| format!("cannot read {}: {error}", temp_dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(maker) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(dir_maker)
        else {
            continue;
        };
        // Never follow a link out of the temporary directory.
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !metadata.is_dir() {
            continue;
        }
        let abandoned = maker.is_gone(metadata.modified().ok(), now);
        let mut removed = false;
        if abandoned && !dry_run {
            match remove_dir(&path).await {
                Ok(()) => removed = true,
                Err(error) => swept
                    .problems
                    .push(format!("cannot remove {}: {error}", path.display())),
            }
        }
        swept.dirs.push(Found {
            name: path,
            abandoned,
            removed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_carry_the_process_and_are_recognised() {
        let pid = std::process::id();
        let database = database_name();
        assert!(database.len() <= 63, "{database}");
        assert_eq!(database_maker(&database), Some(Maker::Process(pid)));
        assert!(Resource::database(&format!("postgres://h:5432/{database}")).is_some());

        let prefix = nats_prefix("mailer");
        assert!(Resource::streams("nats://h", &prefix).is_some());
        let upper = prefix.to_ascii_uppercase().replace('-', "_");
        for stream in [
            format!("{upper}_MAIL"),
            format!("{upper}_MAIL_DEAD"),
            format!("KV_{upper}_MAIL_STATUS"),
        ] {
            assert_eq!(stream_maker(&stream), Some(Maker::Process(pid)), "{stream}");
            assert!(declared_under(&stream, &prefix));
        }
        assert!(!declared_under(&format!("{upper}X_MAIL"), &prefix));

        let dir = dir_path("crash");
        let name = dir.file_name().unwrap().to_str().unwrap();
        assert_eq!(dir_maker(name), Some(Maker::Process(pid)));
        assert!(Resource::dir(&dir).is_some());
    }

    #[test]
    fn nothing_but_scratch_names_is_recognised() {
        for url in [
            "postgres://h:5432/postgres",
            "postgres://h:5432/twofold",
            "postgres://h:5432/twofold_test_",
            "postgres://h:5432/twofold_test_p_x",
            "postgres://h:5432/twofold_test_p12",
        ] {
            assert_eq!(Resource::database(url), None, "{url}");
        }
        for name in [
            "postgres",
            "twofold",
            "twofold_test_abc",
            "twofold_test_p1x_a",
        ] {
            assert_eq!(database_maker(name), None, "{name}");
        }
        for prefix in ["twofold", "it", "it-", "it-pabc-x", "bench-1"] {
            assert_eq!(Resource::streams("nats://h", prefix), None, "{prefix}");
        }
        for stream in [
            "TWOFOLD_MAIL",
            "TWOFOLD_MAIL_DEAD",
            "KV_TWOFOLD_MAIL_STATUS",
            "IT_MAIL",
            "BENCH_0123456789ABCDEF0123456789ABCDEF_MAIL",
            "IT_0123456789ABCDEF_MAIL",
        ] {
            assert_eq!(stream_maker(stream), None, "{stream}");
        }
        for dir in [
            "twofold-it",
            "twofold-it-",
            "twofold-bench-0123",
            "twofold-debug-test",
            "twofold-it-notes",
            "twofold-config-not-a-uuid",
        ] {
            assert_eq!(dir_maker(dir), None, "{dir}");
            assert_eq!(
                Resource::dir(&PathBuf::from("/tmp").join(dir)),
                None,
                "{dir}"
            );
        }
    }

    #[test]
    fn names_from_before_the_process_tag_are_untagged() {
        let id = Uuid::new_v4();
        let simple = id.simple().to_string();
        let upper = simple.to_ascii_uppercase();
        assert_eq!(
            database_maker(&format!("twofold_test_{simple}")),
            Some(Maker::Untagged)
        );
        for stream in [
            format!("IT_{upper}_MAIL"),
            format!("MAILER_IT_{upper}_MAIL_DEAD"),
            format!("KV_CRASH_{upper}_MAIL_STATUS"),
        ] {
            assert_eq!(stream_maker(&stream), Some(Maker::Untagged), "{stream}");
        }
        for dir in [
            format!("twofold-it-{id}"),
            format!("twofold-mailer-smtp-{id}"),
        ] {
            assert_eq!(dir_maker(&dir), Some(Maker::Untagged), "{dir}");
        }
    }

    #[test]
    fn untagged_resources_go_only_when_older_than_any_run() {
        let now = SystemTime::now();
        let recent = now - Duration::from_secs(60);
        let old = now - UNTAGGED_MAX_AGE - Duration::from_secs(1);
        assert!(!Maker::Untagged.is_gone(Some(recent), now));
        assert!(!Maker::Untagged.is_gone(None, now));
        assert!(Maker::Untagged.is_gone(Some(old), now));
        assert!(!Maker::Process(std::process::id()).is_gone(Some(old), now));
    }

    #[test]
    fn a_killed_process_that_is_not_yet_reaped_has_ended() {
        if !Path::new("/proc/self").exists() {
            return; // Zombies are told apart through /proc only.
        }
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        assert!(process_running(child.id()));
        child.kill().unwrap();
        // Not waited for yet: a zombie, still in /proc.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while process_running(child.id()) {
            assert!(std::time::Instant::now() < deadline, "still running");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(Path::new(&format!("/proc/{}", child.id())).exists());
        child.wait().unwrap();
        assert!(!process_running(child.id()));
    }

    #[test]
    fn the_admin_url_names_the_postgres_database_of_the_same_server() {
        assert_eq!(
            admin_url("postgres://u@h:5432/twofold_test_p1_a").as_deref(),
            Some("postgres://u@h:5432/postgres")
        );
        assert_eq!(
            admin_url("postgres://u@h:5432/twofold_test_p1_a?sslmode=disable").as_deref(),
            Some("postgres://u@h:5432/postgres?sslmode=disable")
        );
    }

    #[test]
    fn a_guard_shared_by_two_holders_releases_on_the_last_drop() {
        let path = dir_path("guard");
        std::fs::create_dir_all(&path).unwrap();
        let mut first = Scratch::new();
        first.hold(Resource::dir(&path));
        let mut second = Scratch::new();
        second.hold(Resource::dir(&path));
        drop(first);
        assert!(path.exists(), "still held by the second guard");
        drop(second);
        assert!(!path.exists());
    }

    #[test]
    fn a_guard_cleans_up_while_its_test_panics() {
        let dir = dir_path("panic");
        let path = dir.clone();
        let result = std::panic::catch_unwind(move || {
            let mut scratch = Scratch::new();
            scratch.hold(Resource::dir(&dir));
            std::fs::create_dir_all(dir.join("keys")).unwrap();
            std::fs::write(dir.join("keys").join("jwt.pem"), "secret").unwrap();
            panic!("the test failed");
        });
        assert!(result.is_err());
        assert!(!path.exists());
    }
}
