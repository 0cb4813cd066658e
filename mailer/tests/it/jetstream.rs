//! The mailer against the real NATS JetStream (`TWOFOLD_TEST_NATS_URL`, default
//! `nats://127.0.0.1:4222`) and a real SMTP server (Python's aiosmtpd). Every test uses its own
//! prefix, so tests never share streams, consumers or buckets, and removes them when it ends.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{kv, Context};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use twofold_domain::values::{DeviceType, Email, UserId};
use twofold_mailer::{Mailer, MailerSettings, MailerStats, Transport, FAILURE_HEADER, UNPARSEABLE};
use twofold_nats::{Mail, MailJob, MailKey, MailSealer, TaskState, TaskStatus, Topology};
use twofold_tests::scratch::{self, Resource, Scratch, ScratchDir};
use uuid::Uuid;

const KEY: [u8; 32] = [9u8; 32];
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Captured logs: every test's mailer logs here (and to stderr with TEST_LOG set).

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT_LOGS: Once = Once::new();

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(bytes)?;
        }
        LOGS.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    INIT_LOGS.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter("twofold_mailer=trace,twofold_nats=trace,info")
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// NATS, mailers and jobs.

struct Nats {
    jetstream: Context,
    topology: Topology,
    /// Deletes the prefix's streams and bucket when the test ends, passed or failed.
    _scratch: Scratch,
}

