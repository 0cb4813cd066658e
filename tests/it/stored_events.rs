//! The generator of the stored-events fixture (`projections/tests/fixtures/`): a journey
//! through the running service that records every `UserEvent` type, then a dump of the
//! `events` table. It is ignored because the committed fixture must never be regenerated: run
//! it by name only to produce a fixture of a new event version, which is written to
//! `TWOFOLD_EVENTS_FIXTURE_OUT` (default: a file in the system's temporary directory).
//!
//! Personal data is fixed and fake (`@example.com`); the dump is checked to hold no password,
//! seed, code or token in clear.
//!
//! Beside it, a test that the service keeps working on a log written at version 1.0: the
//! fixture's rows, loaded into a fresh database, are read through the upcasters.

use std::collections::BTreeSet;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use twofold_api::adapters::SealingKey;
use twofold_api::config::ExistingEmail;

use crate::helpers::*;
use crate::password::reset_token;

const NEW_PASSWORD: &str = "an entirely new passphrase";
/// Sessions a user keeps at once (`MAX_SESSIONS`, documented in SECURITY.md).
const MAX_SESSIONS: usize = 100;

/// Every event type the fixture must hold.
const EVENT_TYPES: [&str; 24] = [
    "SignedUp",
    "TfaEnabled",
    "LoggedIn",
    "SecondFactorRequired",
    "EmailCodeIssued",
    "LoginFailed",
    "TfaVerified",
    "BackupCodeConsumed",
    "FactorLocked",
    "SessionStarted",
    "SessionRefreshed",
    "SessionEnded",
    "PasswordChanged",
    "PasswordResetRequested",
    "PasswordReset",
    "SecondFactorConfirmed",
    "TfaDisabled",
    "TfaDeviceChanged",
    "BackupCodesRegenerated",
    "AccountLocked",
    "AccountUnlocked",
    "AdminGranted",
    "SignUpAttempted",
    "SeedResealed",
];

/// Every reason a session can end for that a journey with the real clock reaches (`expired`
/// needs a session 30 days old).
const END_REASONS: [&str; 6] = [
    "logged_out",
    "ended_by_user",
    "refresh_token_reused",
    "password_changed",
    "ended_by_admin",
    "session_limit",
];

/// The plaintext secrets seen during the journey; none may be in the dump.
#[derive(Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn add(&mut self, secret: impl Into<String>) {
        self.0.push(secret.into());
    }

    fn seed(&mut self, seed: &[u8]) {
        self.add(totp_rs::Secret::Raw(seed.to_vec()).to_encoded().to_string());
        self.add(base64::engine::general_purpose::STANDARD.encode(seed));
        self.add(seed.iter().map(|b| format!("{b:02x}")).collect::<String>());
    }

    fn backup_codes(&mut self, codes: &[String]) {
        for code in codes {
            self.add(code.clone());
            self.add(code.replace('-', ""));
        }
    }

    fn tokens(&mut self, tokens: &Value) {
        for key in ["access_token", "refresh_token"] {
            if let Some(token) = tokens[key].as_str() {
                self.add(token);
            }
        }
    }
}

fn person(email: &str, full_name: &str, device: Option<&str>) -> Value {
    let mut body = signup_body(email, device);
    body["full_name"] = json!(full_name);
    body
}

fn token(tokens: &Value, key: &str) -> String {
    tokens[key].as_str().unwrap().to_owned()
}

/// The code an authenticator shows `steps` time steps from now.
fn code_in(seed: &[u8], steps: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let at = now.checked_add_signed(steps * 30).unwrap();
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 30, seed.to_vec()).generate(at)
}

async fn refresh(app: &TestApp, refresh_token: &str) -> reqwest::Response {
    app.http
        .post(app.url("/auth/refresh"))
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
}

/// The backup codes of every set mailed to `email`, oldest set not necessarily first.
fn backup_code_sets(app: &TestApp, email: &str) -> Vec<Vec<String>> {
    app.emails_to(email)
        .iter()
        .filter(|text| text.contains("Subject: Your Twofold backup codes"))
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|line| line.len() == 29 && line.split('-').count() == 6)
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

