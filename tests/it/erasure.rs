//! Erasure (crypto-shredding): an erased user's personal data is unreadable everywhere the
//! service keeps data, while their events stay, in order, replayable and verifiable.

use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use twofold_api::operator::{audit_export, audit_verify, erase_user, grant_admin, rebuild_views};
use twofold_projections::log::Checkpoint;
use uuid::Uuid;

use crate::helpers::{current_code, otpauth_uri_from_png, seed_from_uri};
use crate::helpers::{
    default_nats_url, fresh_database, problem, signup_body, spawn_app, spawn_app_with, test_config,
    unique_email, Store, TestApp, LOGS, PASSWORD,
};
use crate::nats_server::NatsServer;
use crate::password::reset_token;
use crate::stored_events::store_from_before_the_upgrade;

const NEW_PASSWORD: &str = "an entirely new passphrase";

/// A person with data distinctive enough to be searched for.
struct Person {
    email: String,
    full_name: String,
    ip: String,
    user_agent: String,
}

impl Person {
    fn new() -> Self {
        let tag = Uuid::new_v4().simple().to_string();
        Self {
            email: format!("zelda.{tag}@erasure.example"),
            full_name: format!("Zelda Quixfernsby {}", &tag[..8]),
            ip: "198.51.100.77".to_owned(),
            user_agent: format!("ErasureProbe/{}", &tag[..12]),
        }
    }

    /// What must not be readable anywhere once they are erased.
    fn traces(&self) -> [&str; 4] {
        [&self.email, &self.full_name, &self.ip, &self.user_agent]
    }
}

/// The `UserErased` event among `events` (a user's, as `GET /users/{id}/events` lists them).
fn erasure_of(events: &Value) -> &Value {
    events
        .as_array()
        .unwrap()
        .iter()
        .find(|event| event["type"] == "UserErased")
        .expect("a UserErased event")
}

