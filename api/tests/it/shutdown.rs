//! The real `twofold` binary on SIGTERM: it stops accepting connections, lets the request in
//! flight finish with its normal answer, stops the outbox relay and exits 0; and a request
//! longer than `TWOFOLD_SHUTDOWN_TIMEOUT` does not keep it alive. This test lives here, not in
//! `tests/`, because it needs the real binary (`CARGO_BIN_EXE_twofold`).
//!
//! A slow request is a sign-up with a costly Argon2 setting. The cost is not guessed: each
//! test first times a sign-up at a known cost on this machine, then scales the passes so the
//! slow one takes a few seconds.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::{free_port, wait_for_port, Deployment};
use sqlx::{Connection, PgConnection};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Argon2 memory of every run here: 64 MiB, so the passes set the time.
const MEMORY_KIB: u32 = 64 * 1024;
/// Passes of the timing run.
const PROBE_PASSES: u32 = 4;

struct Stack {
    base: Deployment,
}

impl Stack {
    async fn new() -> Self {
        Self {
            base: Deployment::new("shutdown").await,
        }
    }

    /// Starts the service with `passes` Argon2 passes and one hashing thread, and waits
    /// until it listens.
    async fn api(&self, passes: u32, shutdown_timeout: u64) -> Api {
        let port = free_port();
        let nats_url = std::env::var("TWOFOLD_TEST_NATS_URL")
            .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
        let child = Command::new(env!("CARGO_BIN_EXE_twofold"))
            .envs(self.base.shared_env())
            .env("NATS_URL", nats_url)
            .env("TWOFOLD_ADDR", format!("127.0.0.1:{port}"))
            .env("TWOFOLD_ARGON2_MEMORY_KIB", MEMORY_KIB.to_string())
            .env("TWOFOLD_ARGON2_ITERATIONS", passes.to_string())
            .env("TWOFOLD_ARGON2_PARALLELISM", "1")
            .env("TWOFOLD_HASH_WORKERS", "1")
            .env("TWOFOLD_SHUTDOWN_TIMEOUT", shutdown_timeout.to_string())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_port(port, "twofold").await;
        Api { child, port }
    }

    /// Argon2 passes that make a sign-up take about `target` on this machine, measured: the
    /// faster of two sign-ups, since the other tests running beside this one can slow one
    /// down, and a slow probe gives too few passes (a request over before it was meant to be).
    async fn passes_for(&self, target: Duration) -> u32 {
        let mut probe = self.api(PROBE_PASSES, 30).await;
        let mut fastest = Duration::MAX;
        for _ in 0..2 {
            let started = Instant::now();
            let response = probe.sign_up().send().await.unwrap();
            assert_eq!(response.status(), 200);
            fastest = fastest.min(started.elapsed());
        }
        let per_pass = fastest.as_secs_f64() / f64::from(PROBE_PASSES);
        probe.child.kill().await.unwrap();
        let passes = (target.as_secs_f64() / per_pass).ceil();
        assert!(passes < 10_000.0, "a sign-up took {per_pass} s per pass");
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let passes = passes as u32;
        passes.max(1)
    }
}

struct Api {
    child: Child,
    port: u16,
}

impl Api {
    /// A sign-up of a fresh address with email 2FA: one Argon2 hash, and a backup-codes
    /// email committed to the outbox.
    fn sign_up(&self) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/api/v1/auth/signup", self.port))
            .json(&serde_json::json!({
                "email": format!("shutdown-{}@example.com", Uuid::new_v4().simple()),
                "full_name": "Ada Lovelace",
                "password": "correct horse battery staple",
                "tfa_enabled": true,
                "device": { "device_type": "email" },
            }))
    }

    fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits until connecting is refused; true if it was within a few seconds.
    async fn refuses_connections(&self) -> bool {
        for _ in 0..100 {
            match tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return true,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        false
    }

    /// Waits for the process to exit; returns its exit code and what it logged.
    async fn exit(mut self) -> (Option<i32>, String) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the process exits")
            .unwrap();
        let mut logs = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut logs)
            .await
            .unwrap();
        (status.code(), logs)
    }
}

#[tokio::test]
async fn sigterm_lets_the_request_in_flight_finish_refuses_new_ones_and_exits_0() {
    let stack = Stack::new().await;
    let passes = stack.passes_for(Duration::from_secs(4)).await;
    let api = stack.api(passes, 30).await;

    let started = Instant::now();
    let in_flight = tokio::spawn(api.sign_up().send());
    // An eighth of the way into the request, well after its connection was accepted.
    let into_it = Duration::from_millis(500);
    tokio::time::sleep(into_it).await;
    assert!(!in_flight.is_finished(), "the request is still in flight");
    api.terminate();

    assert!(
        api.refuses_connections().await,
        "new connections are refused after SIGTERM"
    );
    let response = in_flight
        .await
        .unwrap()
        .expect("the request in flight is answered");
    assert_eq!(response.status(), 200, "with its normal answer");
    assert!(started.elapsed() > into_it);
    let (code, logs) = api.exit().await;
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("relay: stopped"), "the relay stopped: {logs}");
    let mut db = PgConnection::connect(&stack.base.database_url)
        .await
        .unwrap();
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox")
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(
        waiting, 0,
        "the last request's email was relayed before the exit"
    );
}

#[tokio::test]
async fn a_request_longer_than_the_shutdown_timeout_does_not_keep_the_process_alive() {
    let stack = Stack::new().await;
    let passes = stack.passes_for(Duration::from_secs(8)).await;
    let api = stack.api(passes, 1).await;

    let in_flight = tokio::spawn(api.sign_up().send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.terminate();
    let (code, logs) = api.exit().await;

    assert_eq!(code, Some(0), "{logs}");
    assert!(
        logs.contains("shutdown timeout reached"),
        "the timeout cut the drain short: {logs}"
    );
    assert!(
        in_flight.await.unwrap().is_err(),
        "the process exited before the slow request could be answered"
    );
}