/// Ada: an authenticator app from sign-up; wrong and right TOTP codes, a refresh and its
/// reuse, a wrong and a right backup code, new backup codes proven by TOTP.
async fn ada(app: &TestApp, secrets: &mut Secrets) -> Vec<u8> {
    let email = "ada@example.com";
    let png = app
        .signup(&person(email, "Ada Lovelace", Some("code_generator")))
        .await
        .bytes()
        .await
        .unwrap();
    let seed = seed_from_uri(&otpauth_uri_from_png(&png));
    secrets.seed(&seed);
    let codes = app.backup_codes(email).await;
    secrets.backup_codes(&codes);

    let pre_tfa = app.login_token(email, StatusCode::ACCEPTED).await;
    secrets.add(pre_tfa.clone());
    let right = code_in(&seed, 0);
    let wrong = format!("{:06}", (right.parse::<u32>().unwrap() + 1) % 1_000_000);
    let refused = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={wrong}"), &pre_tfa)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let done = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={right}"), &pre_tfa)
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let tokens: Value = done.json().await.unwrap();
    secrets.tokens(&tokens);

    let rotated = refresh(app, &token(&tokens, "refresh_token")).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    secrets.tokens(&rotated.json().await.unwrap());
    let reused = refresh(app, &token(&tokens, "refresh_token")).await;
    assert_eq!(reused.status(), StatusCode::UNAUTHORIZED);

    let pre_tfa = app.login_token(email, StatusCode::ACCEPTED).await;
    secrets.add(pre_tfa.clone());
    let refused = app
        .post_with("/tfa/recover_tfa?tfa_backup_token=0000-0000-0000", &pre_tfa)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let recovered = app
        .post_with(
            &format!("/tfa/recover_tfa?tfa_backup_token={}", codes[0]),
            &pre_tfa,
        )
        .await;
    assert_eq!(recovered.status(), StatusCode::OK);
    let tokens: Value = recovered.json().await.unwrap();
    secrets.tokens(&tokens);

    // The next step's code: the login above spent this one.
    let regenerated = app
        .http
        .post(app.url("/tfa/backup_codes"))
        .bearer_auth(token(&tokens, "access_token"))
        .json(&json!({ "code": code_in(&seed, 1) }))
        .send()
        .await
        .unwrap();
    assert_eq!(regenerated.status(), StatusCode::NO_CONTENT);
    seed
}

