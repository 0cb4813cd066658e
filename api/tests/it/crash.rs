//! The `twofold` process killed with SIGKILL after a commit and before the publish: the email
//! still goes out after a restart, because the job was committed to the outbox with the events.
//! This test lives here, not in `tests/`, because it needs the real binary (Cargo exposes
//! `CARGO_BIN_EXE_twofold` only to this package's tests).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{free_port, wait_for_port, Deployment};
use sqlx::PgPool;
use twofold_api::adapters::SealingKey;
use uuid::Uuid;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A deployment whose NATS server this test starts, on its own port.
struct Stack {
    base: Deployment,
    nats_port: u16,
    api_port: u16,
}

impl Stack {
    async fn new() -> Self {
        Self {
            base: Deployment::new("crash").await,
            nats_port: free_port(),
            api_port: free_port(),
        }
    }

    fn api(&self) -> Killed {
        let child = Command::new(env!("CARGO_BIN_EXE_twofold"))
            .envs(self.base.shared_env())
            .env("NATS_URL", format!("nats://127.0.0.1:{}", self.nats_port))
            .env("TWOFOLD_ADDR", format!("127.0.0.1:{}", self.api_port))
            .env("TWOFOLD_ARGON2_MEMORY_KIB", "64")
            .env("TWOFOLD_ARGON2_ITERATIONS", "1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Killed(child)
    }

    fn nats(&self) -> Killed {
        let child = Command::new("/usr/sbin/nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.nats_port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.base.work_dir.join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Killed(child)
    }

    fn mail_dir(&self) -> PathBuf {
        self.base.work_dir.join("mail")
    }
}

fn emails_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn an_email_committed_before_a_sigkill_is_sent_after_the_restart() {
    let stack = Stack::new().await;
    let db = PgPool::connect(&stack.base.database_url).await.unwrap();

    // NATS is not running, so nothing can be published after the commit.
    let api = stack.api();
    wait_for_port(stack.api_port, "twofold").await;
    let email = format!("crash-{}@example.com", Uuid::new_v4().simple());
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/api/v1/auth/signup",
            stack.api_port
        ))
        .json(&serde_json::json!({
            "email": email, "full_name": "Ada", "password": "correct horse battery",
            "tfa_enabled": true, "device": { "device_type": "email" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(waiting, 1, "the job was committed with the sign-up");

    drop(api); // SIGKILL: no chance to publish or clean up.

    let _nats = stack.nats();
    wait_for_port(stack.nats_port, "nats-server").await;
    let _api = stack.api();
    wait_for_port(stack.api_port, "twofold").await;
    let mut settings = twofold_mailer::MailerSettings::new(
        &format!("nats://127.0.0.1:{}", stack.nats_port),
        twofold_nats::Topology::new(&stack.base.prefix).unwrap(),
        SealingKey::from_base64(&stack.base.sealing_key)
            .unwrap()
            .mail_key(),
    );
    settings.transport = twofold_mailer::Transport::File(stack.mail_dir());
    let mailer = tokio::spawn(twofold_mailer::run(settings, std::future::pending::<()>()));

    let mut delivered = Vec::new();
    for _ in 0..300 {
        delivered = emails_in(&stack.mail_dir());
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mailer.abort();
    assert_eq!(delivered.len(), 1, "exactly one email after the restart");
    assert!(delivered[0].contains(&format!("To: {email}")));
    // The relay deletes the row once JetStream has acknowledged the job, and the mailer may
    // deliver the email before that delete commits: the row goes within moments, not at once.
    let mut waiting: i64 = 1;
    for _ in 0..100 {
        waiting = sqlx::query_scalar("SELECT count(*) FROM mail_outbox")
            .fetch_one(&db)
            .await
            .unwrap();
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        waiting, 0,
        "the relay removed the row after JetStream acknowledged it"
    );
}
