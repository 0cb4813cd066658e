//! Bad input gets a clear problem+json answer with a stable code, never a 500.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn bad_requests_get_problem_details_with_stable_codes() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("errors");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );

    // A duplicate sign-up, in another letter case, is 409.
    let (status, body) = problem(app.signup(&signup_body(&email.to_uppercase(), None)).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "user.email_taken");

    // A wrong password and an unknown email answer exactly alike.
    let wrong = app.login(&email, "not the password at all").await;
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    let (wrong_status, wrong_body) = problem(wrong).await;
    let (unknown_status, unknown_body) =
        problem(app.login(&unique_email("nobody"), PASSWORD).await).await;
    assert_eq!(wrong_status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_body["code"], "auth.invalid_credentials");
    assert_eq!((wrong_status, &wrong_body), (unknown_status, &unknown_body));
    let (status, body) = problem(app.login("not an email", PASSWORD).await).await;
    assert_eq!((status, &body), (unknown_status, &unknown_body));

    // Malformed JSON, a wrong content type, missing fields.
    let malformed = app
        .http
        .post(app.url("/auth/signup"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    let (status, body) = problem(malformed).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "request.malformed_json");

    let form = app
        .http
        .post(app.url("/auth/signup"))
        .form(&[("email", "a@example.com")])
        .send()
        .await
        .unwrap();
    let (status, body) = problem(form).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["code"], "request.unsupported_media_type");

    let json_login = app
        .http
        .post(app.url("/auth/login"))
        .json(&json!({ "username": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(json_login).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["code"], "request.unsupported_media_type");

    for incomplete in [
        json!({ "full_name": "A", "password": PASSWORD }),
        json!({ "email": unique_email("x"), "full_name": "A" }),
        json!({ "email": unique_email("x"), "password": PASSWORD }),
        json!({ "email": 5, "full_name": "A", "password": PASSWORD }),
        json!({ "email": unique_email("x"), "full_name": "A", "password": PASSWORD,
                "tfa_enabled": true, "device": { "device_type": "carrier_pigeon" } }),
    ] {
        let (status, body) = problem(app.signup(&incomplete).await).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{incomplete}");
        assert_eq!(body["code"], "request.invalid_body", "{incomplete}");
        assert!(body["detail"].as_str().unwrap().len() > 5);
    }

    let missing_form_field = app
        .http
        .post(app.url("/auth/login"))
        .form(&[("username", email.as_str())])
        .send()
        .await
        .unwrap();
    let (status, body) = problem(missing_form_field).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "request.invalid_form");

    // Domain validation: weak password, bad email, 2FA without a device.
    let mut weak = signup_body(&unique_email("weak"), None);
    weak["password"] = json!("short");
    let (status, body) = problem(app.signup(&weak).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "user.password_too_short");

    let mut empty = signup_body(&unique_email("empty"), None);
    empty["password"] = json!("");
    let (_, body) = problem(app.signup(&empty).await).await;
    assert_eq!(body["code"], "user.password_too_short");

    let (status, body) = problem(app.signup(&signup_body("no-at-sign", None)).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["code"], "user.invalid_email");

    let mut no_device = signup_body(&unique_email("nodevice"), None);
    no_device["tfa_enabled"] = json!(true);
    let (status, body) = problem(app.signup(&no_device).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "tfa.device_required");

    // `tfa_enabled` and `device` may be left out (the original answered 500).
    let minimal =
        json!({ "email": unique_email("minimal"), "full_name": "A", "password": PASSWORD });
    assert_eq!(app.signup(&minimal).await.status(), StatusCode::OK);

    // Unknown paths are problem+json too.
    let (status, body) = problem(app.http.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "request.not_found");

    // No refused request left a partial write: one user with this email, nothing else.
    let db = app.db.as_ref().unwrap();
    let reservations: i64 = sqlx::query_scalar("SELECT count(*) FROM user_emails")
        .fetch_one(db)
        .await
        .unwrap();
    let signups: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'SignedUp'")
            .fetch_one(db)
            .await
            .unwrap();
    assert_eq!((reservations, signups), (2, 2));
}