impl Nats {
    /// Connects to the test NATS and declares a fresh topology.
    async fn fresh() -> Self {
        init_logs();
        let url = nats_url();
        let client = tokio::time::timeout(Duration::from_secs(5), async_nats::connect(&url))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| {
                panic!(
                    "NATS with JetStream is not reachable at {url}: start `nats-server -js` \
                     or set TWOFOLD_TEST_NATS_URL"
                )
            });
        let prefix = scratch::nats_prefix("mailer");
        let mut guard = Scratch::new();
        guard.hold(Resource::streams(&url, &prefix));
        let topology = Topology::new(&prefix).unwrap();
        let jetstream = async_nats::jetstream::new(client);
        topology.declare(&jetstream).await.unwrap();
        Self {
            jetstream,
            topology,
            _scratch: guard,
        }
    }

    fn settings(&self, transport: Transport) -> MailerSettings {
        MailerSettings {
            transport,
            concurrency: 4,
            ..MailerSettings::new(&nats_url(), self.topology.clone(), MailKey::derive(&KEY))
        }
    }

    async fn publish(&self, job: &MailJob) {
        twofold_nats::publish(&self.jetstream, &self.topology, job)
            .await
            .unwrap();
    }

    async fn status_bucket(&self) -> kv::Store {
        self.jetstream
            .get_key_value(self.topology.status_bucket())
            .await
            .unwrap()
    }

    /// Waits for `id`'s status to reach `state`; fails early on any other final state.
    async fn wait_for_status(&self, id: Uuid, state: TaskState) -> TaskStatus {
        let bucket = self.status_bucket().await;
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = bucket.get(id.to_string()).await.unwrap() {
                let status: TaskStatus = serde_json::from_slice(&value).unwrap();
                if status.state == state {
                    return status;
                }
                assert_eq!(
                    status.state,
                    TaskState::Pending,
                    "job {id} ended as {status:?}, not {state:?}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "job {id} never reached {state:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages left in the work-queue stream, and unacknowledged deliveries of the consumer.
    async fn left_over(&self) -> (u64, usize) {
        let mut stream = self
            .jetstream
            .get_stream(self.topology.stream())
            .await
            .unwrap();
        let messages = stream.info().await.unwrap().state.messages;
        let mut consumer: PullConsumer = stream
            .get_consumer(&self.topology.consumer())
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        (messages, info.num_ack_pending)
    }
}

fn nats_url() -> String {
    std::env::var("TWOFOLD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A mailer running in this process.
struct RunningMailer {
    stats: Arc<MailerStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<Arc<MailerStats>>>,
}

fn start_mailer(settings: MailerSettings) -> RunningMailer {
    let mailer = Mailer::new(settings);
    let stats = mailer.stats();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(mailer.run(async move {
        let _ = stopped.await;
    }));
    RunningMailer { stats, stop, task }
}

impl RunningMailer {
    async fn stop(self) -> Arc<MailerStats> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the mailer did not stop within 15 s")
            .unwrap()
            .unwrap()
    }
}

/// The recipient of every test job; codes are sealed for it.
const RECIPIENT: &str = "ada@example.com";

fn job(mail: Mail) -> MailJob {
    job_sealed(|_| mail)
}

/// A job whose mail is made knowing the job's id (sealed codes are bound to it).
fn job_sealed(mail: impl FnOnce(Uuid) -> Mail) -> MailJob {
    let id = Uuid::new_v4();
    MailJob {
        id,
        owner: UserId::new_random(),
        to: Email::parse(RECIPIENT).unwrap(),
        request_id: Some(format!("req-{}", Uuid::new_v4().simple())),
        mail: mail(id),
    }
}

/// A fresh folder for emails, removed when the test ends.
fn temp_dir(label: &str) -> ScratchDir {
    ScratchDir::new(&format!("mailer-{label}")).unwrap()
}

/// A loopback port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Every email in `dir` (and its subdirectories), by the job id in its Message-ID.
fn emails_by_job(dir: &Path) -> HashMap<Uuid, Vec<String>> {
    let mut emails: HashMap<Uuid, Vec<String>> = HashMap::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let email = std::fs::read_to_string(&path).unwrap();
            let id = email
                .lines()
                .find_map(|line| line.strip_prefix("Message-ID: <"))
                .and_then(|rest| rest.strip_suffix("@twofold>"))
                .and_then(|id| id.parse().ok())
                .unwrap_or_else(|| panic!("{} has no job Message-ID", path.display()));
            emails.entry(id).or_default().push(email);
        }
    }
    emails
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_jobs_are_each_delivered_once_and_recorded_as_success() {
    // Arrange: one job of each template, half of them queued before the mailer starts.
    let nats = Nats::fresh().await;
    let sealer = MailSealer::new(MailKey::derive(&KEY));
    let dir = temp_dir("once");
    let codes = vec![
        "AAAA-BBBB-CCCC-DDDD-EEEE-FFFF".to_owned(),
        "GGGG-HHHH-JJJJ-KKKK-LLLL-MMMM".to_owned(),
    ];
    let backup_codes = job_sealed(|id| Mail::BackupCodes {
        codes: sealer.seal_codes(&codes, RECIPIENT, id),
    });
    let login_code = job_sealed(|id| Mail::LoginCode {
        code: sealer.seal("246810", RECIPIENT, id),
        valid_minutes: 5,
    });
    let jobs = vec![
        backup_codes.clone(),
        login_code.clone(),
        job(Mail::Test),
        job(Mail::TfaEnabled {
            device_type: DeviceType::Email,
        }),
        job(Mail::BackupCodeUsed { remaining: 4 }),
    ];
    let (early, late) = jobs.split_at(2);
    for job in early {
        nats.publish(job).await;
    }

    // Act
    let mailer = start_mailer(nats.settings(Transport::File(dir.to_path_buf())));
    for job in late {
        nats.publish(job).await;
    }
    for job in &jobs {
        let status = nats.wait_for_status(job.id, TaskState::Success).await;
        assert_eq!(status.attempts, 1);
    }
    let stats = mailer.stop().await;

    // Assert
    let emails = emails_by_job(&dir);
    assert_eq!(emails.len(), jobs.len());
    for job in &jobs {
        assert_eq!(emails[&job.id].len(), 1, "job {} sent twice", job.id);
        assert!(emails[&job.id][0].contains(&format!("\r\nTo: {}\r\n", job.to)));
    }
    let backup_email = &emails[&backup_codes.id][0];
    for code in &codes {
        assert!(backup_email.contains(&format!("\r\n    {code}\r\n")));
    }
    assert!(emails[&login_code.id][0].contains("\r\nSubject: Your Twofold login code: 246810\r\n"));
    assert_eq!(stats.sent(), jobs.len() as u64);
    assert_eq!(stats.failed(), 0);
    assert_eq!(nats.left_over().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_mailers_sharing_the_consumer_send_each_email_exactly_once_between_them() {
    // Arrange
    let nats = Nats::fresh().await;
    let dir = temp_dir("pair");
    let first = start_mailer(nats.settings(Transport::File(dir.to_path_buf())));
    let second = start_mailer(nats.settings(Transport::File(dir.to_path_buf())));
    let jobs: Vec<MailJob> = (0..60).map(|_| job(Mail::Test)).collect();

    // Act
    futures::future::join_all(jobs.iter().map(|job| nats.publish(job))).await;
    for job in &jobs {
        nats.wait_for_status(job.id, TaskState::Success).await;
    }
    let (first, second) = tokio::join!(first.stop(), second.stop());

    // Assert
    let emails = emails_by_job(&dir);
    assert_eq!(emails.len(), jobs.len());
    for job in &jobs {
        assert_eq!(
            emails[&job.id].len(),
            1,
            "job {} sent more than once",
            job.id
        );
    }
    assert_eq!(first.sent() + second.sent(), jobs.len() as u64);
    assert_eq!(first.failed() + second.failed(), 0);
    assert_eq!(nats.left_over().await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_transport_is_retried_then_dead_lettered_without_logging_the_code() {
    // Arrange: SMTP to a loopback port nobody listens on, and a tiny retry base.
    let nats = Nats::fresh().await;
    let sealer = MailSealer::new(MailKey::derive(&KEY));
    let code = "QZ7391";
    let doomed = job_sealed(|id| Mail::LoginCode {
        code: sealer.seal(code, RECIPIENT, id),
        valid_minutes: 5,
    });
    let transport = Transport::parse(&format!("smtp://127.0.0.1:{}", free_port())).unwrap();
    let mailer = start_mailer(MailerSettings {
        retry_base: Duration::from_millis(20),
        ..nats.settings(transport)
    });

    // Act
    nats.publish(&doomed).await;
    let status = nats.wait_for_status(doomed.id, TaskState::Failure).await;
    let stats = mailer.stop().await;

    // Assert: five attempts, four retries, one dead letter holding the job.
    assert_eq!(status.attempts, 5);
    assert_eq!(
        (
            stats.sent(),
            stats.failed(),
            stats.retried(),
            stats.dead_lettered()
        ),
        (0, 5, 4, 1)
    );
    let dead = nats
        .jetstream
        .get_stream(nats.topology.dead_letter_stream())
        .await
        .unwrap()
        .get_last_raw_message_by_subject(&nats.topology.dead_letter_subject(&doomed.mail))
        .await
        .unwrap();
    let dead_job: MailJob = serde_json::from_slice(&dead.payload).unwrap();
    assert!(dead_job == doomed);
    let header = |name: &str| {
        dead.headers
            .get(name)
            .map(|value| value.as_str().to_owned())
    };
    assert_eq!(header("Nats-Msg-Id"), Some(format!("{}-dead", doomed.id)));
    let failure = header(FAILURE_HEADER).unwrap();
    assert!(failure.contains("SMTP"), "{failure}");
    assert_eq!(nats.left_over().await, (0, 0));

    // The error line names the job and template; no line holds the code or the address.
    let logs = logs();
    assert!(logs.lines().any(|line| line.contains("ERROR")
        && line.contains(&doomed.id.to_string())
        && line.contains("login_code")
        && line.contains("dead-lettered")));
    assert!(!logs.contains(code), "a log line holds the code");
    assert!(
        !logs.contains(doomed.to.as_str()),
        "a log line holds the address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_that_is_not_a_mail_job_is_dead_lettered_at_once() {
    // Arrange
    let nats = Nats::fresh().await;
    let dir = temp_dir("garbage");
    let mailer = start_mailer(nats.settings(Transport::File(dir.to_path_buf())));
    let garbage = b"{\"template\": \"test\", \"secret\": \"SQUEAMISH-OSSIFRAGE\"}".to_vec();

    // Act
    nats.jetstream
        .publish(nats.topology.subject(&Mail::Test), garbage.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let dead_subject = nats
        .topology
        .dead_letter_subject(&Mail::Test)
        .replace(".test", &format!(".{UNPARSEABLE}"));
    let mut dead_stream = nats
        .jetstream
        .get_stream(nats.topology.dead_letter_stream())
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while dead_stream.info().await.unwrap().state.messages == 0 {
        assert!(Instant::now() < deadline, "nothing was dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = mailer.stop().await;

    // Assert
    let dead = dead_stream
        .get_last_raw_message_by_subject(&dead_subject)
        .await
        .unwrap();
    assert_eq!(dead.payload.to_vec(), garbage);
    assert_eq!((stats.sent(), stats.dead_lettered()), (0, 1));
    assert_eq!(nats.left_over().await, (0, 0));
    assert!(!logs().contains("SQUEAMISH-OSSIFRAGE"));
    assert!(emails_by_job(&dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailer_waiting_for_nats_stops_promptly_on_shutdown() {
    init_logs();
    // Nothing is declared: NATS is not there.
    let topology = Topology::new(&scratch::nats_prefix("mailer")).unwrap();
    let settings = MailerSettings::new(
        &format!("nats://127.0.0.1:{}", free_port()),
        topology,
        MailKey::derive(&KEY),
    );
    let mailer = start_mailer(settings);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let stats = mailer.stop().await;

    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(stats.sent(), 0);
}

// ---------------------------------------------------------------------------------------------
// SMTP through a real server that appears after the mailer started.

/// A child process killed (and reaped) on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_aiosmtpd() {
    let importable = Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        importable,
        "the SMTP test needs Python's aiosmtpd, which is not importable: run `pip install aiosmtpd`"
    );
}

/// `python3 -m aiosmtpd` on 127.0.0.1:`port`, storing what it receives in the maildir `dir`.
fn start_smtp_server(port: u16, dir: &Path, log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Process(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_server_that_comes_up_after_the_mailer_gets_the_email() {
    // Arrange: the mailer starts, and fails its first attempt, before the server exists.
    require_aiosmtpd();
    let nats = Nats::fresh().await;
    let sealer = MailSealer::new(MailKey::derive(&KEY));
    let work = temp_dir("smtp");
    let maildir = work.join("maildir");
    let port = free_port();
    let transport = Transport::parse(&format!("smtp://127.0.0.1:{port}")).unwrap();
    let mailer = start_mailer(MailerSettings {
        retry_base: Duration::from_secs(1),
        ..nats.settings(transport)
    });
    let login = job_sealed(|id| Mail::LoginCode {
        code: sealer.seal("135790", RECIPIENT, id),
        valid_minutes: 5,
    });
    nats.publish(&login).await;
    let deadline = Instant::now() + WAIT;
    while mailer.stats.retried() == 0 {
        assert!(Instant::now() < deadline, "the first attempt never failed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Act
    let server_log = work.join("aiosmtpd.log");
    let server = start_smtp_server(port, &maildir, &server_log);
    let status = nats.wait_for_status(login.id, TaskState::Success).await;
    let stats = mailer.stop().await;
    drop(server);

    // Assert
    assert!(status.attempts >= 2, "{status:?}");
    assert_eq!((stats.sent(), stats.dead_lettered()), (1, 0));
    let emails = emails_by_job(&maildir);
    let received = emails.get(&login.id).unwrap_or_else(|| {
        panic!(
            "the SMTP server got no email; its log:\n{}",
            std::fs::read_to_string(&server_log).unwrap_or_default()
        )
    });
    assert_eq!(received.len(), 1);
    assert!(received[0].contains("Subject: Your Twofold login code: 135790"));
    assert!(received[0].contains(&format!("To: {}", login.to)));
    assert!(received[0].contains("multipart/alternative"));
}

/// The API and the mailer declare the same topology as they start, often at the same moment.
/// With an update that could meet the other process's create of the same stream, this failed
/// within a few dozen rounds ("subjects overlap with an existing stream"), and nats-server 2.9
/// (Debian's) crashed within about a hundred.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_declaring_one_topology_at_once_both_succeed() {
    let url = nats_url();
    let first = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let second = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    for round in 0..100 {
        let prefix = scratch::nats_prefix("declare");
        let mut guard = Scratch::new();
        guard.hold(Resource::streams(&url, &prefix));
        let topology = Topology::new(&prefix).unwrap();
        let (one, other) = tokio::join!(topology.declare(&first), topology.declare(&second));
        assert!(
            one.is_ok() && other.is_ok(),
            "round {round}: {:?} {:?}",
            one.err().map(|error| error.to_string()),
            other.err().map(|error| error.to_string())
        );
        // Declared again over what exists: nothing to change, and no error.
        topology.declare(&first).await.unwrap();
        drop(guard);
    }
}

/// A mail stream declared by an older release, with other settings, is updated in place by
/// [`Topology::declare`]: it takes the settings a fresh declaration gives, and the mail
/// waiting in it stays.
#[tokio::test]
async fn a_stream_of_an_older_shape_is_updated_and_keeps_its_mail() {
    let url = nats_url();
    let jetstream = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    let (prefix, fresh_prefix) = (
        scratch::nats_prefix("upgrade"),
        scratch::nats_prefix("upgrade"),
    );
    let mut guard = Scratch::new();
    guard.hold(Resource::streams(&url, &prefix));
    guard.hold(Resource::streams(&url, &fresh_prefix));
    let topology = Topology::new(&prefix).unwrap();
    let older = Duration::from_secs(3600);
    jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: topology.stream(),
            subjects: vec![format!("{prefix}.mail.>")],
            retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
            max_age: older,
            ..Default::default()
        })
        .await
        .unwrap();
    jetstream
        .publish(format!("{prefix}.mail.waiting"), "a job".into())
        .await
        .unwrap()
        .await
        .unwrap();

    topology.declare(&jetstream).await.unwrap();

    let fresh = Topology::new(&fresh_prefix).unwrap();
    fresh.declare(&jetstream).await.unwrap();
    let mut upgraded = jetstream.get_stream(topology.stream()).await.unwrap();
    let declared = jetstream.get_stream(fresh.stream()).await.unwrap();
    let (upgraded_config, declared_config) = (
        &upgraded.cached_info().config,
        &declared.cached_info().config,
    );
    assert_ne!(upgraded_config.max_age, older);
    assert_eq!(upgraded_config.max_age, declared_config.max_age);
    assert_eq!(upgraded_config.storage, declared_config.storage);
    assert_eq!(
        upgraded_config.duplicate_window,
        declared_config.duplicate_window
    );
    assert_eq!(upgraded.info().await.unwrap().state.messages, 1);
    // Declared again: nothing left to change, and no error.
    topology.declare(&jetstream).await.unwrap();
}
