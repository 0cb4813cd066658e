//! A NATS server (with JetStream) that a test starts on its own port and stops by its pid, so
//! it can take NATS away from the service and bring it back.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const NATS_SERVER: &str = "/usr/sbin/nats-server";

pub struct NatsServer {
    pub port: u16,
    store_dir: PathBuf,
    child: Option<Child>,
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl NatsServer {
    /// Starts a server on a free port with a fresh JetStream store.
    pub async fn start() -> Self {
        // A scratch folder: removed on drop, or by the sweep if the test process is killed.
        let store_dir = twofold_tests::scratch::dir_path("nats");
        let mut server = Self {
            port: free_port(),
            store_dir,
            child: None,
        };
        server.resume().await;
        server
    }

    /// Where its JetStream keeps its streams and buckets.
    pub fn store_dir(&self) -> &std::path::Path {
        &self.store_dir
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and store (after `stop`).
    pub async fn resume(&mut self) {
        let child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {NATS_SERVER}: {error}"));
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server did not listen on {}", self.port);
    }

    /// Shuts the server down as an operator would (SIGTERM), so it writes out what it holds in
    /// memory, and waits for it to exit.
    pub fn shut_down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Kills the server (SIGKILL to its pid) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}
