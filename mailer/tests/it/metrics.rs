//! The `twofold-mailer` binary serves Prometheus metrics on `TWOFOLD_MAILER_METRICS_ADDR`,
//! counting the jobs it settles by outcome.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twofold_domain::values::{Email, UserId};
use twofold_nats::{Mail, MailJob, Topology};
use twofold_tests::scratch::{self, Resource, Scratch, ScratchDir};
use uuid::Uuid;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The metrics page, over a plain HTTP/1.0 request; `None` while nothing listens.
async fn scrape(port: u16) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .ok()?;
    let mut page = String::new();
    stream.read_to_string(&mut page).await.ok()?;
    Some(page)
}

#[tokio::test]
async fn the_mailer_binary_counts_sent_emails_on_its_metrics_listener() {
    let nats_url = std::env::var("TWOFOLD_TEST_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let prefix = scratch::nats_prefix("metrics");
    // Declared before the mailer process, so dropped after it is killed: deletes the streams.
    let mut streams = Scratch::new();
    streams.hold(Resource::streams(&nats_url, &prefix));
    let mail_dir = ScratchDir::new("mailer-metrics").unwrap();
    let metrics_port = free_port();
    let key = twofold_nats::MailKey::derive(&[7u8; 32]).to_base64();
    let _mailer = tokio::process::Command::new(env!("CARGO_BIN_EXE_twofold-mailer"))
        .env("NATS_URL", &nats_url)
        .env("TWOFOLD_NATS_PREFIX", &prefix)
        .env("TWOFOLD_MAIL_KEY", key.as_str())
        .env(
            "TWOFOLD_MAIL_TRANSPORT",
            format!("file:{}", mail_dir.display()),
        )
        .env(
            "TWOFOLD_MAILER_METRICS_ADDR",
            format!("127.0.0.1:{metrics_port}"),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let jetstream = async_nats::jetstream::new(async_nats::connect(&nats_url).await.unwrap());
    let topology = Topology::new(&prefix).unwrap();
    topology.declare(&jetstream).await.unwrap();
    let job = MailJob {
        id: Uuid::new_v4(),
        owner: UserId::new_random(),
        to: Email::parse("metrics@example.com").unwrap(),
        request_id: None,
        mail: Mail::Test,
    };
    twofold_nats::publish(&jetstream, &topology, &job)
        .await
        .unwrap();

    let sent = "twofold_emails_total{outcome=\"sent\"} 1";
    let mut page = String::new();
    for _ in 0..300 {
        page = scrape(metrics_port).await.unwrap_or_default();
        if page.contains(sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.contains(sent), "{page}");
    assert_eq!(
        std::fs::read_dir(&*mail_dir).unwrap().count(),
        1,
        "the one email was written"
    );
}
