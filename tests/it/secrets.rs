//! After a full journey, no password, seed, code or token appears in the event store, the
//! views or the logs.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

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
    let uri = otpauth_uri_from_png(&png);
    let seed = seed_from_uri(&uri);
    let secret_param = url::Url::parse(&uri)
        .unwrap()
        .query_pairs()
        .find(|(key, _)| key == "secret")
        .unwrap()
        .1
        .into_owned();
    secrets.push(secret_param);
    secrets.push(base64::engine::general_purpose::STANDARD.encode(&seed));
    secrets.push(seed.iter().map(|b| format!("{b:02x}")).collect());
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
    assert!(
        logs.contains("second factor accepted"),
        "the logs were captured"
    );
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
