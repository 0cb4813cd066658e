//! After a full journey (sign-up with TOTP and email second factors, both login steps, a
//! backup code, refresh, password change and reset, enrolment after sign-up, logout), no
//! password, seed, code or token appears in the event store, the views or the logs.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::password::reset_token;

/// The seed of a QR code, in every spelling a log line could hold it.
fn seed_spellings(png: &[u8]) -> Vec<String> {
    let uri = otpauth_uri_from_png(png);
    let seed = seed_from_uri(&uri);
    let secret_param = url::Url::parse(&uri)
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == "secret")
        .unwrap()
        .1
        .into_owned();
    vec![
        secret_param,
        base64::engine::general_purpose::STANDARD.encode(&seed),
        seed.iter().map(|b| format!("{b:02x}")).collect(),
    ]
}

#[tokio::test]
async fn no_secret_is_stored_or_logged() {
    let app = spawn_app(Store::Postgres).await;
    let mut secrets: Vec<String> = vec![PASSWORD.to_owned()];

    let totp_email = unique_email("secret-totp");
    let png = app
        .signup(&signup_body(&totp_email, Some("code_generator")))
        .await
        .bytes()
        .await
        .unwrap();
    let seed = seed_from_uri(&otpauth_uri_from_png(&png));
    secrets.extend(seed_spellings(&png));
    let backup_codes = app.backup_codes(&totp_email).await;
    secrets.extend(backup_codes.iter().cloned());
    secrets.extend(backup_codes.iter().map(|code| code.replace('-', "")));

    let pending = app.login_expecting(&totp_email, StatusCode::ACCEPTED).await;
    let pre_tfa = pending["access_token"].as_str().unwrap().to_owned();
    let code = current_code(&seed);
    let tokens: Value = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={code}"), &pre_tfa)
        .await
        .json()
        .await
        .unwrap();
    secrets.push(pre_tfa);
    let pre_tfa = app.login_token(&totp_email, StatusCode::ACCEPTED).await;
    let recovered = app
        .post_with(
            &format!("/tfa/recover_tfa?tfa_backup_token={}", backup_codes[1]),
            &pre_tfa,
        )
        .await;
    assert_eq!(recovered.status(), StatusCode::OK);
    secrets.push(pre_tfa);
    for token in ["access_token", "refresh_token"] {
        secrets.push(tokens[token].as_str().unwrap().to_owned());
    }

    let mail_email = unique_email("secret-mail");
    app.signup(&signup_body(&mail_email, Some("email"))).await;
    secrets.extend(app.backup_codes(&mail_email).await);
    let pre_tfa = app.login_token(&mail_email, StatusCode::ACCEPTED).await;
    let login_code = app.login_codes(&mail_email, 1).await.remove(0);
    let done = app
        .post_with(&format!("/tfa/login_tfa?tfa_token={login_code}"), &pre_tfa)
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    secrets.push(pre_tfa);
    // A 6-digit code is too short to search for alone; look for it in its log-like contexts.
    secrets.push(format!("tfa_token={login_code}"));
    secrets.push(format!("\"{login_code}\""));
    let wrong = app.login(&mail_email, "a wrong password here").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    secrets.push("a wrong password here".to_owned());

    // Refresh: the rotated pair is as secret as the first.
    let refreshed: Value = app
        .http
        .post(app.url("/auth/refresh"))
        .json(&json!({ "refresh_token": tokens["refresh_token"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for token in ["access_token", "refresh_token"] {
        secrets.push(refreshed[token].as_str().unwrap().to_owned());
    }

    // A password change, a forgotten password reset with its emailed token, and a TOTP
    // enrolment after sign-up, on an account without 2FA.
    let plain_email = unique_email("secret-plain");
    app.signup(&signup_body(&plain_email, None)).await;
    let access = app.login_token(&plain_email, StatusCode::OK).await;
    secrets.push(access.clone());
    let changed_password = "a changed passphrase for the secrets journey";
    let changed = app
        .http
        .put(app.url("/auth/password"))
        .bearer_auth(&access)
        .json(&json!({ "current_password": PASSWORD, "new_password": changed_password }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    secrets.push(changed_password.to_owned());
    let forgot = app
        .http
        .post(app.url("/auth/forgot-password"))
        .json(&json!({ "email": plain_email }))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);
    let token = reset_token(
        &app.wait_for_email(&plain_email, "Reset your Twofold password")
            .await,
    );
    let reset_password = "a reset passphrase for the secrets journey";
    let reset = app
        .http
        .post(app.url("/auth/reset-password"))
        .json(&json!({ "email": plain_email, "token": token, "new_password": reset_password }))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    secrets.push(token);
    secrets.push(reset_password.to_owned());
    let after_reset = app.login(&plain_email, reset_password).await;
    assert_eq!(after_reset.status(), StatusCode::OK);
    let after_reset: Value = after_reset.json().await.unwrap();
    let access = after_reset["access_token"].as_str().unwrap().to_owned();
    secrets.push(access.clone());
    secrets.push(after_reset["refresh_token"].as_str().unwrap().to_owned());
    let enrolled = app.enable_tfa(&access, "code_generator").await;
    assert_eq!(enrolled.status(), StatusCode::OK);
    secrets.extend(seed_spellings(&enrolled.bytes().await.unwrap()));
    let enrolled_codes = app.backup_codes(&plain_email).await;
    secrets.extend(enrolled_codes.iter().map(|code| code.replace('-', "")));
    secrets.extend(enrolled_codes);
    let logout = app.post_with("/auth/logout", &access).await;
    assert!(logout.status().is_success());

    let db = app.db.as_ref().unwrap();
    let stored: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', aggregate_id, event_type, payload::text, metadata::text) FROM events \
         UNION ALL SELECT payload::text FROM user_view \
         UNION ALL SELECT email_key || ' ' || user_id FROM user_emails",
    )
    .fetch_all(db)
    .await
    .unwrap();
    assert!(stored.len() > 10, "the journey was stored");
    let stored = stored.join("\n");
    assert!(
        stored.contains("$argon2id$"),
        "passwords are stored as Argon2id hashes"
    );
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    for outcome in [
        "second factor accepted",
        "backup code used",
        "password changed",
        "password reset",
        "two-factor authentication enabled",
        "logged out",
    ] {
        assert!(logs.contains(outcome), "the security log has {outcome:?}");
    }
    for secret in &secrets {
        assert!(
            !stored.contains(secret.as_str()),
            "a secret is stored: {secret}"
        );
        assert!(
            !logs.contains(secret.as_str()),
            "a secret is logged: {secret}"
        );
    }
}
