//! What the tests that run the real `twofold` binary share: free ports, and a deployment —
//! a fresh database, a work folder with a JWT key, a sealing key and a NATS prefix, removed
//! when the test ends.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use twofold_api::adapters::SealingKey;
use twofold_api::http::jwt::JwtKey;
use twofold_tests::scratch::{self, Resource, Scratch};

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 60 s) until something listens on `port`. `twofold` listens only after it has
/// computed the dummy password hash, which takes as long as a sign-up: seconds in the SIGTERM
/// tests, more while other tests load the machine.
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..1200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not listen on {port}");
}

/// What every instance of one deployment shares.
pub struct Deployment {
    pub database_url: String,
    pub work_dir: PathBuf,
    pub sealing_key: String,
    pub prefix: String,
    /// Drops the database, deletes the prefix's streams on the shared NATS and removes the
    /// work folder when the test ends, passed or failed.
    _scratch: Scratch,
}

impl Deployment {
    /// A fresh database and keys; `label` names the work folder and the NATS prefix.
    pub async fn new(label: &str) -> Self {
        let server = std::env::var("TWOFOLD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let nats_url = std::env::var("TWOFOLD_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let work_dir = scratch::dir_path(label);
        let prefix = scratch::nats_prefix(label);
        let mut guard = Scratch::new();
        guard
            .hold(Resource::dir(&work_dir))
            .hold(Resource::streams(&nats_url, &prefix));
        let database_url = scratch::create_database(&server)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        guard.hold(Resource::database(&database_url));
        std::fs::create_dir_all(&work_dir).unwrap();
        std::fs::write(
            work_dir.join("jwt.pem"),
            JwtKey::generate_pem().unwrap().as_bytes(),
        )
        .unwrap();
        Self {
            database_url,
            work_dir,
            sealing_key: SealingKey::generate().to_base64(),
            prefix,
            _scratch: guard,
        }
    }

    /// The environment every `twofold` instance of this deployment runs with.
    pub fn shared_env(&self) -> [(&'static str, String); 4] {
        [
            ("DATABASE_URL", self.database_url.clone()),
            ("TWOFOLD_NATS_PREFIX", self.prefix.clone()),
            (
                "TWOFOLD_JWT_KEY_FILE",
                self.work_dir.join("jwt.pem").display().to_string(),
            ),
            ("TWOFOLD_SEALING_KEY", self.sealing_key.clone()),
        ]
    }
}
