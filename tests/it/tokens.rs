//! Each kind of token is accepted only where it belongs; forged, expired and foreign tokens
//! are refused with 401 and `WWW-Authenticate: Bearer`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

fn sign(app: &TestApp, kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_ed_pem(app.jwt_key_pem().as_bytes()).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    encode(&header, claims, &key).unwrap()
}

async fn assert_refused(app: &TestApp, path: &str, post: bool, token: &str, code: &str) {
    let response = if post {
        app.post_with(path, token).await
    } else {
        app.get_with(path, token).await
    };
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"),);
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
    assert_eq!(body["code"], code, "{path}");
}

#[tokio::test]
async fn tokens_work_only_where_they_belong_and_forgeries_are_refused() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("tokens");
    app.signup(&signup_body(&email, None)).await;
    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let totp_email = unique_email("tokens-totp");
    app.signup(&signup_body(&totp_email, Some("code_generator")))
        .await;
    let pre_tfa = app.login_token(&totp_email, StatusCode::ACCEPTED).await;

    // The JWKS publishes the key the tokens name.
    let jwks: Value = app.jwks().await;
    assert_eq!(jwks["keys"][0]["kid"], kid_of(&access).as_str());
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    let claims = claims_of(&access);
    for claim in ["exp", "iat", "iss", "aud", "sub", "jti", "typ"] {
        assert!(claims.get(claim).is_some(), "{claim} is set");
    }
    assert_eq!(claims["typ"], "access");

    // No header, a non-bearer header.
    let missing = app
        .http
        .get(app.url("/auth/test-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let (status, body) = problem(missing).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["code"], "auth.missing_token");
    let basic = app
        .http
        .get(app.url("/auth/test-token"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(basic).await.1["code"], "auth.missing_token");

    // Wrong kinds.
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &pre_tfa,
        "auth.invalid_token",
    )
    .await;
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &refresh,
        "auth.invalid_token",
    )
    .await;
    assert_refused(
        &app,
        "/tfa/login_tfa?tfa_token=123456",
        true,
        &access,
        "auth.invalid_token",
    )
    .await;
    assert_refused(
        &app,
        "/tfa/login_tfa?tfa_token=123456",
        true,
        &refresh,
        "auth.invalid_token",
    )
    .await;
    let access_as_refresh = app
        .http
        .post(app.url("/auth/refresh"))
        .json(&json!({ "refresh_token": access }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(access_as_refresh).await.1["code"],
        "auth.invalid_token"
    );

    // Expired, not yet valid, tampered, unsigned, for an unknown user, naming another key.
    let kid = kid_of(&access);
    let mut expired = claims_of(&access);
    expired["exp"] = json!(claims["iat"].as_i64().unwrap() - 120);
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &sign(&app, &kid, &expired),
        "auth.invalid_token",
    )
    .await;
    let mut future = claims_of(&access);
    future["nbf"] = json!(claims["iat"].as_i64().unwrap() + 3600);
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &sign(&app, &kid, &future),
        "auth.invalid_token",
    )
    .await;
    let mut unknown_user = claims_of(&access);
    unknown_user["sub"] = json!(uuid::Uuid::new_v4());
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &sign(&app, &kid, &unknown_user),
        "auth.invalid_token",
    )
    .await;
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &sign(&app, "another-key", &claims),
        "auth.invalid_token",
    )
    .await;

    let parts: Vec<&str> = access.split('.').collect();
    let mut elevated = claims_of(&access);
    elevated["sub"] = json!(uuid::Uuid::new_v4());
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(elevated.to_string()),
        parts[2]
    );
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &tampered,
        "auth.invalid_token",
    )
    .await;

    let none_header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT", "kid": kid }).to_string());
    let unsigned = format!("{none_header}.{}.", parts[1]);
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &unsigned,
        "auth.invalid_token",
    )
    .await;
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        "not-a-jwt",
        "auth.invalid_token",
    )
    .await;

    // The genuine token still works after all that.
    assert_eq!(
        app.get_with("/auth/test-token", &access).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_with_a_wrong_audience_or_issuer_or_an_hmac_signature_are_refused() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("forged");
    app.signup(&signup_body(&email, None)).await;
    let access = app.login_token(&email, StatusCode::OK).await;
    let kid = kid_of(&access);
    for (claim, value) in [
        ("aud", "someone-else"),
        ("iss", "someone-else"),
        ("typ", "admin"),
    ] {
        let mut claims = claims_of(&access);
        claims[claim] = json!(value);
        let forged = sign(&app, &kid, &claims);
        assert_refused(
            &app,
            "/auth/test-token",
            false,
            &forged,
            "auth.invalid_token",
        )
        .await;
    }
    // HMAC keyed with the public key (the classic algorithm confusion).
    let jwks: Value = app.jwks().await;
    let public = URL_SAFE_NO_PAD
        .decode(jwks["keys"][0]["x"].as_str().unwrap())
        .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid);
    let confused = encode(
        &header,
        &claims_of(&access),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &confused,
        "auth.invalid_token",
    )
    .await;
}

