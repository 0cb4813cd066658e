//! `/metrics`: Prometheus counters and histograms for requests, logins, lockouts, commands,
//! emails and the outbox relay, labelled by route template rather than raw path, and the
//! embedded store's size.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::*;

/// The metrics page of `app`.
pub async fn scrape(app: &TestApp) -> String {
    let response = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The value of the sample `name` whose labels include all of `labels`, if there is one.
pub fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
            (metric == name).then_some((rest.trim_end_matches('}'), value))
        })
        .find(|(series_labels, _)| {
            labels
                .iter()
                .all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")))
        })
        .map(|(_, value)| value.parse().unwrap())
}

#[tokio::test]
async fn a_signup_a_failed_and_a_successful_login_are_counted_with_their_labels() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("metrics");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    let wrong = app.login(&email, "not the password at all").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let token = app.login_token(&email, StatusCode::OK).await;
    let session_id = uuid::Uuid::new_v4();
    app.http
        .delete(app.url(&format!("/auth/sessions/{session_id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();

    let page = scrape(&app).await;

    let requests = "twofold_http_requests_total";
    let signup = [("route", "/api/v1/auth/signup"), ("method", "POST")];
    assert_eq!(
        sample(&page, requests, &[signup[0], signup[1], ("status", "200")]),
        Some(1.0),
        "{page}"
    );
    let login = ("route", "/api/v1/auth/login");
    assert_eq!(
        sample(&page, requests, &[login, ("status", "401")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, requests, &[login, ("status", "200")]),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &page,
            "twofold_http_request_duration_seconds_count",
            &[login, ("status", "200")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &page,
            requests,
            &[("route", "/api/v1/auth/sessions/{session_id}")]
        )
        .is_some(),
        "a path with an id is labelled by its template: {page}"
    );
    assert!(
        !page.contains(&session_id.to_string()),
        "raw ids never become labels"
    );

    let logins = "twofold_logins_total";
    let password = ("step", "password");
    assert_eq!(
        sample(&page, logins, &[password, ("outcome", "wrong_password")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, logins, &[password, ("outcome", "ok")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, logins, &[password, ("outcome", "unknown_account")]),
        None
    );

    let commands = "twofold_command_duration_seconds_count";
    assert_eq!(
        sample(
            &page,
            commands,
            &[("command", "sign_up"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, commands, &[("command", "log_in"), ("outcome", "ok")]),
        Some(2.0),
        "the failed login is a recorded event too"
    );
    assert!(
        sample(&page, "twofold_outbox_waiting", &[]).is_some(),
        "the relay reports its lag at start: {page}"
    );
}

#[tokio::test]
async fn unknown_accounts_lockouts_and_throttled_logins_are_counted() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("metrics-lock");
    app.signup(&signup_body(&email, None)).await;
    app.login("nobody-here@example.com", PASSWORD).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(app.login(&email, "a wrong password, again").await.status());
    }
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS));

    let page = scrape(&app).await;

    let logins = "twofold_logins_total";
    assert_eq!(
        sample(&page, logins, &[("outcome", "unknown_account")]),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        sample(&page, logins, &[("outcome", "wrong_password")]),
        Some(5.0)
    );
    assert_eq!(
        sample(&page, logins, &[("outcome", "auth.locked")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&page, "twofold_lockouts_total", &[("factor", "password")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_embedded_mode_counts_the_emails_it_sends() {
    let app = spawn_app(Store::Embedded).await;
    let email = unique_email("metrics-mail");
    let response = app.signup(&signup_body(&email, Some("email"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.backup_codes(&email).await;

    // The worker counts a job right after handing it to the transport.
    let mut sent = None;
    for _ in 0..50 {
        sent = sample(
            &scrape(&app).await,
            "twofold_emails_total",
            &[("outcome", "sent")],
        );
        if sent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent, Some(1.0));
}

#[tokio::test]
async fn the_outbox_relay_counts_the_jobs_it_publishes() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("metrics-relay");
    let response = app.signup(&signup_body(&email, Some("email"))).await;
    assert_eq!(response.status(), StatusCode::OK);

    let mut published = None;
    for _ in 0..50 {
        published = sample(&scrape(&app).await, "twofold_outbox_published_total", &[]);
        if published.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(published, Some(1.0), "the backup-codes email was relayed");
}

#[tokio::test]
async fn the_embedded_store_reports_what_it_holds_and_postgres_does_not() {
    let app = spawn_app(Store::Embedded).await;
    let events = "twofold_embedded_store_events";
    let bytes = "twofold_embedded_store_bytes";
    let before = scrape(&app).await;
    let (events_before, bytes_before) = (
        sample(&before, events, &[]).expect(&before),
        sample(&before, bytes, &[]).expect(&before),
    );

    // Three sign-ups without 2FA: one `SignedUp` event each.
    for n in 0..3 {
        let email = unique_email(&format!("metrics-store-{n}"));
        let response = app.signup(&signup_body(&email, None)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let after = scrape(&app).await;
    assert_eq!(sample(&after, events, &[]), Some(events_before + 3.0));
    // Each event is counted by its serialized size: a `SignedUp` carries a sealed address and
    // name and an Argon2 hash, so a few hundred bytes, and nothing near a whole kilobyte of
    // overhead per event.
    let grown = sample(&after, bytes, &[]).unwrap() - bytes_before;
    assert!((3.0 * 200.0..3.0 * 4000.0).contains(&grown), "{grown}");

    // A failed login records one more event, and the bytes grow with it.
    let email = unique_email("metrics-store-login");
    app.signup(&signup_body(&email, None)).await;
    let before_login = scrape(&app).await;
    let wrong = app.login(&email, "not the password at all").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let after_login = scrape(&app).await;
    assert_eq!(
        sample(&after_login, events, &[]),
        Some(sample(&before_login, events, &[]).unwrap() + 1.0)
    );
    assert!(sample(&after_login, bytes, &[]) > sample(&before_login, bytes, &[]));

    let postgres = spawn_app(Store::Postgres).await;
    let email = unique_email("metrics-store-pg");
    postgres.signup(&signup_body(&email, None)).await;
    let page = scrape(&postgres).await;
    assert!(
        !page.contains("twofold_embedded_store"),
        "the Postgres mode holds no events in memory: {page}"
    );
}
