//! A fresh database per test, and rows written into `events` the way the API's writer does.

use std::path::PathBuf;

use cqrs_es::DomainEvent;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use time::OffsetDateTime;
use twofold_domain::user::{Device, DeviceSecret};
use twofold_domain::values::{
    DeviceId, Email, FullName, PasswordHash, RefreshTokenId, SessionId, UserId,
};
use twofold_domain::UserEvent;
use uuid::Uuid;

/// The server test databases are created on; override with `TWOFOLD_TEST_DATABASE_URL`.
fn server_url() -> String {
    std::env::var("TWOFOLD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A database that exists for one test.
pub struct TestDb {
    pub pool: PgPool,
    name: String,
}

impl TestDb {
    /// An empty database, without migrations.
    pub async fn empty() -> Self {
        let server = server_url();
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|error| panic!("Postgres at {server} is not reachable: {error}"));
        // Named as the test harness names its scratch databases, so that the sweep in
        // `scripts/test` drops it if this test is killed before it can.
        let name = format!(
            "twofold_test_p{}_{}",
            std::process::id(),
            Uuid::new_v4().simple()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .connect(&format!("{server}/{name}"))
            .await
            .unwrap();
        Self { pool, name }
    }

    /// A database with every migration applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        sqlx::migrate!("../migrations").run(&db.pool).await.unwrap();
        db
    }

    /// A pool of one connection to this database: every statement through it runs on the
    /// same connection, with its session settings and statistics.
    pub async fn one_connection(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(1)
            .connect_with((*self.pool.connect_options()).clone())
            .await
            .unwrap()
    }

    /// Closes the pool and drops the database.
    pub async fn drop(self) {
        self.pool.close().await;
        let server = server_url();
        let mut admin = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap();
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// The migration files, in order.
pub fn migration_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    files
}

pub const INSERT_EVENT: &str = "INSERT INTO events \
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
    VALUES ('User', $1, $2, $3, $6, $4, $5)";

/// Writes `event` as event `sequence` of `user`, in its own transaction.
pub async fn write(pool: &PgPool, user: &str, sequence: i64, event: &UserEvent) {
    let metadata = serde_json::json!({"actor": "anonymous", "ip": "192.0.2.1"});
    write_with(pool, user, sequence, event, metadata).await;
}

/// Writes `event` as event `sequence` of `user` with this metadata, in its own transaction.
pub async fn write_with(
    pool: &PgPool,
    user: &str,
    sequence: i64,
    event: &UserEvent,
    metadata: serde_json::Value,
) {
    sqlx::query(INSERT_EVENT)
        .bind(user)
        .bind(sequence)
        .bind(event.event_type())
        .bind(serde_json::to_value(event).unwrap())
        .bind(metadata)
        .bind(event.event_version())
        .execute(pool)
        .await
        .unwrap();
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

pub fn signed_up(user: &str, email: &str) -> UserEvent {
    UserEvent::SignedUp {
        user_id: user.parse::<UserId>().unwrap(),
        email: Email::parse(email).unwrap(),
        full_name: FullName::parse("Ada Lovelace").unwrap(),
        password_hash: PasswordHash::from_phc("plain$not-a-real-hash".to_owned()),
        at: now(),
    }
}

pub fn tfa_enabled() -> UserEvent {
    UserEvent::TfaEnabled {
        device: Device {
            id: DeviceId::new_random(),
            secret: DeviceSecret::Email,
        },
        backup_codes: Vec::new(),
        at: now(),
    }
}

pub fn tfa_disabled() -> UserEvent {
    UserEvent::TfaDisabled { at: now() }
}

pub fn logged_in() -> UserEvent {
    UserEvent::LoggedIn { at: now() }
}

pub fn session_started() -> UserEvent {
    UserEvent::SessionStarted {
        session_id: SessionId::new_random(),
        refresh_id: RefreshTokenId::new_random(),
        expires_at: now(),
        at: now(),
    }
}

pub fn new_user() -> String {
    Uuid::new_v4().to_string()
}

/// Waits until every event written so far can be read from the log: the log's horizon is
/// the whole cluster's oldest running transaction, and other tests run beside this one.
pub async fn settle(pool: &PgPool) {
    for _ in 0..500 {
        let readable: bool = sqlx::query_scalar(
            "SELECT coalesce(pg_snapshot_xmin(pg_current_snapshot()) > max(transaction_id), true) \
             FROM events",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if readable {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("a transaction stayed open for 10 s");
}
