//! Passkeys over HTTP, with real WebAuthn ceremonies driven by a software authenticator
//! (`webauthn-authenticator-rs`'s soft token): enrolment and management, the second login
//! step, passwordless login, single-use ceremonies, origin and counter checks, on both
//! stores where the store matters.
//!
//! The soft token keeps no discoverable credentials: for a passwordless login the test plays
//! the part of the browser picking the credential, by naming it in the request options and
//! returning the user handle (the user id) beside the assertion, as a discoverable
//! authenticator does. Neither is signed, and the service checks the signature, the
//! challenge, the origin and the counter as for any assertion.

use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use url::Url;
use webauthn_authenticator_rs::error::WebauthnCError;
use webauthn_authenticator_rs::softtoken::SoftToken;
use webauthn_authenticator_rs::{AuthenticatorBackendHashedClientData, WebauthnAuthenticator};
use webauthn_rs_proto::{
    CreationChallengeResponse, PublicKeyCredential, PublicKeyCredentialCreationOptions,
    PublicKeyCredentialRequestOptions, RegisterPublicKeyCredential, RequestChallengeResponse,
};

use crate::helpers::*;
use crate::metrics::{sample, scrape};

/// The origin the service accepts by default (`TWOFOLD_WEBAUTHN_ORIGINS`).
const ORIGIN: &str = "http://localhost:5555";

/// A soft token the test can copy: shared, so that its state (its keys and its signature
/// counter) can be read out at any time.
#[derive(Clone)]
struct Token(Arc<Mutex<SoftToken>>);

impl Token {
    fn new() -> Self {
        // It claims user verification, which the service requires (a real authenticator
        // would ask for a PIN or a fingerprint).
        let (token, _) = SoftToken::new(true).unwrap();
        Self(Arc::new(Mutex::new(token)))
    }

    /// A copy of the token as it is now: the same keys and the same counter, from here on
    /// counting on its own, as a cloned authenticator would.
    fn copy(&self) -> Self {
        let state = self.0.lock().unwrap().to_cbor().unwrap();
        Self(Arc::new(Mutex::new(SoftToken::from_cbor(&state).unwrap())))
    }

    fn register(&self, origin: &str, public_key: &Value) -> RegisterPublicKeyCredential {
        let options: CreationChallengeResponse =
            serde_json::from_value(json!({ "publicKey": public_key })).unwrap();
        WebauthnAuthenticator::new(self.clone())
            .do_registration(Url::parse(origin).unwrap(), options)
            .unwrap()
    }

    fn assert(&self, origin: &str, public_key: &Value) -> PublicKeyCredential {
        let options: RequestChallengeResponse =
            serde_json::from_value(json!({ "publicKey": public_key })).unwrap();
        WebauthnAuthenticator::new(self.clone())
            .do_authentication(Url::parse(origin).unwrap(), options)
            .unwrap()
    }
}

impl AuthenticatorBackendHashedClientData for Token {
    fn perform_register(
        &mut self,
        client_data_hash: Vec<u8>,
        options: PublicKeyCredentialCreationOptions,
        timeout_ms: u32,
    ) -> Result<RegisterPublicKeyCredential, WebauthnCError> {
        self.0
            .lock()
            .unwrap()
            .perform_register(client_data_hash, options, timeout_ms)
    }

    fn perform_auth(
        &mut self,
        client_data_hash: Vec<u8>,
        options: PublicKeyCredentialRequestOptions,
        timeout_ms: u32,
    ) -> Result<PublicKeyCredential, WebauthnCError> {
        self.0
            .lock()
            .unwrap()
            .perform_auth(client_data_hash, options, timeout_ms)
    }
}

async fn post_json(app: &TestApp, path: &str, token: Option<&str>, body: &Value) -> Response {
    let request = app.http.post(app.url(path)).json(body);
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    request.send().await.unwrap()
}

/// Signs up `email` without two-factor authentication and logs in: the access token.
async fn signed_in(app: &TestApp, email: &str) -> String {
    let response = app.signup(&signup_body(email, None)).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.login_token(email, StatusCode::OK).await
}

