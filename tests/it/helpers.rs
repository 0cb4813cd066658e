//! `spawn_app()` and the typed client helpers the tests share.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use reqwest::{Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use sqlx::PgPool;
use twofold_api::{Application, Config};
use twofold_tests::scratch::{self, Resource, Scratch};
use uuid::Uuid;

/// The server every test database is created on; override with `TWOFOLD_TEST_DATABASE_URL`.
const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432";

pub const PASSWORD: &str = "correct horse battery staple";

/// Everything the service logged during this test binary's run.
pub static LOGS: LazyLock<Arc<Mutex<Vec<u8>>>> = LazyLock::new(|| {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&logs);
    let echo = std::env::var_os("TEST_LOG").is_some();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("debug,sqlx=warn,hyper=info,h2=info,reqwest=info")
        .with_ansi(false)
        .with_writer(move || LogWriter {
            sink: Arc::clone(&sink),
            echo,
        })
        .try_init();
    logs
});

struct LogWriter {
    sink: Arc<Mutex<Vec<u8>>>,
    echo: bool,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.echo {
            std::io::stderr().write_all(buf)?;
        }
        self.sink.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Which store the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// Postgres, with mail through the outbox, NATS JetStream and an in-process mailer.
    Postgres,
    /// The embedded in-memory mode.
    Embedded,
}

pub struct TestApp {
    pub address: String,
    pub http: reqwest::Client,
    pub config: Config,
    pub db: Option<PgPool>,
    mailer: Option<tokio::task::JoinHandle<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// The database, streams and folder of `config`; dropped last, it removes them once no
    /// other app of this test uses them (also when the test panics).
    _scratch: Scratch,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop_mailer();
        self.server.abort();
    }
}

