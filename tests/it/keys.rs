//! Sealing-key rotation over HTTP: after the key changes, what the old key sealed keeps
//! working while it is configured as retired, `twofold keys reseal` moves the TOTP seeds to
//! the new key, and the old key can then go (except for the digests it keyed).

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{json, Value};
use twofold_api::adapters::SealingKey;

use crate::helpers::*;

async fn second_step(app: &TestApp, email: &str, path: &str) -> StatusCode {
    let pre_tfa = app.login_expecting(email, StatusCode::ACCEPTED).await;
    app.post_with(path, pre_tfa["access_token"].as_str().unwrap())
        .await
        .status()
}

#[tokio::test]
async fn a_rotated_sealing_key_keeps_old_secrets_working_until_resealed() {
    let mut before = spawn_app(Store::Postgres).await;
    let email = unique_email("rotate");
    let seed = before.signup_with_authenticator(&email).await;
    let backup_codes = before.backup_codes(&email).await;

    // A reset email sealed under the old key waits in the stream while no mailer runs.
    before.stop_mailer();
    let forgot = before
        .http
        .post(before.url("/auth/forgot-password"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);

    // Rotate: a new current key, the old one retired, on the same database and stream.
    let old_key = before.config.sealing.key.clone().unwrap();
    let mut rotated_config = before.config.clone();
    rotated_config.sealing.key = Some(SecretString::from(SealingKey::generate().to_base64()));
    rotated_config.sealing.retired_keys = vec![old_key];
    let mut rotated = spawn_app_with(rotated_config.clone()).await;
    rotated.start_mailer();
    rotated
        .wait_for_email(&email, "Reset your Twofold password")
        .await;

    // The seed and the backup codes, sealed and keyed under the old key, still work.
    assert_eq!(
        second_step(
            &rotated,
            &email,
            &format!("/tfa/login_tfa?tfa_token={}", previous_code(&seed))
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        second_step(
            &rotated,
            &email,
            &format!("/tfa/recover_tfa?tfa_backup_token={}", backup_codes[0])
        )
        .await,
        StatusCode::OK
    );

    // Reseal: one seed moves; the backup codes still need the retired key, and the report
    // says so. A second run has nothing left to move.
    let report = twofold_api::operator::reseal(&rotated_config)
        .await
        .unwrap();
    assert_eq!(report.resealed, 1);
    // The users' data keys and address reservations move too (the rotated user's and the
    // admin-free rest: every user of this database was made under the old key).
    assert_eq!(report.data_keys_resealed, report.users, "{report:?}");
    assert_eq!(report.addresses_reindexed, report.users, "{report:?}");
    assert_eq!(report.retired_keys_in_use.len(), 1, "{report:?}");
    assert_eq!(report.retired_keys_in_use.values().sum::<usize>(), 1);
    let again = twofold_api::operator::reseal(&rotated_config)
        .await
        .unwrap();
    assert_eq!(again.resealed, 0);
    assert_eq!(
        (again.data_keys_resealed, again.addresses_reindexed),
        (0, 0)
    );
    assert_eq!(again.users, report.users);

    let resealed: Vec<Value> =
        sqlx::query_scalar("SELECT payload FROM events WHERE event_type = 'SeedResealed'")
            .fetch_all(rotated.db.as_ref().unwrap())
            .await
            .unwrap();
    assert_eq!(resealed.len(), 1);
    let stored = resealed[0].to_string();
    let base32_seed = totp_rs::Secret::Raw(seed.clone()).to_encoded().to_string();
    assert!(!stored.contains(&base32_seed), "the seed is stored sealed");

    // Without the old key: the resealed seed opens, the old key's backup codes do not.
    let mut after_config = rotated_config.clone();
    after_config.sealing.retired_keys.clear();
    let after = spawn_app_with(after_config).await;
    assert_eq!(
        second_step(
            &after,
            &email,
            &format!("/tfa/login_tfa?tfa_token={}", current_code(&seed))
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(
        second_step(
            &after,
            &email,
            &format!("/tfa/recover_tfa?tfa_backup_token={}", backup_codes[1])
        )
        .await,
        StatusCode::FORBIDDEN,
        "digests cannot be re-keyed: dropping their key voids them, as the reseal report warned"
    );
}