async fn sign_up(app: &TestApp, person: &Person) -> StatusCode {
    let mut body = signup_body(&person.email, None);
    body["full_name"] = json!(person.full_name);
    app.http
        .post(app.url("/auth/signup"))
        .header("x-forwarded-for", &person.ip)
        .header("user-agent", &person.user_agent)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn log_in(app: &TestApp, person: &Person) -> reqwest::Response {
    log_in_with(app, person, PASSWORD).await
}

async fn log_in_with(app: &TestApp, person: &Person, password: &str) -> reqwest::Response {
    app.http
        .post(app.url("/auth/login"))
        .header("x-forwarded-for", &person.ip)
        .header("user-agent", &person.user_agent)
        .form(&[("username", person.email.as_str()), ("password", password)])
        .send()
        .await
        .unwrap()
}

async fn access_token(app: &TestApp, person: &Person) -> String {
    let response = log_in(app, person).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

async fn user_id(app: &TestApp, token: &str) -> String {
    let me: Value = app
        .get_with("/auth/test-token", token)
        .await
        .json()
        .await
        .unwrap();
    me["id"].as_str().unwrap().to_owned()
}

async fn admin_token(app: &TestApp) -> String {
    let admin = unique_email("erasure-admin");
    app.signup(&signup_body(&admin, None)).await;
    grant_admin(&app.config, &admin).await.unwrap();
    app.login_token(&admin, StatusCode::OK).await
}

/// `DELETE /api/v1{path}` with `token`.
async fn delete_user(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.http
        .delete(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn erase_me(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.http
        .delete(app.url("/users/me"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Everything Postgres holds, as `pg_dump` writes it.
fn pg_dump(app: &TestApp) -> String {
    let output = std::process::Command::new("pg_dump")
        .arg("--no-owner")
        .arg(app.config.database.url.as_ref().unwrap().expose_secret())
        .output()
        .expect("pg_dump runs");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The bytes of every file under `dir`, one after the other.
fn files_under(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            bytes.extend(files_under(&path));
        } else if let Ok(content) = std::fs::read(&path) {
            bytes.extend(content);
        }
    }
    bytes
}

fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

#[tokio::test]
async fn an_erased_user_leaves_nothing_readable_and_the_log_stays_whole() {
    // A NATS server of its own, whose JetStream files the test can search.
    let mut nats = NatsServer::start().await;
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(nats.url()),
    );
    config.http.trusted_proxies = "127.0.0.1".to_owned();
    let mut app = spawn_app_with(config).await;
    app.start_mailer();
    let admin = admin_token(&app).await;
    let person = Person::new();

    assert_eq!(sign_up(&app, &person).await, StatusCode::OK);
    let _other_session = access_token(&app, &person).await;
    let first = access_token(&app, &person).await;
    let id = user_id(&app, &first).await;
    // An authenticator app as second factor; the backup codes are emailed.
    let png = app
        .enable_tfa(&first, "code_generator")
        .await
        .bytes()
        .await
        .unwrap();
    let seed = seed_from_uri(&otpauth_uri_from_png(&png));
    let backup_codes = app.backup_codes(&person.email).await;
    // A password reset by emailed token (it ends every session), then a login with both
    // factors. The emails go through the outbox, the stream and the mailer, and land in the
    // mail folder, which stands for the mail server: outside what erasure can reach.
    let forgot = app
        .http
        .post(app.url("/auth/forgot-password"))
        .header("x-forwarded-for", &person.ip)
        .header("user-agent", &person.user_agent)
        .json(&json!({"email": person.email}))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);
    let reset_token = reset_token(
        &app.wait_for_email(&person.email, "Reset your Twofold password")
            .await,
    );
    let reset = app
        .http
        .post(app.url("/auth/reset-password"))
        .header("x-forwarded-for", &person.ip)
        .header("user-agent", &person.user_agent)
        .json(&json!({"email": person.email, "token": reset_token, "new_password": NEW_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    let challenge = log_in_with(&app, &person, NEW_PASSWORD).await;
    assert_eq!(challenge.status(), StatusCode::ACCEPTED);
    let pre: Value = challenge.json().await.unwrap();
    let verified = app
        .http
        .post(app.url(&format!("/tfa/login_tfa?tfa_token={}", current_code(&seed))))
        .bearer_auth(pre["access_token"].as_str().unwrap())
        .header("x-forwarded-for", &person.ip)
        .header("user-agent", &person.user_agent)
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);
    let tokens: Value = verified.json().await.unwrap();
    let token = tokens["access_token"].as_str().unwrap().to_owned();
    // A later job waits in the stream (no mailer runs), so the stream's files hold a block
    // beside where the person's jobs were.
    app.stop_mailer();
    let bystander = unique_email("erasure-bystander");
    app.signup(&signup_body(&bystander, None)).await;
    app.http
        .post(app.url("/auth/forgot-password"))
        .json(&json!({"email": bystander}))
        .send()
        .await
        .unwrap();
    let db = app.db.clone().unwrap();
    for _ in 0..100 {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox")
            .fetch_one(&db)
            .await
            .unwrap();
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let wrong = erase_me(
        &app,
        &token,
        &json!({"password": "not the password", "code": backup_codes[0]}),
    )
    .await;
    assert_eq!(problem(wrong).await.1["code"], "auth.wrong_password");
    let erased = erase_me(
        &app,
        &token,
        &json!({"password": NEW_PASSWORD, "code": backup_codes[1]}),
    )
    .await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);

    // Every session ended: the access token handed out before is dead at once.
    let old = app.get_with("/auth/test-token", &token).await;
    assert_eq!(old.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        log_in(&app, &person).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let listing: Value = app
        .get_with("/users/users?per_page=500", &admin)
        .await
        .json()
        .await
        .unwrap();
    assert!(listing
        .as_array()
        .unwrap_or_else(|| panic!("{listing}"))
        .iter()
        .all(|user| user["id"] != id.as_str()));

    // The events stay, in order, with what identified the person read as erased.
    let events: Value = app
        .get_with(&format!("/users/{id}/events"), &admin)
        .await
        .json()
        .await
        .unwrap();
    let erasure = erasure_of(&events).clone();
    let events = events.as_array().unwrap();
    assert_eq!(events.first().unwrap()["type"], "SignedUp");
    assert_eq!(
        events.first().unwrap()["payload"]["SignedUp"]["email"],
        "[erased]"
    );
    assert_eq!(
        events.first().unwrap()["payload"]["SignedUp"]["full_name"],
        "[erased]"
    );
    assert_eq!(erasure["metadata"]["reason"], "self-service");
    // The admin's read of the erased user's events is recorded too, after the erasure.
    assert_eq!(events.last().unwrap()["type"], "AuditTrailRead");
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["sequence"], index + 1);
        for field in ["ip", "user_agent"] {
            let value = &event["metadata"][field];
            assert!(value.is_null() || value == "[erased]", "{event}");
        }
    }

    // The export of the whole log shows them so too (once the log's horizon has passed the
    // erasure: other tests' open transactions can hold it back a moment).
    let mut exported = Vec::new();
    for _ in 0..100 {
        exported.clear();
        audit_export(&app.config, Checkpoint::ORIGIN, None, |event| {
            if event.user_id == id {
                exported.push(serde_json::to_value(event).unwrap());
            }
            Ok(())
        })
        .await
        .unwrap();
        if exported.iter().any(|event| event["type"] == "UserErased") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(exported[0]["payload"]["SignedUp"]["email"], "[erased]");
    assert!(exported.iter().any(|event| event["type"] == "UserErased"));

    // As of an instant before the erasure, the account shows with the person's data erased.
    let before_erasure =
        url::form_urlencoded::byte_serialize(events[0]["recorded_at"].as_str().unwrap().as_bytes())
            .collect::<String>();
    let then: Value = app
        .get_with(&format!("/users/{id}?as_of={before_erasure}"), &admin)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(then["id"], id.as_str());
    assert_eq!(then["email"], "[erased]");
    assert_eq!(then["full_name"], "[erased]");

    // Nothing of the person can be read in the database, the JetStream files (the mail job
    // was erased from the stream once sent) or the logs.
    let dump = pg_dump(&app);
    app.stop_mailer();
    nats.shut_down();
    let jetstream = files_under(nats.store_dir());
    let found = |text: &str| {
        jetstream
            .windows(text.len())
            .any(|window| window == text.as_bytes())
    };
    assert!(found(&bystander), "the files hold the job still waiting");
    let logs = captured_logs();
    for trace in person.traces() {
        assert!(!dump.contains(trace), "{trace} is in the database");
        assert!(!found(trace), "{trace} is in the JetStream files");
        assert!(!logs.contains(trace), "{trace} is in the logs");
    }

    // The log is whole: the views rebuild to what they are, and the chain holds.
    let report = rebuild_views(&app.config, false).await.unwrap();
    assert_eq!(report.differences, []);
    let verification = audit_verify(&app.config, None).await.unwrap();
    assert!(verification.findings.is_empty(), "{verification:?}");

    // The address is free for a new account, which is someone else.
    assert_eq!(sign_up(&app, &person).await, StatusCode::OK);
    let again = access_token(&app, &person).await;
    assert_ne!(user_id(&app, &again).await, id);
}

#[tokio::test]
async fn with_two_factor_on_erasing_oneself_needs_a_current_code() {
    let app = spawn_app(Store::Embedded).await;
    let email = unique_email("erase-tfa");
    let seed = app.signup_with_authenticator(&email).await;
    let challenge: Value = app.login_expecting(&email, StatusCode::ACCEPTED).await;
    let pre = challenge["access_token"].as_str().unwrap();
    let verified: Value = app
        .http
        .post(app.url(&format!(
            "/tfa/login_tfa?tfa_token={}",
            crate::helpers::current_code(&seed)
        )))
        .bearer_auth(pre)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = verified["access_token"].as_str().unwrap().to_owned();

    let without = erase_me(&app, &token, &json!({"password": PASSWORD})).await;
    let (status, body) = problem(without).await;
    assert_eq!(
        (status, &body["code"]),
        (StatusCode::BAD_REQUEST, &json!("tfa.code_required"))
    );
    let wrong = erase_me(
        &app,
        &token,
        &json!({"password": PASSWORD, "code": "000000"}),
    )
    .await;
    assert_eq!(problem(wrong).await.1["code"], "tfa.invalid_code");
    assert_eq!(
        app.get_with("/auth/test-token", &token).await.status(),
        StatusCode::OK,
        "a refused erasure erases nothing"
    );
    let backup = app.backup_codes(&email).await;
    let erased = erase_me(
        &app,
        &token,
        &json!({"password": PASSWORD, "code": backup[0]}),
    )
    .await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_with("/auth/test-token", &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The address is free again, in the embedded store too.
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_erased_user_is_neither_served_nor_listed_to_admins_in_either_store() {
    for store in [Store::Embedded, Store::Postgres] {
        let admin = unique_email("erasure-admin");
        let (database, nats) = match store {
            Store::Postgres => (Some(fresh_database().await), Some(default_nats_url())),
            Store::Embedded => (None, None),
        };
        let mut config = test_config(store, database, nats);
        config.accounts.admin_emails = vec![admin.clone()];
        let app = spawn_app_with(config).await;
        app.signup(&signup_body(&admin, None)).await;
        let admin = app.login_token(&admin, StatusCode::OK).await;
        let person = unique_email("erased-and-gone");
        app.signup(&signup_body(&person, None)).await;
        let token = app.login_token(&person, StatusCode::OK).await;
        let id = user_id(&app, &token).await;

        let erased = delete_user(&app, &format!("/users/{id}"), &admin).await;

        assert_eq!(erased.status(), StatusCode::NO_CONTENT, "{store:?}");
        let read = app.get_with(&format!("/users/{id}"), &admin).await;
        assert_eq!(problem(read).await.0, StatusCode::NOT_FOUND, "{store:?}");
        let listing: Value = app
            .get_with("/users/users?per_page=500", &admin)
            .await
            .json()
            .await
            .unwrap();
        let listing = listing.as_array().unwrap();
        assert_eq!(
            listing.len(),
            1,
            "{store:?}: only the admin is left: {listing:?}"
        );
        assert!(
            listing.iter().all(|user| user["id"].is_string()),
            "{store:?}"
        );
    }
}

#[tokio::test]
async fn an_admin_and_an_operator_erase_users_with_a_reason() {
    let app = spawn_app(Store::Postgres).await;
    let admin = admin_token(&app).await;
    let first = unique_email("erased-by-admin");
    let second = unique_email("erased-by-cli");
    app.signup(&signup_body(&first, None)).await;
    app.signup(&signup_body(&second, None)).await;
    let first_token = app.login_token(&first, StatusCode::OK).await;
    let first_id = user_id(&app, &first_token).await;

    let too_long = delete_user(
        &app,
        &format!("/users/{first_id}?reason={}", "x".repeat(201)),
        &admin,
    )
    .await;
    assert_eq!(too_long.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let by_user = delete_user(&app, &format!("/users/{first_id}"), &first_token).await;
    assert_eq!(by_user.status(), StatusCode::FORBIDDEN);
    let erased = delete_user(
        &app,
        &format!("/users/{first_id}?reason=ticket%204711"),
        &admin,
    )
    .await;
    assert_eq!(erased.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_with("/auth/test-token", &first_token)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    let again = delete_user(&app, &format!("/users/{first_id}"), &admin).await;
    assert_eq!(problem(again).await.0, StatusCode::NOT_FOUND);

    let second_id = erase_user(&app.config, &second, Some("data-protection request"))
        .await
        .unwrap();
    assert!(
        erase_user(&app.config, &second, None).await.is_err(),
        "gone"
    );
    for (id, actor, reason) in [
        (first_id.clone(), "admin:", "ticket 4711"),
        (second_id.to_string(), "cli", "data-protection request"),
    ] {
        let events: Value = app
            .get_with(&format!("/users/{id}/events"), &admin)
            .await
            .json()
            .await
            .unwrap();
        let erasure = erasure_of(&events);
        assert!(erasure["metadata"]["actor"]
            .as_str()
            .unwrap()
            .starts_with(actor));
        assert_eq!(erasure["metadata"]["reason"], reason);
    }
}

#[tokio::test]
async fn an_account_from_before_per_user_keys_is_sealed_at_the_next_start_and_erased_without_trace()
{
    let app = spawn_app(Store::Postgres).await;
    let db = app.db.as_ref().unwrap();
    let alan = store_from_before_the_upgrade(db, "alan@example.com").await;
    // As a database from before per-user keys: the one-time sealing has not run.
    sqlx::query("DELETE FROM personal_data_sealed")
        .execute(db)
        .await
        .unwrap();
    let traces = ["alan@example.com", "Alan Turing", "twofold-fixture/1.0"];
    let stored = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT string_agg(event_version || payload::text || metadata::text, ' ') \
             FROM events WHERE aggregate_id = $1",
        )
        .bind(&alan)
        .fetch_one(db)
        .await
        .unwrap()
    };
    assert!(stored().await.contains("alan@example.com"));

    // The next start seals his personal data once, and chains his rewritten events again.
    let restarted = app.another_instance().await;
    let text = stored().await;
    for trace in traces {
        assert!(!text.contains(trace), "{trace} is still in clear");
    }
    let (users, rewritten): (i64, i64) =
        sqlx::query_as("SELECT users, events_rewritten FROM personal_data_sealed")
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!(users, 1);
    assert!(rewritten > 1, "{rewritten}");
    let verification = audit_verify(&app.config, None).await.unwrap();
    assert!(verification.findings.is_empty(), "{verification:?}");
    let again = restarted.another_instance().await;
    drop(again);
    let (markers,): (i64,) = sqlx::query_as("SELECT count(*) FROM personal_data_sealed")
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(markers, 1, "it runs once");

    // He still logs in, and erasing him leaves nothing of him readable.
    let token = restarted
        .login_token("alan@example.com", StatusCode::OK)
        .await;
    let erased = erase_me(&restarted, &token, &json!({"password": PASSWORD})).await;
    let status = erased.status();
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "{}\nwhat the service logged as errors:\n{}",
        erased.text().await.unwrap_or_default(),
        crate::helpers::log_lines_of("ERROR").join("\n")
    );
    let dump = pg_dump(&restarted);
    for trace in traces {
        assert!(!dump.contains(trace), "{trace} is in the database");
    }
    let report = rebuild_views(&app.config, false).await.unwrap();
    assert_eq!(report.differences, []);
    let verification = audit_verify(&app.config, None).await.unwrap();
    assert!(verification.findings.is_empty(), "{verification:?}");
}
