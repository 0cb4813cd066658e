//! The mail path on the real stack: outbox, relay, JetStream, mailer. No email is lost while
//! NATS is away, none is sent twice by two relays, and no code is in clear on the way.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use twofold_nats::Topology;

use crate::helpers::*;
use crate::nats_server::NatsServer;

async fn outbox_rows(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT job::text FROM mail_outbox")
        .fetch_all(app.db.as_ref().unwrap())
        .await
        .unwrap()
}

async fn wait_for_empty_outbox(app: &TestApp) {
    for _ in 0..400 {
        if outbox_rows(app).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox did not drain");
}

#[tokio::test]
async fn every_email_arrives_after_a_nats_outage_and_the_api_keeps_answering() {
    let mut nats = NatsServer::start().await;
    let config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(nats.url()),
    );
    let mut app = spawn_app_with(config).await;
    app.start_mailer();

    let before = unique_email("before-outage");
    assert_eq!(
        app.signup(&signup_body(&before, Some("email")))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(app.backup_codes(&before).await.len(), 5);

    nats.stop();
    let during: Vec<String> = (0..3)
        .map(|i| unique_email(&format!("outage-{i}")))
        .collect();
    for email in &during {
        let started = Instant::now();
        let response = app.signup(&signup_body(email, Some("email"))).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "sign-up waited for NATS"
        );
    }
    let started = Instant::now();
    app.login_expecting(&before, StatusCode::ACCEPTED).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "login waited for NATS"
    );
    // Three backup-code emails and one login code wait in the outbox.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(outbox_rows(&app).await.len(), 4);
    assert!(app.emails_to(&during[0]).is_empty());

    nats.resume().await;
    for email in &during {
        assert_eq!(app.backup_codes(email).await.len(), 5);
    }
    assert_eq!(app.login_codes(&before, 1).await.len(), 1);
    wait_for_empty_outbox(&app).await;
    app.stop_mailer();
}

#[tokio::test]
async fn two_relays_send_each_email_exactly_once() {
    let nats = NatsServer::start().await;
    let config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(nats.url()),
    );
    let mut first = spawn_app_with(config).await;
    first.start_mailer();
    let second = first.another_instance().await;
    let emails: Vec<String> = (0..12)
        .map(|i| unique_email(&format!("relay-{i}")))
        .collect();
    let signups = emails.iter().enumerate().map(|(index, email)| {
        let app = if index % 2 == 0 { &first } else { &second };
        async move {
            app.signup(&signup_body(email, Some("email")))
                .await
                .status()
        }
    });
    for status in futures::future::join_all(signups).await {
        assert_eq!(status, StatusCode::OK);
    }
    for email in &emails {
        app_backup_codes_once(&first, email).await;
    }
    wait_for_empty_outbox(&first).await;
    // Give a duplicate every chance to show up before counting again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for email in &emails {
        assert_eq!(first.emails_to(email).len(), 1, "{email} got a duplicate");
    }
    first.stop_mailer();
}

async fn app_backup_codes_once(app: &TestApp, email: &str) {
    assert_eq!(app.backup_codes(email).await.len(), 5);
}

#[tokio::test]
async fn no_code_is_in_clear_in_the_outbox_or_the_stream() {
    let mut nats = NatsServer::start().await;
    let config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(nats.url()),
    );
    let topology = Topology::new(&config.nats.prefix).unwrap();
    let mut app = spawn_app_with(config).await;

    // With NATS away the jobs stay in the outbox: read them there.
    nats.stop();
    let email = unique_email("sealed");
    assert_eq!(
        app.signup(&signup_body(&email, Some("email")))
            .await
            .status(),
        StatusCode::OK
    );
    app.login_expecting(&email, StatusCode::ACCEPTED).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let outbox = outbox_rows(&app).await;
    assert_eq!(outbox.len(), 2);

    // With NATS back (and no mailer yet) they move to the stream: read them there.
    nats.resume().await;
    wait_for_empty_outbox(&app).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream.get_stream(topology.stream()).await.unwrap();
    let mut raw = Vec::new();
    for sequence in 1..=2 {
        let message = stream.get_raw_message(sequence).await.unwrap();
        raw.push(String::from_utf8(message.payload.to_vec()).unwrap());
    }

    // The mailer opens them; the codes it sends appear in neither place.
    app.start_mailer();
    let codes = app.backup_codes(&email).await;
    let login_code = app.login_codes(&email, 1).await.remove(0);
    for stored in outbox.iter().chain(&raw) {
        assert!(stored.contains(&email), "the job is readable: {stored}");
        for code in &codes {
            assert!(
                !stored.contains(code.as_str()),
                "a backup code in clear: {stored}"
            );
            assert!(
                !stored.contains(&code.replace('-', "")),
                "a backup code in clear"
            );
        }
        assert!(
            !stored.contains(&format!("\"{login_code}\"")),
            "the login code in clear"
        );
    }
    app.stop_mailer();
}

#[tokio::test]
async fn one_request_id_links_the_log_lines_the_stored_events_and_the_email() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("traced");
    let request_id = format!("trace-{}", uuid::Uuid::new_v4());
    let response = app
        .http
        .post(app.url("/auth/signup"))
        .header("x-request-id", &request_id)
        .json(&signup_body(&email, Some("email")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], request_id.as_str());

    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT event_type FROM events WHERE metadata->>'request_id' = $1 ORDER BY sequence",
    )
    .bind(&request_id)
    .fetch_all(app.db.as_ref().unwrap())
    .await
    .unwrap();
    assert_eq!(stored, ["SignedUp", "TfaEnabled"]);

    let sent = app
        .wait_for_email(&email, "Your Twofold backup codes")
        .await;
    assert!(
        sent.contains(&format!("X-Request-Id: {request_id}")),
        "{sent}"
    );
    assert!(
        log_lines_of(&request_id)
            .iter()
            .any(|line| line.contains("signed up")),
        "a security log line carries the request id"
    );
}