#[tokio::test]
async fn malformed_path_parameters_get_problem_details() {
    let app = spawn_app(Store::Postgres).await;
    let email = unique_email("paths");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    twofold_api::operator::grant_admin(&app.config, &email)
        .await
        .unwrap();
    let access = app.login_token(&email, StatusCode::OK).await;

    let requests = [
        (
            reqwest::Method::DELETE,
            "/auth/sessions/not-a-uuid",
            "session_id",
        ),
        (reqwest::Method::POST, "/users/not-a-uuid/lock", "user_id"),
        (reqwest::Method::POST, "/users/12345/unlock", "user_id"),
        (
            reqwest::Method::DELETE,
            "/users/%E2%9C%93/sessions",
            "user_id",
        ),
    ];
    for (method, path, parameter) in requests {
        let response = app
            .http
            .request(method.clone(), app.url(path))
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{method} {path}");
        assert_eq!(body["code"], "request.invalid_path", "{method} {path}");
        assert_eq!(
            body["detail"],
            format!("the path parameter `{parameter}` is not valid"),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn refused_authorisation_locked_accounts_and_refused_proofs_are_logged_as_security_events() {
    let app = spawn_app(Store::Postgres).await;
    let admin = unique_email("admin");
    assert_eq!(
        app.signup(&signup_body(&admin, None)).await.status(),
        StatusCode::OK
    );
    twofold_api::operator::grant_admin(&app.config, &admin)
        .await
        .unwrap();
    let admin_access = app.login_token(&admin, StatusCode::OK).await;
    let user = unique_email("refused");
    let seed = app.signup_with_authenticator(&user).await;
    let pre_tfa = app.login_expecting(&user, StatusCode::ACCEPTED).await;
    let tokens: serde_json::Value = app
        .post_with(
            &format!("/tfa/login_tfa?tfa_token={}", current_code(&seed)),
            pre_tfa["access_token"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();

    // Each refused request carries its own request id, so its log line can be found.
    let send = |request: reqwest::RequestBuilder| async move {
        let request_id = uuid::Uuid::new_v4().to_string();
        let response = request
            .header("x-request-id", &request_id)
            .send()
            .await
            .unwrap();
        let (status, body) = problem(response).await;
        (
            request_id,
            status,
            body["code"].as_str().unwrap().to_owned(),
        )
    };
    let mut refused = Vec::new();
    // A refused 2FA-management proof.
    refused.push(
        send(
            app.http
                .post(app.url("/tfa/backup_codes"))
                .bearer_auth(&access)
                .json(&json!({ "code": "NOT0-A0CO-DE00" })),
        )
        .await,
    );
    // A non-admin at an admin endpoint, and a forged token.
    refused.push(send(app.http.get(app.url("/users/users")).bearer_auth(&access)).await);
    refused.push(
        send(
            app.http
                .get(app.url("/auth/sessions"))
                .bearer_auth("not.a.token"),
        )
        .await,
    );
    // An account an admin locked: its login with the right password is refused.
    let users: Vec<serde_json::Value> = app
        .get_with("/users/users", &admin_access)
        .await
        .json()
        .await
        .unwrap();
    let user_id = users
        .iter()
        .find(|listed| listed["email"] == user.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lock = app
        .http
        .post(app.url(&format!("/users/{user_id}/lock")))
        .bearer_auth(&admin_access)
        .send()
        .await
        .unwrap();
    assert_eq!(lock.status(), StatusCode::NO_CONTENT);
    refused.push(
        send(
            app.http
                .post(app.url("/auth/login"))
                .form(&[("username", user.as_str()), ("password", PASSWORD)]),
        )
        .await,
    );

    let expected = [
        (StatusCode::FORBIDDEN, "tfa.invalid_code"),
        (StatusCode::FORBIDDEN, "auth.admin_only"),
        (StatusCode::UNAUTHORIZED, "auth.invalid_token"),
        (StatusCode::FORBIDDEN, "auth.account_locked"),
    ];
    for ((request_id, status, code), (expected_status, expected_code)) in
        refused.iter().zip(expected)
    {
        assert_eq!((*status, code.as_str()), (expected_status, expected_code));
        let lines = log_lines_of(request_id);
        assert!(
            lines.iter().any(|line| line.contains("security")
                && line.contains("request refused")
                && line.contains(&format!("code=\"{code}\""))),
            "no security line for {code}: {lines:#?}"
        );
        for line in &lines {
            assert!(!line.contains(PASSWORD) && !line.contains("NOT0-A0CO-DE00"));
        }
    }
}
