//! Slow and idle clients against the real binary under a 256-descriptor limit: hundreds of
//! sockets that never finish their request do not keep others from being served, and are
//! closed; a half-sent body is cut off; a half-sent request does not hold shutdown.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::{free_port, wait_for_port};

/// The header-read and idle timeout of these runs, in seconds.
const TIMEOUT_SECONDS: u64 = 3;
/// Sockets the slow clients hold open, more than the descriptor limit allows.
const SLOW_SOCKETS: usize = 300;

struct Server {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Server {
    /// The embedded service under `prlimit --nofile=256`, with short timeouts.
    async fn start(shutdown_timeout: u64) -> Self {
        Self::start_with(shutdown_timeout, &[]).await
    }

    /// As [`Self::start`], with `settings` overriding the environment.
    async fn start_with(shutdown_timeout: u64, settings: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("twofold-slow-{port}.log"));
        let child = Command::new("prlimit")
            .arg("--nofile=256:256")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_twofold"))
            .env_clear()
            .env("TWOFOLD_ADDR", format!("127.0.0.1:{port}"))
            .env("TWOFOLD_HEADER_READ_TIMEOUT", TIMEOUT_SECONDS.to_string())
            .env("TWOFOLD_IDLE_TIMEOUT", TIMEOUT_SECONDS.to_string())
            .env("TWOFOLD_BODY_READ_TIMEOUT", TIMEOUT_SECONDS.to_string())
            .env("TWOFOLD_SHUTDOWN_TIMEOUT", shutdown_timeout.to_string())
            .env("TWOFOLD_ARGON2_MEMORY_KIB", "8192")
            .env("TWOFOLD_ARGON2_ITERATIONS", "1")
            .env("RUST_LOG", "warn")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for_port(port, "twofold").await;
        Self { child, port, log }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How long a fresh connection takes to get `/health/live` answered.
    async fn timed_request(&self) -> Duration {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let started = Instant::now();
        let response = client
            .get(format!("http://127.0.0.1:{}/health/live", self.port))
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200);
        started.elapsed()
    }

    /// CPU time the process has used so far (user and system), from `/proc/<pid>/stat`.
    fn cpu_time(&self) -> Duration {
        let pid = self.child.id().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let per_second: u64 = String::from_utf8(
            std::process::Command::new("getconf")
                .arg("CLK_TCK")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap();
        Duration::from_millis(ticks * 1000 / per_second)
    }

    fn terminate(&self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A client that opens a connection and sends a request head a byte at a time (every other
/// client) or nothing at all, never finishing; returns how long the server kept it open.
async fn slow_client(port: u16, index: usize) -> Option<Duration> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let opened = Instant::now();
    let trickle = index % 2 == 0;
    if trickle {
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\n")
            .await
            .ok()?;
    }
    let mut byte = [0u8; 1];
    loop {
        let read = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await;
        match read {
            // Closed (or reset) by the server, or answered with a 408 and closed.
            Ok(Ok(0) | Err(_)) => return Some(opened.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => {
                if opened.elapsed() > Duration::from_secs(60) {
                    return None;
                }
                if trickle && stream.write_all(b"X").await.is_err() {
                    return Some(opened.elapsed());
                }
            }
        }
    }
}

#[tokio::test]
async fn hundreds_of_slow_sockets_are_closed_and_normal_requests_are_still_served() {
    let server = Server::start(30).await;
    let mut usual = Duration::ZERO;
    for _ in 0..5 {
        usual = usual.max(server.timed_request().await);
    }

    let port = server.port;
    let slow: Vec<_> = (0..SLOW_SOCKETS)
        .map(|index| tokio::spawn(slow_client(port, index)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut during = Vec::new();
    for _ in 0..10 {
        during.push(server.timed_request().await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut held = Vec::new();
    for client in slow {
        held.push(client.await.unwrap());
    }

    // Normal requests kept their latency (allowing for a loaded machine), well under the
    // time a request would wait if it had to queue behind the slow sockets' timeouts.
    let slowest = during.iter().max().copied().unwrap();
    assert!(
        slowest < Duration::from_secs(1) + usual * 3,
        "a normal request took {slowest:?} while slow sockets were open (usually {usual:?})"
    );
    // Every slow socket was closed, none later than its timeout (and some slack).
    let limit = Duration::from_secs(TIMEOUT_SECONDS + 3);
    let never_closed = held.iter().filter(|held| held.is_none()).count();
    assert_eq!(
        never_closed, 0,
        "{never_closed} slow sockets were never closed"
    );
    let longest = held.iter().flatten().max().copied().unwrap();
    assert!(longest <= limit, "a slow socket stayed open {longest:?}");
    let logs = server.logs();
    assert!(!logs.contains("Too many open files"), "{logs}");
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off_at_the_body_timeout() {
    let server = Server::start(30).await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /api/v1/auth/signup HTTP/1.1\r\nHost: twofold\r\n\
              Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;

    assert!(read.is_ok(), "the connection was never closed");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(TIMEOUT_SECONDS + 3),
        "closed only after {waited:?}"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 4"),
        "a client error answers it: {answer}"
    );
}

#[tokio::test]
async fn a_half_sent_request_does_not_hold_shutdown() {
    let mut server = Server::start(30).await;
    let slow = Arc::new(tokio::sync::Mutex::new(
        TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap(),
    ));
    slow.lock()
        .await
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: tw")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    server.terminate();
    let status = tokio::time::timeout(Duration::from_secs(60), server.child.wait())
        .await
        .expect("the process exits")
        .unwrap();

    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(TIMEOUT_SECONDS),
        "shutdown waited {took:?} for a request that was never sent in full"
    );
}

#[tokio::test]
async fn a_request_in_progress_longer_than_the_idle_timeout_costs_no_cpu_while_it_waits() {
    // A body that stalls keeps its request in progress for the body timeout (4 s), well past
    // the idle timeout (1 s): the connection is busy, not idle, and waiting costs nothing.
    let server = Server::start_with(
        30,
        &[
            ("TWOFOLD_IDLE_TIMEOUT", "1"),
            ("TWOFOLD_BODY_READ_TIMEOUT", "4"),
        ],
    )
    .await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /api/v1/auth/signup HTTP/1.1\r\nHost: twofold\r\n\
              Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.cpu_time();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
    let spent = server.cpu_time() - before;

    assert!(read.is_ok(), "the connection was never closed");
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 4"),
        "the stalled body is answered at its timeout, not cut at the idle one"
    );
    assert!(
        spent < Duration::from_millis(1500),
        "the server spent {spent:?} of CPU while one request waited for its body"
    );
}
