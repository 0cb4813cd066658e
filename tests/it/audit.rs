//! Reading the log back: a user's own history, over HTTP, on both stores.

use reqwest::StatusCode;
use serde_json::Value;

use twofold_api::operator::audit_verify;
use twofold_projections::chain::{Tampering, Verification};

use crate::helpers::{current_code, problem, spawn_app, unique_email, Store, TestApp, PASSWORD};

/// The caller's history, one page.
async fn history(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app
        .get_with(&format!("/users/me/history{query}"), token)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn types(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Signs up with an authenticator app, fails the password once and the code once, logs in,
/// and returns the access token.
async fn a_short_security_story(app: &TestApp, email: &str) -> String {
    let seed = app.signup_with_authenticator(email).await;
    let wrong = app.login(email, "not the password at all").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let pre = app.login_token(email, StatusCode::ACCEPTED).await;
    let wrong_code = app.post_with("/tfa/login_tfa?tfa_token=000000", &pre).await;
    assert_eq!(wrong_code.status(), StatusCode::FORBIDDEN);
    let done = app
        .post_with(
            &format!("/tfa/login_tfa?tfa_token={}", current_code(&seed)),
            &pre,
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let tokens: Value = done.json().await.unwrap();
    tokens["access_token"].as_str().unwrap().to_owned()
}

async fn the_history_tells_the_story_newest_first_without_secrets(store: Store) {
    let app = spawn_app(store).await;
    let email = unique_email("history");
    let access = a_short_security_story(&app, &email).await;

    let page = history(&app, &access, "").await;
    assert_eq!(
        types(&page),
        [
            "session_started",
            "login_succeeded",
            "login_failed",
            "password_accepted",
            "login_failed",
            "tfa_enabled",
            "signed_up",
        ]
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries[1]["factor"], "totp");
    assert_eq!(entries[2]["factor"], "totp");
    assert_eq!(entries[4]["factor"], "password");
    assert_eq!(entries[5]["device_type"], "code_generator");
    // The second step is taken with the pre-2FA token, so by the user; the rest by someone
    // not signed in. Both are the user's own requests, with their address.
    let by: Vec<&str> = entries
        .iter()
        .map(|entry| entry["by"].as_str().unwrap())
        .collect();
    assert_eq!(
        by,
        [
            "self",
            "self",
            "self",
            "anonymous",
            "anonymous",
            "anonymous",
            "anonymous"
        ]
    );
    for entry in entries {
        assert_eq!(entry["ip_address"], "127.0.0.1", "{entry}");
        assert!(entry["at"].as_str().unwrap().ends_with('Z'), "{entry}");
    }
    let text = page.to_string();
    for secret in [
        "challenge",
        "digest",
        "seed",
        "refresh",
        "password_hash",
        "$argon2",
    ] {
        assert!(
            !text.contains(secret),
            "the history shows `{secret}`: {text}"
        );
    }

    // Paging: two at a time, every entry once, in the same order.
    let mut paged = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let page = history(&app, &access, &query).await;
        let got = types(&page);
        assert!(got.len() <= 2);
        paged.extend(got);
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(paged, types(&history(&app, &access, "").await));
}

#[tokio::test]
async fn the_history_tells_the_story_newest_first_without_secrets_on_postgres() {
    the_history_tells_the_story_newest_first_without_secrets(Store::Postgres).await;
}

#[tokio::test]
async fn the_history_tells_the_story_newest_first_without_secrets_embedded() {
    the_history_tells_the_story_newest_first_without_secrets(Store::Embedded).await;
}

#[tokio::test]
async fn an_admins_action_shows_as_the_admins_without_the_admins_request() {
    let app = spawn_app(Store::Postgres).await;
    let admin = unique_email("history-admin");
    let user = unique_email("history-user");
    app.signup(&crate::helpers::signup_body(&admin, None)).await;
    app.signup(&crate::helpers::signup_body(&user, None)).await;
    twofold_api::operator::grant_admin(&app.config, &admin)
        .await
        .unwrap();
    let admin_token = app.login_token(&admin, StatusCode::OK).await;
    let user_token = app.login_token(&user, StatusCode::OK).await;
    let me: Value = app
        .get_with("/auth/test-token", &user_token)
        .await
        .json()
        .await
        .unwrap();
    let user_id = me["id"].as_str().unwrap();
    let locked = app
        .http
        .post(app.url(&format!("/users/{user_id}/lock")))
        .bearer_auth(&admin_token)
        .header("user-agent", "admin-console/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(locked.status(), StatusCode::NO_CONTENT);
    app.post_with(&format!("/users/{user_id}/unlock"), &admin_token)
        .await;
    // Locking ended the session of `user_token`, and its access token with it.
    let (status, _) = problem(app.get_with("/users/me/history", &user_token).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let user_token = app.login_token(&user, StatusCode::OK).await;
    let page = history(&app, &user_token, "").await;
    let entries = page["entries"].as_array().unwrap();
    let by_admin: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["by"] == "admin")
        .collect();
    let kinds: Vec<&str> = by_admin
        .iter()
        .map(|entry| entry["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["account_unlocked", "session_ended", "account_locked"]
    );
    assert_eq!(by_admin[1]["reason"], "ended_by_admin");
    for entry in by_admin {
        assert!(entry.get("ip_address").is_none(), "{entry}");
        assert!(entry.get("user_agent").is_none(), "{entry}");
    }
    assert!(!page.to_string().contains("admin-console"));
}

#[tokio::test]
async fn a_cursor_or_limit_the_service_did_not_give_is_refused() {
    let app = spawn_app(Store::Embedded).await;
    let email = unique_email("history-bad");
    app.signup(&crate::helpers::signup_body(&email, None)).await;
    let token = app.login_token(&email, StatusCode::OK).await;
    for query in [
        "?limit=0",
        "?limit=201",
        "?cursor=not-a-cursor",
        "?cursor=YWJj",
    ] {
        let response = app
            .get_with(&format!("/users/me/history{query}"), &token)
            .await;
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_eq!(body["code"], "request.invalid_query", "{query}");
    }
}

/// Signs `email` up and logs in twice: five events (signed up; logged in and a session,
/// twice). Returns the user id.
async fn five_events(app: &TestApp, label: &str) -> String {
    let email = unique_email(label);
    app.signup(&crate::helpers::signup_body(&email, None)).await;
    app.login_token(&email, StatusCode::OK).await;
    let token = app.login_token(&email, StatusCode::OK).await;
    let me: Value = app
        .get_with("/auth/test-token", &token)
        .await
        .json()
        .await
        .unwrap();
    me["id"].as_str().unwrap().to_owned()
}

fn findings(verification: &Verification) -> Vec<(String, u64, Tampering)> {
    let mut found: Vec<_> = verification
        .findings
        .iter()
        .map(|finding| {
            (
                finding.aggregate_id.clone(),
                finding.sequence,
                finding.problem.clone(),
            )
        })
        .collect();
    found.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    found
}

#[tokio::test]
async fn verify_passes_an_honest_log_and_names_each_tampering_by_user_and_sequence() {
    let app = spawn_app(Store::Postgres).await;
    let edited = five_events(&app, "chain-edited").await;
    let deleted = five_events(&app, "chain-deleted").await;
    let swapped = five_events(&app, "chain-swapped").await;
    let truncated = five_events(&app, "chain-truncated").await;
    let untouched = five_events(&app, "chain-untouched").await;

    let honest = audit_verify(&app.config, None).await.unwrap();
    assert_eq!(findings(&honest), []);
    assert_eq!((honest.users, honest.events), (5, 25));
    let head = honest.head.clone();
    assert_eq!(head.users[&untouched].0, 5);

    let db = app.db.as_ref().unwrap();
    let sql = |statement: &'static str, user: &str| {
        let user = user.to_owned();
        async move {
            sqlx::query(statement).bind(user).execute(db).await.unwrap();
        }
    };
    sql(
        r#"UPDATE events SET payload = '{"LoggedIn":{"at":"2020-01-01T00:00:00Z"}}'
           WHERE aggregate_id = $1 AND sequence = 2"#,
        &edited,
    )
    .await;
    sql(
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence = 3",
        &deleted,
    )
    .await;
    // Swap 2 and 3 through a free number: the primary key holds at every step.
    sql(
        "UPDATE events SET sequence = 1000 WHERE aggregate_id = $1 AND sequence = 2",
        &swapped,
    )
    .await;
    sql(
        "UPDATE events SET sequence = 2 WHERE aggregate_id = $1 AND sequence = 3",
        &swapped,
    )
    .await;
    sql(
        "UPDATE events SET sequence = 3 WHERE aggregate_id = $1 AND sequence = 1000",
        &swapped,
    )
    .await;
    sql(
        "DELETE FROM events WHERE aggregate_id = $1 AND sequence > 3",
        &truncated,
    )
    .await;

    let without_head = audit_verify(&app.config, None).await.unwrap();
    let mut expected = vec![
        (edited.clone(), 2, Tampering::Edited),
        (deleted.clone(), 3, Tampering::Deleted),
        (swapped.clone(), 2, Tampering::Reordered { written_at: 3 }),
        (swapped.clone(), 3, Tampering::Reordered { written_at: 2 }),
    ];
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(findings(&without_head), expected);

    let with_head = audit_verify(&app.config, Some(&head)).await.unwrap();
    expected.push((
        truncated.clone(),
        5,
        Tampering::Truncated { head_sequence: 5 },
    ));
    expected.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(findings(&with_head), expected);
}

/// A command chains its events to the head its load read; one that lost a race to another
/// commit loads the new head. Logins racing on one user, past a snapshot (whose own event
/// the load reads the head from), leave a chain that verifies.
#[tokio::test]
async fn logins_racing_past_a_snapshot_leave_a_chain_that_verifies() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("chain-race");
    app.signup(&crate::helpers::signup_body(&email, None)).await;
    // Two events a login: past several snapshots, the last of them kept by a login before the
    // race.
    for _ in 0..17 {
        app.login_token(&email, StatusCode::OK).await;
    }
    let racing = (0..12).map(|_| app.login(&email, PASSWORD));
    let answers = futures::future::join_all(racing).await;
    let logged_in = answers
        .iter()
        .filter(|answer| answer.status() == StatusCode::OK)
        .count();
    assert!(logged_in > 0, "no racing login succeeded");

    let verified = audit_verify(&app.config, None).await.unwrap();
    assert_eq!(findings(&verified), []);
    assert_eq!(verified.users, 1);
    assert_eq!(verified.events, 1 + 2 * (17 + logged_in as u64));
}

#[tokio::test]
async fn events_stored_before_the_chain_are_chained_once_at_the_next_start() {
    let app = spawn_app(Store::Postgres).await;
    let user = five_events(&app, "chain-legacy").await;
    let db = app.db.as_ref().unwrap();
    // As a database from before the chain: no digests, no marker.
    sqlx::query(
        "UPDATE events SET content_digest = NULL, chain_digest = NULL, chain_key_id = NULL",
    )
    .execute(db)
    .await
    .unwrap();
    sqlx::query("DELETE FROM event_chain_started")
        .execute(db)
        .await
        .unwrap();
    let before = audit_verify(&app.config, None).await.unwrap();
    assert_eq!(
        before.findings.len(),
        5,
        "every event is reported unchained"
    );

    // The next start chains them, and the user's next events continue the chain.
    let restarted = app.another_instance().await;
    let token = restarted
        .login_token(&user_email(&restarted, &user).await, StatusCode::OK)
        .await;
    assert!(!token.is_empty());
    let after = audit_verify(&app.config, None).await.unwrap();
    assert_eq!(findings(&after), []);
    assert_eq!(after.events, 7);

    // Only once: an event stripped of its digests later is reported, not adopted.
    sqlx::query("UPDATE events SET content_digest = NULL, chain_digest = NULL WHERE sequence = 7")
        .execute(db)
        .await
        .unwrap();
    let again = app.another_instance().await;
    drop(again);
    let stripped = audit_verify(&app.config, None).await.unwrap();
    assert_eq!(findings(&stripped), [(user, 7, Tampering::Unchained)]);
}

/// The email of user `id`, from the admin-free way tests have: the user view (the sign-up
/// event holds it sealed).
async fn user_email(app: &TestApp, id: &str) -> String {
    let payload: Value = sqlx::query_scalar("SELECT payload FROM user_view WHERE view_id = $1")
        .bind(id)
        .fetch_one(app.db.as_ref().unwrap())
        .await
        .unwrap();
    payload["email"].as_str().unwrap().to_owned()
}

/// An admin's token and a user (signed up without 2FA, then 2FA on by email), with the time
/// between the two steps.
struct Audited {
    admin_token: String,
    admin_id: String,
    user_id: String,
    user_email: String,
    user_token: String,
    before_tfa: String,
}

async fn an_admin_and_a_user(app: &TestApp) -> Audited {
    let admin = unique_email("audit-admin");
    let user = unique_email("audit-user");
    app.signup(&crate::helpers::signup_body(&admin, None)).await;
    app.signup(&crate::helpers::signup_body(&user, None)).await;
    twofold_api::operator::grant_admin(&app.config, &admin)
        .await
        .unwrap();
    let admin_token = app.login_token(&admin, StatusCode::OK).await;
    let user_token = app.login_token(&user, StatusCode::OK).await;
    let id_of = |token: String| async move {
        let me: Value = app
            .get_with("/auth/test-token", &token)
            .await
            .json()
            .await
            .unwrap();
        me["id"].as_str().unwrap().to_owned()
    };
    let admin_id = id_of(admin_token.clone()).await;
    let user_id = id_of(user_token.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before_tfa = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let enabled = app.enable_tfa(&user_token, "email").await;
    assert_eq!(enabled.status(), StatusCode::OK);
    Audited {
        admin_token,
        admin_id,
        user_id,
        user_email: user,
        user_token,
        before_tfa,
    }
}

async fn events_of(app: &TestApp, who: &Audited, query: &str) -> Vec<Value> {
    let response = app
        .http
        .get(app.url(&format!("/users/{}/events{query}", who.user_id)))
        .bearer_auth(&who.admin_token)
        .header("x-request-id", "audit-read-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn an_admin_reads_a_users_events_with_their_metadata_and_no_secret() {
    let app = spawn_app(Store::Postgres).await;
    let who = an_admin_and_a_user(&app).await;

    let events = events_of(&app, &who, "").await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "SignedUp",
            "LoggedIn",
            "SessionStarted",
            "TfaEnabled",
            "AuditTrailRead"
        ]
    );
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["sequence"], index + 1);
        assert_eq!(event["user_id"], who.user_id.as_str());
        assert_eq!(event["version"], "2.0");
        assert!(event["position"].as_str().unwrap().contains('.'));
        assert!(event["recorded_at"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(events[0]["metadata"]["actor"], "anonymous");
    assert_eq!(events[0]["metadata"]["ip"], "127.0.0.1");
    assert_eq!(
        events[3]["metadata"]["actor"],
        format!("user:{}", who.user_id)
    );
    assert_eq!(
        events[0]["payload"]["SignedUp"]["password_hash"],
        "[redacted]"
    );
    assert_eq!(
        events[3]["payload"]["TfaEnabled"]["backup_codes"][0]["digest"],
        "[redacted]"
    );
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains("$argon2"), "{text}");
    // The read itself is the last event: this admin, this request.
    let read = &events[4];
    assert_eq!(read["payload"]["AuditTrailRead"]["scope"], "events");
    assert_eq!(read["metadata"]["actor"], format!("admin:{}", who.admin_id));
    assert_eq!(read["metadata"]["request_id"], "audit-read-1");

    // Paging by sequence; each read is recorded again.
    let page = events_of(&app, &who, "?after=2&limit=2").await;
    let sequences: Vec<u64> = page
        .iter()
        .map(|event| event["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [3, 4]);

    // The user sees that an admin read their trail, not who.
    let history: Value = app
        .get_with("/users/me/history?limit=1", &who.user_token)
        .await
        .json()
        .await
        .unwrap();
    let newest = &history["entries"][0];
    assert_eq!(newest["type"], "audit_trail_read");
    assert_eq!(newest["by"], "admin");
    assert_eq!(newest["scope"], "events");

    // Only admins, and only users that exist.
    let refused = app
        .get_with(&format!("/users/{}/events", who.user_id), &who.user_token)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let nobody = app
        .get_with(
            "/users/00000000-0000-4000-8000-000000000000/events",
            &who.admin_token,
        )
        .await;
    let (status, body) = problem(nobody).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "user.not_found");
}

#[tokio::test]
async fn an_admin_sees_a_user_as_they_were_at_an_instant() {
    let app = spawn_app(Store::Postgres).await;
    let who = an_admin_and_a_user(&app).await;
    let at = |instant: &str| {
        let path = format!(
            "/users/{}?as_of={}",
            who.user_id,
            url::form_urlencoded::byte_serialize(instant.as_bytes()).collect::<String>()
        );
        let app = &app;
        let token = who.admin_token.clone();
        async move { app.get_with(&path, &token).await }
    };

    let then: Value = at(&who.before_tfa).await.json().await.unwrap();
    assert_eq!(then["email"], who.user_email.as_str());
    assert_eq!(then["tfa_enabled"], false);
    assert_eq!(then["device"], Value::Null);

    let now: Value = at("2999-01-01T00:00:00Z").await.json().await.unwrap();
    assert_eq!(now["tfa_enabled"], true);
    assert_eq!(now["device"]["device_type"], "email");

    let before_sign_up = at("2000-01-01T00:00:00Z").await;
    let (status, body) = problem(before_sign_up).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "user.not_found");

    let current: Value = app
        .get_with(&format!("/users/{}", who.user_id), &who.admin_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(current, now);

    let bad = at("yesterday").await;
    assert_eq!(problem(bad).await.0, StatusCode::UNPROCESSABLE_ENTITY);

    // Each read with as_of is on the record.
    let events = events_of(&app, &who, "").await;
    let scopes: Vec<&str> = events
        .iter()
        .filter_map(|event| event["payload"]["AuditTrailRead"]["scope"].as_str())
        .collect();
    assert_eq!(
        scopes,
        ["state_as_of", "state_as_of", "state_as_of", "events"]
    );
}

#[tokio::test]
async fn the_export_gives_every_event_once_in_log_order_and_resumes_after_a_position() {
    let app = spawn_app(Store::Postgres).await;
    let who = an_admin_and_a_user(&app).await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.db.as_ref().unwrap())
        .await
        .unwrap();
    // The log gives an event once no transaction on the server can still commit before it;
    // other tests keep transactions open on the same server, so wait for the horizon.
    let mut all = Vec::new();
    for _ in 0..100 {
        all.clear();
        let count = twofold_api::operator::audit_export(
            &app.config,
            twofold_projections::log::Checkpoint::ORIGIN,
            None,
            |event| {
                all.push(event);
                Ok(())
            },
        )
        .await
        .unwrap();
        assert_eq!(count as usize, all.len());
        if all.len() as i64 == stored {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(all.len() as i64, stored);
    // Each user's events in sequence order, and every line carries no secret.
    let mine: Vec<u64> = all
        .iter()
        .filter(|event| event.user_id == who.user_id)
        .map(|event| event.sequence)
        .collect();
    assert_eq!(mine, [1, 2, 3, 4]);
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("$argon2"));

    // Resuming after the third event gives exactly the rest.
    let after: twofold_projections::log::Checkpoint = all[2].position.parse().unwrap();
    let mut rest = Vec::new();
    twofold_api::operator::audit_export(&app.config, after, None, |event| {
        rest.push(event.position);
        Ok(())
    })
    .await
    .unwrap();
    let expected: Vec<String> = all[3..]
        .iter()
        .map(|event| event.position.clone())
        .collect();
    assert_eq!(rest, expected);

    // --until stops at the instant.
    let until = time::OffsetDateTime::parse(
        &who.before_tfa,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let mut early = Vec::new();
    twofold_api::operator::audit_export(
        &app.config,
        twofold_projections::log::Checkpoint::ORIGIN,
        Some(until),
        |event| {
            early.push(event.event_type);
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(!early.contains(&"TfaEnabled".to_owned()));
    assert_eq!(early.len(), all.len() - 1);
}

#[tokio::test]
async fn the_timeline_on_the_command_line_is_recorded_as_an_operators_read() {
    let app = spawn_app(Store::Postgres).await;
    let who = an_admin_and_a_user(&app).await;
    let by_email = twofold_api::operator::audit_history(&app.config, &who.user_email, None)
        .await
        .unwrap();
    let by_id = twofold_api::operator::audit_history(&app.config, &who.user_id, None)
        .await
        .unwrap();
    assert_eq!(by_email.len(), 5);
    assert_eq!(by_id.len(), 6);
    assert_eq!(by_id[4].event_type, "AuditTrailRead");
    assert_eq!(by_id[4].metadata.actor, "cli");
    assert_eq!(by_id[4].payload["AuditTrailRead"]["scope"], "timeline");
    let until = time::OffsetDateTime::parse(
        &who.before_tfa,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let then = twofold_api::operator::audit_history(&app.config, &who.user_id, Some(until))
        .await
        .unwrap();
    assert_eq!(then.len(), 3);
    let unknown =
        twofold_api::operator::audit_history(&app.config, "nobody@example.com", None).await;
    assert!(unknown.is_err());
}
