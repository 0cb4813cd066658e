//! What the tests that run the real `twofold` binary share: free ports, and a deployment —
//! a fresh database, a work folder with a JWT key, a sealing key and a NATS prefix.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use twofold_api::adapters::SealingKey;
use twofold_api::http::jwt::JwtKey;
use uuid::Uuid;

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (up to 10 s) until something listens on `port`.
pub async fn wait_for_port(port: u16, what: &str) {
    for _ in 0..200 {
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
}

impl Deployment {
    /// A fresh database and keys; `label` names the work folder and the NATS prefix.
    pub async fn new(label: &str) -> Self {
        let server = std::env::var("TWOFOLD_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|error| panic!("Postgres at {server} is not reachable: {error}"));
        let name = format!("twofold_test_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let work_dir = std::env::temp_dir().join(format!("twofold-{label}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&work_dir).unwrap();
        std::fs::write(
            work_dir.join("jwt.pem"),
            JwtKey::generate_pem().unwrap().as_bytes(),
        )
        .unwrap();
        Self {
            database_url: format!("{server}/{name}"),
            work_dir,
            sealing_key: SealingKey::generate().to_base64(),
            prefix: format!("{label}-{}", Uuid::new_v4().simple()),
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