fn server_url() -> String {
    std::env::var("TWOFOLD_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned())
}

/// The shared NATS server the tests use unless they start their own.
pub fn default_nats_url() -> String {
    std::env::var("TWOFOLD_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Creates a fresh database and returns its URL. A [`TestApp`] on it drops it when the test
/// ends; one no app uses is left to the sweep in `scripts/test`.
pub async fn fresh_database() -> String {
    scratch::create_database(&server_url())
        .await
        .unwrap_or_else(|error| panic!("{error}"))
}

/// The configuration of a test app: a fresh database, NATS prefix and work directory unless
/// told to share another app's. All are scratch resources (see [`scratch`]).
pub fn test_config(store: Store, database_url: Option<String>, nats_url: Option<String>) -> Config {
    let work_dir = scratch::dir_path("app");
    let prefix = scratch::nats_prefix("");
    let mut config =
        Config::for_tests(database_url, nats_url, &prefix, &work_dir).expect("test config");
    if store == Store::Embedded {
        config.jwt.key_file = None;
        config.sealing.key = None;
    }
    config
}

/// Mailer settings matching `config`: same NATS, prefix and mail folder, the mail keys of its
/// sealing keys (what `twofold keys mail-key` prints), and quick retries.
pub fn mailer_settings(config: &Config) -> twofold_mailer::MailerSettings {
    let keys = config.keys().unwrap();
    let topology = config.nats.topology().unwrap();
    let nats_url = config.nats.url.as_ref().unwrap().expose_secret();
    let mut settings =
        twofold_mailer::MailerSettings::new(nats_url, topology, keys.sealing.mail_key());
    settings.retired_mail_keys = keys
        .retired_sealing
        .iter()
        .map(|key| key.mail_key())
        .collect();
    settings.transport = config.mail.transport().unwrap();
    settings.retry_base = Duration::from_millis(100);
    settings
}

pub async fn spawn_app(store: Store) -> TestApp {
    let config = match store {
        Store::Postgres => test_config(
            store,
            Some(fresh_database().await),
            Some(default_nats_url()),
        ),
        Store::Embedded => test_config(store, None, None),
    };
    let mut app = spawn_app_with(config).await;
    if store == Store::Postgres {
        app.start_mailer();
    }
    app
}

/// The scratch resources `config` names: its database, its streams, and the folders of its
/// keys and emails.
fn scratch_of(config: &Config) -> Scratch {
    let mut scratch = Scratch::new();
    if let Some(url) = &config.database.url {
        scratch.hold(Resource::database(url.expose_secret()));
    }
    if let Some(url) = &config.nats.url {
        scratch.hold(Resource::streams(url.expose_secret(), &config.nats.prefix));
    }
    let mail_dir = config
        .mail
        .transport
        .expose_secret()
        .strip_prefix("file:")
        .map(PathBuf::from);
    let mut dirs: Vec<PathBuf> = config
        .jwt
        .key_file
        .iter()
        .chain(&config.jwt.retired_key_files)
        .chain(&mail_dir)
        .filter_map(|path| path.parent().map(PathBuf::from))
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        scratch.hold(Resource::dir(&dir));
    }
    scratch
}

/// Starts the service with `config`, without a mailer.
pub async fn spawn_app_with(config: Config) -> TestApp {
    LazyLock::force(&LOGS);
    // Held before anything can fail, so that a failing start cleans up too.
    let scratch = scratch_of(&config);
    let application = Application::build(config.clone())
        .await
        .expect("the service starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    let server = tokio::spawn(application.run_until_stopped());
    let db = match &config.database.url {
        Some(url) => Some(
            PgPool::connect(url.expose_secret())
                .await
                .expect("connect to the test db"),
        ),
        None => None,
    };
    TestApp {
        address,
        http: test_client(),
        config,
        db,
        mailer: None,
        server,
        _scratch: scratch,
    }
}

/// The HTTP client of a test app. It forgets an idle connection well before the service's idle
/// timeout closes it (`TWOFOLD_IDLE_TIMEOUT`, 5 s by default): a test that waits some seconds
/// between two requests would otherwise send the second on a connection the service is
/// closing at that moment, and read no answer (as any client that keeps connections longer than
/// the server does).
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client")
}

/// The captured log lines that mention `request_id`.
pub fn log_lines_of(request_id: &str) -> Vec<String> {
    String::from_utf8_lossy(&LOGS.lock().unwrap())
        .lines()
        .filter(|line| line.contains(request_id))
        .map(str::to_owned)
        .collect()
}

/// A unique email for this test.
pub fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.com", Uuid::new_v4().simple())
}

pub fn signup_body(email: &str, device: Option<&str>) -> Value {
    json!({
        "email": email,
        "full_name": "Ada Lovelace",
        "password": PASSWORD,
        "tfa_enabled": device.is_some(),
        "device": device.map(|device_type| json!({ "device_type": device_type })),
    })
}

pub async fn problem(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned());
    let body: Value = response.json().await.expect("a JSON problem body");
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{body}"
    );
    (status, body)
}

impl TestApp {
    /// A second service instance on the same database, NATS prefix and keys.
    pub async fn another_instance(&self) -> TestApp {
        spawn_app_with(self.config.clone()).await
    }

    /// Runs the mailer in this process, delivering into this app's mail folder.
    pub fn start_mailer(&mut self) {
        let settings = mailer_settings(&self.config);
        self.mailer = Some(tokio::spawn(async move {
            let _ = twofold_mailer::run(settings, std::future::pending::<()>()).await;
        }));
    }

    /// Stops the in-process mailer.
    pub fn stop_mailer(&mut self) {
        if let Some(mailer) = self.mailer.take() {
            mailer.abort();
        }
    }

    /// Where the file transport writes this app's emails.
    pub fn mail_dir(&self) -> PathBuf {
        PathBuf::from(
            self.config
                .mail
                .transport
                .expose_secret()
                .trim_start_matches("file:"),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.address)
    }

