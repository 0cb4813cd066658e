//! A Postgres server that a test starts in its own data folder on its own port and stops by
//! its pid, so it can take the database away from the service and bring it back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::nats_server::free_port;

const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// A command that runs `program` as the `postgres` user when the tests run as root (Postgres
/// refuses to run as root), as the current user otherwise. `setpriv` execs in place, so the
/// child's pid is the program's own.
fn as_postgres(program: &str) -> Command {
    let path = format!("{BIN_DIR}/{program}");
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|output| output.stdout.trim_ascii() == b"0")
        .unwrap_or(false);
    if is_root {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
            &path,
        ]);
        command
    } else {
        Command::new(path)
    }
}

impl PgServer {
    /// Initialises a fresh cluster in a scratch folder and starts it on a free port.
    pub async fn start() -> Self {
        // A scratch folder: removed on drop, or by the sweep if the test process is killed.
        let dir = twofold_tests::scratch::dir_path("pg");
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        let status = as_postgres("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("initdb runs");
        assert!(status.success(), "initdb failed");
        let mut server = Self {
            port: free_port(),
            dir,
            child: None,
        };
        server.resume().await;
        server
    }

    /// The server URL, without a database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and data (after `stop`).
    pub async fn resume(&mut self) {
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .args(["-c", "fsync=off", "-c", "max_connections=60"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        for _ in 0..200 {
            let ready = sqlx::PgPool::connect(&format!("{}/postgres", self.url())).await;
            if let Ok(pool) = ready {
                pool.close().await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("postgres did not accept connections on {}", self.port);
    }

    /// Stops the server as an operator would (fast shutdown: SIGINT to the postmaster, which
    /// ends every connection) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl PgServer {
    /// Freezes the server and its backends (SIGSTOP to each, by pid), as a hung host or a
    /// network partition leaves it: connections open but nothing answers. The postmaster
    /// stops first: stopped, it forks no backend after its children are listed, which would
    /// go on serving the connection it was forked for.
    pub fn freeze(&self) {
        self.signal_postmaster("-STOP");
        self.signal_backends("-STOP");
    }

    /// Lets a frozen server run again.
    pub fn thaw(&self) {
        self.signal_backends("-CONT");
        self.signal_postmaster("-CONT");
    }

    fn signal_postmaster(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    fn signal_backends(&self, signal: &str) {
        let Some(child) = &self.child else { return };
        let backends = Command::new("pgrep")
            .args(["-P", &child.id().to_string()])
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default();
        let pids: Vec<&str> = backends.split_whitespace().collect();
        if !pids.is_empty() {
            let _ = Command::new("kill").arg(signal).args(&pids).status();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.thaw();
        if let Some(mut child) = self.child.take() {
            // Immediate shutdown: the postmaster takes its backends with it.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