/// The proofs of a user without a second factor.
fn the_password() -> Value {
    json!({ "password": PASSWORD })
}

/// No proofs: the caller's recent sign-in is the re-authentication.
fn the_sign_in() -> Value {
    json!({})
}

/// Starts a registration with `proofs`: `(challenge_id, publicKey)`.
async fn start_registration(app: &TestApp, access: &str, proofs: &Value) -> (Value, Value) {
    let response = post_json(app, "/passkeys/registration/start", Some(access), proofs).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    (body["challenge_id"].clone(), body["publicKey"].clone())
}

/// Registers `token` as passkey `name`, re-authenticated with `proofs`: the 201 answer, and
/// the credential id.
async fn register(
    app: &TestApp,
    access: &str,
    proofs: &Value,
    token: &Token,
    name: &str,
) -> (Value, String) {
    let (challenge_id, public_key) = start_registration(app, access, proofs).await;
    let credential = token.register(ORIGIN, &public_key);
    let credential_id = URL_SAFE_NO_PAD.encode(credential.raw_id.as_slice());
    let response = post_json(
        app,
        "/passkeys/registration/finish",
        Some(access),
        &json!({ "challenge_id": challenge_id, "name": name, "credential": credential }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    (response.json().await.unwrap(), credential_id)
}

/// Starts the second step with a pre-2FA token and signs its challenge with `token`.
async fn second_factor_assertion(app: &TestApp, pre_tfa: &str, token: &Token) -> Value {
    let response = post_json(app, "/tfa/passkey/start", Some(pre_tfa), &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let start: Value = response.json().await.unwrap();
    let credential = token.assert(ORIGIN, &start["publicKey"]);
    json!({ "challenge_id": start["challenge_id"], "credential": credential })
}

/// Starts a passwordless login and answers it as a discoverable authenticator holding
/// `token`'s credential `credential_id` for `user_id` would, from `origin`.
async fn passwordless_assertion(
    app: &TestApp,
    token: &Token,
    credential_id: &str,
    user_id: &str,
    origin: &str,
) -> Value {
    let response = post_json(app, "/auth/passkey/start", None, &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let start: Value = response.json().await.unwrap();
    let mut public_key = start["publicKey"].clone();
    assert_eq!(public_key["allowCredentials"], json!([]), "discoverable");
    public_key["allowCredentials"] = json!([{ "type": "public-key", "id": credential_id }]);
    let mut credential = token.assert(origin, &public_key);
    let user = uuid::Uuid::parse_str(user_id).unwrap();
    credential.response.user_handle = Some(user.as_bytes().to_vec().into());
    json!({ "challenge_id": start["challenge_id"], "credential": credential })
}

/// A new user with one passkey, "laptop": `(email, user id, access token, token, credential
/// id)`.
async fn user_with_passkey(app: &TestApp, label: &str) -> (String, String, String, Token, String) {
    let email = unique_email(label);
    let access = signed_in(app, &email).await;
    let user_id = claims_of(&access)["sub"].as_str().unwrap().to_owned();
    let token = Token::new();
    let (_, credential_id) = register(app, &access, &the_password(), &token, "laptop").await;
    (email, user_id, access, token, credential_id)
}

async fn history_types(app: &TestApp, access: &str) -> Vec<String> {
    let response = app.get_with("/users/me/history?limit=100", access).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn code_of(response: Response) -> (StatusCode, String) {
    let (status, body) = problem(response).await;
    (status, body["code"].as_str().unwrap().to_owned())
}

fn refused() -> (StatusCode, String) {
    (StatusCode::UNAUTHORIZED, "passkey.refused".to_owned())
}

fn closed() -> (StatusCode, String) {
    (StatusCode::NOT_FOUND, "passkey.ceremony_closed".to_owned())
}

async fn enrol_list_rename_remove_and_second_factor(store: Store) {
    let app = spawn_app(store).await;
    let email = unique_email("passkey-enrol");
    let access = signed_in(&app, &email).await;
    let laptop = Token::new();
    let phone = Token::new();

    // A wrong password starts nothing.
    let wrong = post_json(
        &app,
        "/passkeys/registration/start",
        Some(&access),
        &json!({ "password": "not the password" }),
    )
    .await;
    assert_eq!(
        code_of(wrong).await,
        (StatusCode::FORBIDDEN, "auth.wrong_password".to_owned())
    );
    let (registered, laptop_credential) =
        register(&app, &access, &the_password(), &laptop, " laptop ").await;
    assert_eq!(registered["name"], "laptop");
    // The passkey is now the account's second factor: the password alone adds no other one,
    // the recent sign-in does.
    let password_alone = post_json(
        &app,
        "/passkeys/registration/start",
        Some(&access),
        &the_password(),
    )
    .await;
    assert_eq!(
        code_of(password_alone).await,
        (
            StatusCode::FORBIDDEN,
            "reauthentication.passkey_required".to_owned()
        )
    );
    register(&app, &access, &the_sign_in(), &phone, "phone").await;

    // A third with a name already taken (in another case) is refused at the finish.
    let (challenge_id, public_key) = start_registration(&app, &access, &the_sign_in()).await;
    // A discoverable credential is asked for, so that a passkey can sign in without a
    // password; user verification is required.
    let selection = &public_key["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "preferred", "{public_key}");
    assert_eq!(selection["userVerification"], "required", "{public_key}");
    let credential = Token::new().register(ORIGIN, &public_key);
    let taken = post_json(
        &app,
        "/passkeys/registration/finish",
        Some(&access),
        &json!({ "challenge_id": challenge_id, "name": "LAPTOP", "credential": credential }),
    )
    .await;
    assert_eq!(
        code_of(taken).await,
        (StatusCode::CONFLICT, "passkey.name_taken".to_owned())
    );

    let list: Value = app
        .get_with("/passkeys", &access)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|passkey| passkey["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["laptop", "phone"]);
    assert!(!list.to_string().contains(&laptop_credential), "{list}");

    let laptop_id = registered["id"].as_str().unwrap();
    let rename = |id: String, name: &'static str| {
        app.http
            .patch(app.url(&format!("/passkeys/{id}")))
            .bearer_auth(&access)
            .json(&json!({ "name": name }))
            .send()
    };
    let renamed = rename(laptop_id.to_owned(), "work laptop").await.unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let unknown = rename(uuid::Uuid::new_v4().to_string(), "x").await.unwrap();
    assert_eq!(
        code_of(unknown).await,
        (StatusCode::NOT_FOUND, "passkey.not_found".to_owned())
    );

    // With a passkey, the password alone no longer signs in: 202, and the passkey finishes.
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let assertion = second_factor_assertion(&app, &pre_tfa, &laptop).await;
    let response = post_json(&app, "/tfa/passkey/finish", Some(&pre_tfa), &assertion).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    assert!(tokens["refresh_token"].is_string());
    let fresh = tokens["access_token"].as_str().unwrap().to_owned();
    // The same assertion again: its ceremony is spent.
    let replayed = post_json(&app, "/tfa/passkey/finish", Some(&pre_tfa), &assertion).await;
    assert_eq!(code_of(replayed).await, closed());

    // Removing, within the window after the fresh sign-in.
    let removed = app
        .http
        .delete(app.url(&format!("/passkeys/{laptop_id}")))
        .bearer_auth(&fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let list: Value = app
        .get_with("/passkeys", &fresh)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // The removed passkey signs nothing in any more, even answering a live ceremony.
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let response = post_json(&app, "/tfa/passkey/start", Some(&pre_tfa), &json!({})).await;
    let start: Value = response.json().await.unwrap();
    let mut public_key = start["publicKey"].clone();
    public_key["allowCredentials"] = json!([{ "type": "public-key", "id": laptop_credential }]);
    let credential = laptop.assert(ORIGIN, &public_key);
    let stale = post_json(
        &app,
        "/tfa/passkey/finish",
        Some(&pre_tfa),
        &json!({ "challenge_id": start["challenge_id"], "credential": credential }),
    )
    .await;
    assert_eq!(code_of(stale).await, refused());
    // The other factor of the same login still works.
    let assertion = second_factor_assertion(&app, &pre_tfa, &phone).await;
    let response = post_json(&app, "/tfa/passkey/finish", Some(&pre_tfa), &assertion).await;
    assert_eq!(response.status(), StatusCode::OK);

    let history = history_types(&app, &fresh).await;
    for kind in [
        "passkey_added",
        "passkey_renamed",
        "passkey_removed",
        "passkey_used",
    ] {
        assert!(
            history.iter().any(|entry| entry == kind),
            "{kind}: {history:?}"
        );
    }
    if store == Store::Postgres {
        app.wait_for_email(&email, "A passkey was added to your Twofold account")
            .await;
        app.wait_for_email(&email, "A passkey was removed from your Twofold account")
            .await;
    }
}

#[tokio::test]
async fn passkeys_are_enrolled_listed_renamed_removed_and_sign_in_as_second_factor_on_postgres() {
    enrol_list_rename_remove_and_second_factor(Store::Postgres).await;
}

#[tokio::test]
async fn passkeys_are_enrolled_listed_renamed_removed_and_sign_in_as_second_factor_embedded() {
    enrol_list_rename_remove_and_second_factor(Store::Embedded).await;
}

async fn passwordless(store: Store) {
    let app = spawn_app(store).await;
    let (_, user_id, _, token, credential_id) = user_with_passkey(&app, "passwordless").await;

    let body = passwordless_assertion(&app, &token, &credential_id, &user_id, ORIGIN).await;
    let response = post_json(&app, "/auth/passkey/finish", None, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let me = app.get_with("/auth/test-token", access).await;
    assert_eq!(me.status(), StatusCode::OK);
    let refreshed = post_json(
        &app,
        "/auth/refresh",
        None,
        &json!({ "refresh_token": tokens["refresh_token"] }),
    )
    .await;
    assert_eq!(refreshed.status(), StatusCode::OK);

    // Something that is no WebAuthn credential at all is refused like a wrong one.
    let start: Value = post_json(&app, "/auth/passkey/start", None, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let garbage = json!({ "challenge_id": start["challenge_id"], "credential": { "id": 7 } });
    let response = post_json(&app, "/auth/passkey/finish", None, &garbage).await;
    assert_eq!(code_of(response).await, refused());

    // The same assertion replayed: refused, its ceremony is spent.
    let replayed = post_json(&app, "/auth/passkey/finish", None, &body).await;
    assert_eq!(code_of(replayed).await, closed());

    // Another authenticator's assertion for this user, and one naming a user that does not
    // exist, answer alike.
    let (_, _, _, stranger, stranger_credential) = user_with_passkey(&app, "stranger").await;
    let wrong_key =
        passwordless_assertion(&app, &stranger, &stranger_credential, &user_id, ORIGIN).await;
    let wrong = post_json(&app, "/auth/passkey/finish", None, &wrong_key).await;
    assert_eq!(code_of(wrong).await, refused());
    let nobody = uuid::Uuid::new_v4().to_string();
    let no_user = passwordless_assertion(&app, &token, &credential_id, &nobody, ORIGIN).await;
    let missing = post_json(&app, "/auth/passkey/finish", None, &no_user).await;
    assert_eq!(code_of(missing).await, refused());

    // A passwordless sign-in is a full one: the history shows the passkey.
    let history = history_types(&app, access).await;
    assert!(
        history.iter().any(|entry| entry == "passkey_used"),
        "{history:?}"
    );
    assert!(
        history.iter().any(|entry| entry == "login_failed"),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_discoverable_passkey_signs_in_without_a_password_once_per_ceremony_on_postgres() {
    passwordless(Store::Postgres).await;
}

#[tokio::test]
async fn a_discoverable_passkey_signs_in_without_a_password_once_per_ceremony_embedded() {
    passwordless(Store::Embedded).await;
}

async fn fifty_concurrent_finishes(store: Store) {
    let app = spawn_app(store).await;
    let (_, user_id, _, token, credential_id) = user_with_passkey(&app, "fifty").await;
    let body = passwordless_assertion(&app, &token, &credential_id, &user_id, ORIGIN).await;
    let finishes = (0..50).map(|_| post_json(&app, "/auth/passkey/finish", None, &body));
    let statuses: Vec<StatusCode> = futures::future::join_all(finishes)
        .await
        .into_iter()
        .map(|response| response.status())
        .collect();
    let won = statuses
        .iter()
        .filter(|status| **status == StatusCode::OK)
        .count();
    assert_eq!(won, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|status| *status == StatusCode::OK || *status == StatusCode::NOT_FOUND),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn of_fifty_concurrent_finishes_of_one_assertion_exactly_one_wins_on_postgres() {
    fifty_concurrent_finishes(Store::Postgres).await;
}

#[tokio::test]
async fn of_fifty_concurrent_finishes_of_one_assertion_exactly_one_wins_embedded() {
    fifty_concurrent_finishes(Store::Embedded).await;
}

#[tokio::test]
async fn a_response_from_another_origin_is_refused() {
    let app = spawn_app(Store::Embedded).await;
    let (_, user_id, access, token, credential_id) = user_with_passkey(&app, "origin").await;
    // A page on another host under the same RP id, not among the accepted origins.
    let elsewhere = "https://phish.localhost";
    let body = passwordless_assertion(&app, &token, &credential_id, &user_id, elsewhere).await;
    let response = post_json(&app, "/auth/passkey/finish", None, &body).await;
    assert_eq!(
        code_of(response).await,
        (StatusCode::FORBIDDEN, "passkey.wrong_origin".to_owned())
    );
    let (challenge_id, public_key) = start_registration(&app, &access, &the_sign_in()).await;
    let credential = Token::new().register(elsewhere, &public_key);
    let response = post_json(
        &app,
        "/passkeys/registration/finish",
        Some(&access),
        &json!({ "challenge_id": challenge_id, "name": "phish", "credential": credential }),
    )
    .await;
    assert_eq!(
        code_of(response).await,
        (StatusCode::FORBIDDEN, "passkey.wrong_origin".to_owned())
    );
}

#[tokio::test]
async fn a_copied_authenticator_whose_counter_went_back_is_refused_recorded_and_notified() {
    let app = spawn_app(Store::Postgres).await;
    let (email, user_id, access, token, credential_id) = user_with_passkey(&app, "clone").await;
    let copy = token.copy();
    for _ in 0..2 {
        let body = passwordless_assertion(&app, &token, &credential_id, &user_id, ORIGIN).await;
        let response = post_json(&app, "/auth/passkey/finish", None, &body).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // The copy signs with a counter the original already passed: a valid signature, refused.
    let body = passwordless_assertion(&app, &copy, &credential_id, &user_id, ORIGIN).await;
    let response = post_json(&app, "/auth/passkey/finish", None, &body).await;
    assert_eq!(code_of(response).await, refused());
    let history = history_types(&app, &access).await;
    assert!(
        history
            .iter()
            .any(|entry| entry == "passkey_counter_regressed"),
        "{history:?}"
    );
    app.wait_for_email(
        &email,
        "A passkey sign-in to your Twofold account was refused",
    )
    .await;
    // The original goes on working.
    let body = passwordless_assertion(&app, &token, &credential_id, &user_id, ORIGIN).await;
    let response = post_json(&app, "/auth/passkey/finish", None, &body).await;
    assert_eq!(response.status(), StatusCode::OK);

    let page = scrape(&app).await;
    let logins = "twofold_logins_total";
    let step = ("step", "passkey_passwordless");
    assert_eq!(sample(&page, logins, &[step, ("outcome", "ok")]), Some(3.0));
    assert_eq!(
        sample(&page, logins, &[step, ("outcome", "counter_regressed")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_ceremony_started_on_one_instance_finishes_on_another() {
    let first = spawn_app(Store::Postgres).await;
    let second = first.another_instance().await;
    let (email, _, _, token, _) = user_with_passkey(&first, "cross").await;
    let pre_tfa = second.login_token(&email, StatusCode::ACCEPTED).await;
    let assertion = second_factor_assertion(&first, &pre_tfa, &token).await;
    let response = post_json(&second, "/tfa/passkey/finish", Some(&pre_tfa), &assertion).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_expired_ceremony_is_refused() {
    let app = spawn_app(Store::Postgres).await;
    let (_, user_id, _, token, credential_id) = user_with_passkey(&app, "expired").await;
    let body = passwordless_assertion(&app, &token, &credential_id, &user_id, ORIGIN).await;
    let challenge_id = uuid::Uuid::parse_str(body["challenge_id"].as_str().unwrap()).unwrap();
    let aged = sqlx::query(
        "UPDATE webauthn_ceremonies SET expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(challenge_id)
    .execute(app.db.as_ref().unwrap())
    .await
    .unwrap();
    assert_eq!(aged.rows_affected(), 1);
    let response = post_json(&app, "/auth/passkey/finish", None, &body).await;
    assert_eq!(code_of(response).await, closed());
}

/// Once the re-authentication window after the sign-in has passed, a user whose only second
/// factor is a passkey adds or removes no factor with an access token and the password: they
/// sign in with the passkey again, and the change rests on that sign-in.
#[tokio::test]
async fn a_passkey_only_user_signs_in_with_the_passkey_again_to_change_their_factors() {
    const WINDOW: u64 = 3;
    let mut config = test_config(Store::Embedded, None, None);
    config.lifetimes.reauth_window = WINDOW;
    let app = spawn_app_with(config).await;
    let (email, _, stale, token, _) = user_with_passkey(&app, "stale").await;
    let list: Value = app
        .get_with("/passkeys", &stale)
        .await
        .json()
        .await
        .unwrap();
    let laptop_id = list[0]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_secs(WINDOW + 2)).await;

    let passkey_required = || {
        (
            StatusCode::FORBIDDEN,
            "reauthentication.passkey_required".to_owned(),
        )
    };
    let start = "/passkeys/registration/start";
    let with_password = post_json(&app, start, Some(&stale), &the_password()).await;
    assert_eq!(code_of(with_password).await, passkey_required());
    let on_old_sign_in = post_json(&app, start, Some(&stale), &the_sign_in()).await;
    assert_eq!(
        code_of(on_old_sign_in).await,
        (
            StatusCode::FORBIDDEN,
            "reauthentication.required".to_owned()
        )
    );
    let code_without_password = post_json(&app, start, Some(&stale), &json!({"code": "1"})).await;
    assert_eq!(
        code_of(code_without_password).await,
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid_body".to_owned()
        )
    );
    let authenticator_app = app.enable_tfa(&stale, "code_generator").await;
    assert_eq!(code_of(authenticator_app).await, passkey_required());
    let remove = format!("/passkeys/{laptop_id}/remove");
    let removed = post_json(&app, &remove, Some(&stale), &the_password()).await;
    assert_eq!(code_of(removed).await, passkey_required());
    let others = post_json(
        &app,
        "/auth/sessions/end_others",
        Some(&stale),
        &the_password(),
    )
    .await;
    assert_eq!(code_of(others).await, passkey_required());
    let erased = app
        .http
        .delete(app.url("/users/me"))
        .bearer_auth(&stale)
        .json(&the_password())
        .send()
        .await
        .unwrap();
    assert_eq!(code_of(erased).await, passkey_required());

    // Signing in again with the passkey is the re-authentication.
    let pre_tfa = app.login_token(&email, StatusCode::ACCEPTED).await;
    let assertion = second_factor_assertion(&app, &pre_tfa, &token).await;
    let response = post_json(&app, "/tfa/passkey/finish", Some(&pre_tfa), &assertion).await;
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let fresh = tokens["access_token"].as_str().unwrap().to_owned();
    register(&app, &fresh, &the_sign_in(), &Token::new(), "phone").await;
    let enabled = app.enable_tfa(&fresh, "email").await;
    assert_eq!(enabled.status(), StatusCode::OK);

    // None of the refused attempts changed anything, and none counts as a failed proof.
    let names: Vec<String> = app
        .get_with("/passkeys", &fresh)
        .await
        .json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|passkey| passkey["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["laptop", "phone"]);
    let history = history_types(&app, &fresh).await;
    assert!(
        !history.iter().any(|entry| entry == "login_failed"),
        "{history:?}"
    );
}