    pub async fn signup(&self, body: &Value) -> Response {
        self.http
            .post(self.url("/auth/signup"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Signs up `email` with an authenticator app; returns the TOTP seed from the QR code.
    pub async fn signup_with_authenticator(&self, email: &str) -> Vec<u8> {
        let png = self
            .signup(&signup_body(email, Some("code_generator")))
            .await
            .bytes()
            .await
            .unwrap();
        seed_from_uri(&otpauth_uri_from_png(&png))
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.http
            .post(self.url("/auth/login"))
            .form(&[("username", email), ("password", password)])
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the JSON body, asserting the status.
    pub async fn login_expecting(&self, email: &str, status: StatusCode) -> Value {
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), status);
        response.json().await.unwrap()
    }

    /// Logs in, asserts the status, and returns the `access_token` (a pre-2FA token on 202).
    pub async fn login_token(&self, email: &str, status: StatusCode) -> String {
        self.login_expecting(email, status).await["access_token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The JWKS document.
    pub async fn jwks(&self) -> Value {
        self.http
            .get(format!("{}/.well-known/jwks.json", self.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn get_with(&self, path: &str, token: &str) -> Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_with(&self, path: &str, token: &str) -> Response {
        self.http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn enable_tfa(&self, token: &str, device_type: &str) -> Response {
        self.http
            .put(self.url("/tfa/enable_tfa"))
            .bearer_auth(token)
            .json(&json!({ "device_type": device_type }))
            .send()
            .await
            .unwrap()
    }

    /// The bodies of every email sent to `to` so far.
    pub fn emails_to(&self, to: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.mail_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .filter(|email| email.contains(&format!("\r\nTo: {to}\r\n")))
            .collect()
    }

    /// Waits (up to 10 s) for an email to `to` whose subject contains `subject`.
    pub async fn wait_for_email(&self, to: &str, subject: &str) -> String {
        for _ in 0..200 {
            if let Some(email) = self
                .emails_to(to)
                .into_iter()
                .find(|email| email.contains(&format!("Subject: {subject}")))
            {
                return email;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no email `{subject}` to {to} arrived");
    }

    /// Waits for an email holding exactly `count` codes matching `pattern` lines, returns them.
    pub async fn backup_codes(&self, to: &str) -> Vec<String> {
        let email = self.wait_for_email(to, "Your Twofold backup codes").await;
        email
            .lines()
            .map(str::trim)
            .filter(|line| line.len() == 29 && line.split('-').count() == 6)
            .map(str::to_owned)
            .collect()
    }

    /// The login codes emailed to `to`, oldest first is not guaranteed: returns all.
    pub async fn login_codes(&self, to: &str, at_least: usize) -> Vec<String> {
        for _ in 0..200 {
            let codes: Vec<String> = self
                .emails_to(to)
                .iter()
                .filter_map(|email| {
                    let subject = email.lines().find(|line| line.starts_with("Subject: "))?;
                    subject
                        .strip_prefix("Subject: Your Twofold login code: ")
                        .map(str::to_owned)
                })
                .collect();
            if codes.len() >= at_least {
                return codes;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no login code to {to} arrived");
    }

    /// The JWT signing key the service was configured with (tests forge tokens with it).
    pub fn jwt_key_pem(&self) -> String {
        std::fs::read_to_string(self.config.jwt.key_file.as_ref().unwrap()).unwrap()
    }
}

/// The otpauth URI in a QR code PNG.
pub fn otpauth_uri_from_png(png: &[u8]) -> String {
    let image = image::load_from_memory(png).expect("a PNG").to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    let (_, content) = grids[0].decode().expect("a readable QR code");
    content
}

/// The TOTP seed in an otpauth URI.
pub fn seed_from_uri(uri: &str) -> Vec<u8> {
    let url = url::Url::parse(uri).unwrap();
    let secret = url
        .query_pairs()
        .find(|(key, _)| key == "secret")
        .map(|(_, value)| value.into_owned())
        .expect("a secret parameter");
    totp_rs::Secret::Encoded(secret).to_bytes().unwrap()
}

/// The code an authenticator app shows now for `seed`.
pub fn current_code(seed: &[u8]) -> String {
    totp(seed).generate_current().unwrap()
}

/// The code an authenticator app showed one time step (30 s) ago: still accepted for clock
/// drift, and older than [`current_code`].
pub fn previous_code(seed: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    totp(seed).generate(now - 30)
}

fn totp(seed: &[u8]) -> totp_rs::TOTP {
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 30, seed.to_vec())
}

/// The claims of a JWT, read without checking it.
pub fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}