/// Grace: no second factor at sign-up, an email device enabled later, a wrong and a right
/// emailed code, a switch to an authenticator app proven by a backup code, then 2FA turned off
/// proven by TOTP.
async fn grace(app: &TestApp, secrets: &mut Secrets) {
    let email = "grace@example.com";
    let response = app.signup(&person(email, "Grace Hopper", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = app.login_expecting(email, StatusCode::OK).await;
    secrets.tokens(&tokens);
    let enabled = app
        .enable_tfa(&token(&tokens, "access_token"), "email")
        .await;
    assert_eq!(enabled.status(), StatusCode::OK);
    let codes = app.backup_codes(email).await;
    secrets.backup_codes(&codes);

    let pre_tfa = app.login_token(email, StatusCode::ACCEPTED).await;
    secrets.add(pre_tfa.clone());
    let login_code = app.login_codes(email, 1).await.remove(0);
    secrets.add(login_code.clone());
    let wrong = format!(
        "{:06}",
        (login_code.parse::<u32>().unwrap() + 1) % 1_000_000
    );
    let refused = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={wrong}"), &pre_tfa)
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let done = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={login_code}"), &pre_tfa)
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let tokens: Value = done.json().await.unwrap();
    secrets.tokens(&tokens);
    let access = token(&tokens, "access_token");

    let switched = app
        .http
        .put(app.url("/tfa/switch_device"))
        .bearer_auth(&access)
        .json(&json!({ "password": PASSWORD, "code": codes[0], "device_type": "code_generator" }))
        .send()
        .await
        .unwrap();
    assert_eq!(switched.status(), StatusCode::OK);
    let seed = seed_from_uri(&otpauth_uri_from_png(&switched.bytes().await.unwrap()));
    secrets.seed(&seed);
    for _ in 0..200 {
        if backup_code_sets(app, email).len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for set in backup_code_sets(app, email) {
        secrets.backup_codes(&set);
    }

    let disabled = app
        .http
        .post(app.url("/tfa/disable_tfa"))
        .bearer_auth(&access)
        .json(&json!({ "password": PASSWORD, "code": code_in(&seed, 0) }))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), StatusCode::NO_CONTENT);
}

/// Edsger: an admin by the command line. Returns an admin access token.
async fn edsger(app: &TestApp, secrets: &mut Secrets) -> String {
    let email = "edsger@example.com";
    let response = app.signup(&person(email, "Edsger Dijkstra", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens = app.login_expecting(email, StatusCode::OK).await;
    secrets.tokens(&tokens);
    let granted = twofold_api::operator::grant_admin(&app.config, email)
        .await
        .unwrap();
    assert_eq!(granted, twofold_api::app::admin::GrantOutcome::Granted);
    token(&tokens, "access_token")
}

/// Alan: no second factor; sessions ended by the user, by logout, by a password change and a
/// reset, by an admin (a lock, then directly); then five wrong passwords lock the password.
async fn alan(app: &TestApp, admin: &str, secrets: &mut Secrets) {
    let email = "alan@example.com";
    let response = app.signup(&person(email, "Alan Turing", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut logins = Vec::new();
    for _ in 0..3 {
        let tokens = app.login_expecting(email, StatusCode::OK).await;
        secrets.tokens(&tokens);
        logins.push(tokens);
    }
    let access = token(&logins[0], "access_token");
    let me: Value = app
        .get_with("/auth/test-token", &access)
        .await
        .json()
        .await
        .unwrap();
    let alan_id = me["id"].as_str().unwrap().to_owned();
    let rotated = refresh(app, &token(&logins[0], "refresh_token")).await;
    assert_eq!(rotated.status(), StatusCode::OK);
    secrets.tokens(&rotated.json().await.unwrap());

    let listed: Value = app
        .get_with("/auth/sessions", &access)
        .await
        .json()
        .await
        .unwrap();
    let second = listed["sessions"][1]["id"].as_str().unwrap().to_owned();
    let ended = app
        .http
        .delete(app.url(&format!("/auth/sessions/{second}")))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    let others = app
        .http
        .delete(app.url("/auth/sessions"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(others.status(), StatusCode::NO_CONTENT);
    let logout = app.post_with("/auth/logout", &access).await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    let here = app.login_expecting(email, StatusCode::OK).await;
    let elsewhere = app.login_expecting(email, StatusCode::OK).await;
    secrets.tokens(&here);
    secrets.tokens(&elsewhere);
    let changed = app
        .http
        .put(app.url("/auth/password"))
        .bearer_auth(token(&here, "access_token"))
        .json(&json!({ "current_password": PASSWORD, "new_password": NEW_PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);

    let forgot = app
        .http
        .post(app.url("/auth/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);
    let reset = reset_token(
        &app.wait_for_email(email, "Reset your Twofold password")
            .await,
    );
    secrets.add(reset.clone());
    let done = app
        .http
        .post(app.url("/auth/reset-password"))
        .json(&json!({ "email": email, "token": reset, "new_password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);

    let admin_call = |method: reqwest::Method, path: String| {
        app.http
            .request(method, app.url(&path))
            .bearer_auth(admin)
            .send()
    };
    let tokens = app.login_expecting(email, StatusCode::OK).await;
    secrets.tokens(&tokens);
    let locked = admin_call(reqwest::Method::POST, format!("/users/{alan_id}/lock"))
        .await
        .unwrap();
    assert_eq!(locked.status(), StatusCode::NO_CONTENT);
    let unlocked = admin_call(reqwest::Method::POST, format!("/users/{alan_id}/unlock"))
        .await
        .unwrap();
    assert_eq!(unlocked.status(), StatusCode::NO_CONTENT);
    let tokens = app.login_expecting(email, StatusCode::OK).await;
    secrets.tokens(&tokens);
    let ended = admin_call(
        reqwest::Method::DELETE,
        format!("/users/{alan_id}/sessions"),
    )
    .await
    .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);

    for _ in 0..5 {
        let refused = app.login(email, "not the password at all").await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
    let locked = app.login(email, PASSWORD).await;
    assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Barbara: one login more than the session cap, so the oldest session ends.
async fn barbara(app: &TestApp, secrets: &mut Secrets) {
    let email = "barbara@example.com";
    let response = app.signup(&person(email, "Barbara Liskov", None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    for _ in 0..=MAX_SESSIONS {
        let tokens = app.login_expecting(email, StatusCode::OK).await;
        secrets.tokens(&tokens);
    }
}

/// Every row of the `events` table, in commit order, as the fixture stores them.
async fn dump(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT json_build_object('aggregate_type', aggregate_type, \
         'aggregate_id', aggregate_id, 'sequence', sequence, 'event_type', event_type, \
         'event_version', event_version, 'payload', payload, 'metadata', metadata, \
         'recorded_at', \
         to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')) \
         FROM events ORDER BY recorded_at, aggregate_id, sequence",
    )
    .fetch_all(app.db.as_ref().unwrap())
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "writes a new stored-events fixture; the committed one is never regenerated"]
async fn a_journey_records_every_event_type_for_the_stored_events_fixture() {
    let mut config = test_config(
        Store::Postgres,
        Some(fresh_database().await),
        Some(default_nats_url()),
    );
    config.accounts.signup_existing_email = ExistingEmail::Conceal;
    let mut app = spawn_app_with(config).await;
    app.http = reqwest::Client::builder()
        .user_agent("twofold-fixture/1.0")
        .build()
        .unwrap();
    app.start_mailer();
    let mut secrets = Secrets::default();
    secrets.add(PASSWORD);
    secrets.add(NEW_PASSWORD);

    let ada_seed = ada(&app, &mut secrets).await;
    grace(&app, &mut secrets).await;
    let admin = edsger(&app, &mut secrets).await;
    alan(&app, &admin, &mut secrets).await;
    barbara(&app, &mut secrets).await;

    // A second sign-up with Ada's address is concealed, and recorded on her account.
    let again = app
        .signup(&person("ada@example.com", "Ada Lovelace", None))
        .await;
    assert_eq!(again.status(), StatusCode::OK);

    // A sealing-key rotation, then `keys reseal`: Ada's seed is sealed again.
    app.stop_mailer();
    let mut rotated = app.config.clone();
    rotated.sealing.retired_keys = vec![rotated.sealing.key.clone().unwrap()];
    rotated.sealing.key = Some(secrecy::SecretString::from(
        SealingKey::generate().to_base64(),
    ));
    let report = twofold_api::operator::reseal(&rotated).await.unwrap();
    assert_eq!(report.resealed, 1);
    secrets.seed(&ada_seed);

    let rows = dump(&app).await;
    let types: BTreeSet<&str> = rows
        .iter()
        .map(|row| row["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, EVENT_TYPES.into_iter().collect::<BTreeSet<_>>());
    let reasons: BTreeSet<&str> = rows
        .iter()
        .filter_map(|row| row["payload"]["SessionEnded"]["reason"].as_str())
        .collect();
    assert_eq!(reasons, END_REASONS.into_iter().collect::<BTreeSet<_>>());

    // One row per line: a reader can grep it, and a diff shows whole rows.
    let lines: Vec<String> = rows
        .iter()
        .map(|row| serde_json::to_string(row).unwrap())
        .collect();
    let text = format!("[\n{}\n]\n", lines.join(",\n"));
    for secret in &secrets.0 {
        assert!(!text.contains(secret.as_str()), "a secret is in the dump");
    }
    let out = std::env::var_os("TWOFOLD_EVENTS_FIXTURE_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("twofold-events-fixture.json"));
    std::fs::write(&out, text).unwrap();
    eprintln!("{} rows written to {}", rows.len(), out.display());
}

/// The committed fixture: rows the service stored at event version 1.0.
const EVENTS_V1_0: &str = include_str!("../../projections/tests/fixtures/events-v1.0.json");

/// Stores the fixture's events of the user with `email` (at version 1.0, unchained) and their
/// address reservation in clear, as a database from before the upgrade holds them; returns the
/// user's id.
pub(crate) async fn store_from_before_the_upgrade(db: &sqlx::PgPool, email: &str) -> String {
    let rows: Vec<Value> = serde_json::from_str(EVENTS_V1_0).unwrap();
    let user = rows
        .iter()
        .find(|row| row["payload"]["SignedUp"]["email"] == email)
        .map(|row| row["aggregate_id"].as_str().unwrap().to_owned())
        .unwrap();
    for row in rows
        .iter()
        .filter(|row| row["aggregate_id"] == user.as_str())
    {
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
             event_version, payload, metadata, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::timestamptz)",
        )
        .bind(row["aggregate_type"].as_str())
        .bind(row["aggregate_id"].as_str())
        .bind(row["sequence"].as_i64())
        .bind(row["event_type"].as_str())
        .bind(row["event_version"].as_str())
        .bind(&row["payload"])
        .bind(&row["metadata"])
        .bind(row["recorded_at"].as_str())
        .execute(db)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO user_emails (email_key, user_id) VALUES ($1, $2)")
        .bind(email)
        .bind(&user)
        .execute(db)
        .await
        .unwrap();
    user
}

#[tokio::test]
async fn a_user_whose_log_was_written_at_version_1_0_logs_in_after_the_upgrade() {
    let app = spawn_app(Store::Postgres).await;
    let db = app.db.as_ref().unwrap();
    let alan = store_from_before_the_upgrade(db, "alan@example.com").await;

    // The next start keys his address reservation, stored in clear, by its digest. His
    // password (reset in the fixture; its lock long expired) opens a session, and a second
    // login reads his log of 1.0 and new events together.
    let app = app.another_instance().await;
    app.login_expecting("alan@example.com", StatusCode::OK)
        .await;
    app.login_expecting("alan@example.com", StatusCode::OK)
        .await;
    let reservation: String =
        sqlx::query_scalar("SELECT email_key FROM user_emails WHERE user_id = $1")
            .bind(&alan)
            .fetch_one(db)
            .await
            .unwrap();
    assert!(!reservation.contains("alan"), "{reservation}");

    let added: Vec<(String, Value)> = sqlx::query_as(
        "SELECT event_version, payload FROM events \
         WHERE aggregate_id = $1 AND event_version <> '1.0' ORDER BY sequence",
    )
    .bind(&alan)
    .fetch_all(db)
    .await
    .unwrap();
    assert_eq!(added.len(), 4, "two LoggedIn and two SessionStarted");
    for (version, payload) in added {
        assert_eq!(version, "2.0");
        let body = payload.as_object().unwrap().values().next().unwrap();
        assert!(body["at"].as_str().unwrap().ends_with('Z'), "{payload}");
    }
}
