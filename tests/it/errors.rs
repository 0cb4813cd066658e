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
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
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
    twofold_api::admin::grant_admin(&app.config, &email)
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