#[tokio::test]
async fn a_rotated_signing_key_keeps_verifying_its_tokens_on_every_instance() {
    let old = spawn_app(Store::Postgres).await;
    let email = unique_email("rotation");
    old.signup(&signup_body(&email, None)).await;
    let before = old.login_token(&email, StatusCode::OK).await;

    // A new instance signs with a new key and keeps the old one as retired.
    let retired = old.config.jwt.key_file.clone().unwrap();
    let mut rotated = old.config.clone();
    let new_key = retired.with_file_name("jwt-next.pem");
    std::fs::write(
        &new_key,
        twofold_api::http::jwt::JwtKey::generate_pem()
            .unwrap()
            .as_bytes(),
    )
    .unwrap();
    rotated.jwt.key_file = Some(new_key.clone());
    rotated.jwt.retired_key_files = vec![retired];
    let new = spawn_app_with(rotated.clone()).await;
    assert_eq!(
        new.get_with("/auth/test-token", &before).await.status(),
        StatusCode::OK
    );
    let after = new.login_token(&email, StatusCode::OK).await;
    assert_ne!(kid_of(&before), kid_of(&after));
    let jwks: Value = new.jwks().await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids,
        vec![kid_of(&after).as_str(), kid_of(&before).as_str()]
    );

    // Once the retired key is dropped, its tokens stop working.
    rotated.jwt.retired_key_files = Vec::new();
    let dropped = spawn_app_with(rotated).await;
    assert_refused(
        &dropped,
        "/auth/test-token",
        false,
        &before,
        "auth.invalid_token",
    )
    .await;
    assert_eq!(
        dropped.get_with("/auth/test-token", &after).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn in_hs256_mode_clients_verify_tokens_with_the_shared_secret() {
    const SECRET: &str = "a shared secret of at least thirty-two bytes";
    let mut config = test_config(Store::Embedded, None, None);
    config.jwt.hs256_secret = Some(SECRET.into());
    let app = spawn_app_with(config).await;
    let email = unique_email("hs256");
    app.signup(&signup_body(&email, None)).await;
    let access = app.login_token(&email, StatusCode::OK).await;
    assert_eq!(
        jsonwebtoken::decode_header(&access).unwrap().alg,
        Algorithm::HS256
    );
    assert_eq!(
        app.get_with("/auth/test-token", &access).await.status(),
        StatusCode::OK
    );

    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_audience(&["twofold"]);
    validation.set_issuer(&["twofold"]);
    let key = jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes());
    let claims = jsonwebtoken::decode::<Value>(&access, &key, &validation)
        .unwrap()
        .claims;
    assert_eq!(claims["typ"], "access");

    // A token signed with another secret is refused.
    let forged = encode(
        &jsonwebtoken::decode_header(&access).unwrap(),
        &claims,
        &EncodingKey::from_secret(b"another secret that is long enough!!"),
    )
    .unwrap();
    assert_refused(
        &app,
        "/auth/test-token",
        false,
        &forged,
        "auth.invalid_token",
    )
    .await;
}
