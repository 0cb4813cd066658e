//! The original service's clients keep working, every error is problem+json naming what is
//! wrong, and a first run meets no surprise (a missing database, the first admin).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

/// A client that shows redirects instead of following them.
fn not_following() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A `multipart/form-data` body of text fields, as a browser's `FormData` sends it.
fn multipart(fields: &[(&str, &str)]) -> (String, String) {
    let boundary = "----TwofoldFormBoundary7MA4YWxkTrZu0gW";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[tokio::test]
async fn the_root_answers_200_with_the_service_its_version_and_where_to_read_about_it() {
    let app = spawn_app(Store::Embedded).await;

    let response = app.http.get(&app.address).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["service"], "Twofold");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    for (link, path) in [
        ("docs", "/docs"),
        ("openapi", "/openapi.json"),
        ("health", "/health/ready"),
    ] {
        assert_eq!(body["links"][link], path);
        let target = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(target.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn sign_up_with_two_factor_and_a_null_or_missing_device_answers_400() {
    let app = spawn_app(Store::Embedded).await;
    let mut null_device = signup_body(&unique_email("nulldevice"), None);
    null_device["tfa_enabled"] = json!(true);
    let mut missing_device = null_device.clone();
    missing_device["email"] = json!(unique_email("nodevice"));
    missing_device.as_object_mut().unwrap().remove("device");

    for body in [null_device, missing_device] {
        let (status, problem) = problem(app.signup(&body).await).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(problem["code"], "tfa.device_required", "{body}");
    }
}

#[tokio::test]
async fn login_takes_a_multipart_form_as_well_as_an_urlencoded_one() {
    let app = spawn_app(Store::Embedded).await;
    let email = unique_email("multipart");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    let (content_type, body) = multipart(&[
        ("grant_type", "password"),
        ("username", &email),
        ("password", PASSWORD),
        ("scope", ""),
    ]);

    let response = app
        .http
        .post(app.url("/auth/login"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    let me = app
        .get_with("/auth/test-token", tokens["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), StatusCode::OK);

    // The same refusals as the urlencoded form: a wrong password, a missing field.
    let (content_type, body) = multipart(&[("username", &email), ("password", "not it at all")]);
    let wrong = app
        .http
        .post(app.url("/auth/login"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, problem_body) = problem(wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem_body["code"], "auth.invalid_credentials");
    let (content_type, body) = multipart(&[("username", &email)]);
    let incomplete = app
        .http
        .post(app.url("/auth/login"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let (status, problem_body) = problem(incomplete).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem_body["code"], "request.invalid_form");
    assert_eq!(problem_body["detail"], "the field `password` is missing");
    // A multipart body cut short is a 400, not a 500.
    let truncated = app
        .http
        .post(app.url("/auth/login"))
        .header(
            "content-type",
            "multipart/form-data; boundary=----TwofoldFormBoundary7MA4YWxkTrZu0gW",
        )
        .body("------TwofoldFormBoundary7MA4YWxkTrZu0gW\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nada")
        .send()
        .await
        .unwrap();
    let (status, problem_body) = problem(truncated).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem_body["code"], "request.invalid_form");
}

#[tokio::test]
async fn a_trailing_slash_is_redirected_307_to_the_path_without_it_query_included() {
    let app = spawn_app(Store::Embedded).await;
    let client = not_following();

    for (method, path, expected) in [
        (Method::POST, "/api/v1/auth/signup/", "/api/v1/auth/signup"),
        (
            Method::GET,
            "/api/v1/tasks/taskstatus/?task_id=abc&x=1",
            "/api/v1/tasks/taskstatus?task_id=abc&x=1",
        ),
        (Method::GET, "/health/ready//", "/health/ready"),
    ] {
        let response = client
            .request(method.clone(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();

        assert_eq!(
            response.status(),
            StatusCode::TEMPORARY_REDIRECT,
            "{method} {path}"
        );
        assert_eq!(response.headers()["location"], expected, "{method} {path}");
    }

    // A client that follows (as the original's did) signs up through the redirect: a 307
    // keeps the method and the body.
    let email = unique_email("slash");
    let followed = app
        .http
        .post(format!("{}/api/v1/auth/signup/", app.address))
        .json(&signup_body(&email, None))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), StatusCode::OK);
    assert_eq!(
        app.login(&email, PASSWORD).await.status(),
        StatusCode::OK,
        "the account exists"
    );

    // No redirect to another site (`//host` is one for a browser), and none for a path that
    // has no slash to drop.
    for path in ["//evil.example/", "/nope"] {
        let response = client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["code"], "request.not_found", "{path}");
    }
}

#[tokio::test]
async fn a_json_endpoint_reads_a_body_without_content_type_as_json() {
    let app = spawn_app(Store::Embedded).await;
    let email = unique_email("nocontenttype");

    let response = app
        .http
        .post(app.url("/auth/signup"))
        .body(signup_body(&email, None).to_string())
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let tokens = app.login_expecting(&email, StatusCode::OK).await;
    let refreshed = app
        .http
        .post(app.url("/auth/refresh"))
        .body(json!({ "refresh_token": tokens["refresh_token"] }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);
    // A body that says it is something else is still refused.
    let text = app
        .http
        .post(app.url("/auth/signup"))
        .header("content-type", "text/plain")
        .body(signup_body(&unique_email("text"), None).to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = problem(text).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["code"], "request.unsupported_media_type");
}

#[tokio::test]
async fn a_method_the_path_does_not_take_and_a_uri_too_long_answer_problem_json() {
    let app = spawn_app(Store::Embedded).await;

    let wrong_method = app
        .http
        .delete(app.url("/auth/signup"))
        .send()
        .await
        .unwrap();
    let allow = wrong_method.headers()["allow"].to_str().unwrap().to_owned();
    let (status, body) = problem(wrong_method).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "request.method_not_allowed");
    assert!(allow.contains("POST"), "{allow}");

    let long = format!("/auth/test-token?padding={}", "x".repeat(10 * 1024));
    let (status, body) = problem(app.http.get(app.url(&long)).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::URI_TOO_LONG);
    assert_eq!(body["code"], "request.uri_too_long");

    // Every problem carries the security headers too.
    let response = app
        .http
        .put(format!("{}/health/live", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["code"], "request.method_not_allowed");
}

#[tokio::test]
async fn validation_messages_name_the_field_and_say_what_is_wrong() {
    let app = spawn_app(Store::Embedded).await;
    let email = unique_email("messages");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    let access = app.login_token(&email, StatusCode::OK).await;
    let post_body = |body: &'static str| {
        app.http
            .post(app.url("/auth/signup"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let cases = [
        (
            post_body(r#"{"email": 5, "full_name": "A", "password": "x"}"#)
                .await
                .unwrap(),
            "request.invalid_body",
            "the field `email` must be a string, not a number",
        ),
        (
            post_body(r#"{"email": "a@example.com", "full_name": "A", "password": "long enough", "tfa_enabled": "yes"}"#)
                .await
                .unwrap(),
            "request.invalid_body",
            "the field `tfa_enabled` must be a boolean, not a string",
        ),
        (
            post_body(r#"{"email": "a@example.com", "full_name": "A", "password": "long enough", "tfa_enabled": true, "device": {"device_type": "carrier_pigeon"}}"#)
                .await
                .unwrap(),
            "request.invalid_body",
            "the field `device.device_type` must be `email` or `code_generator`",
        ),
        (
            post_body(r#"{"email": "a@example.com", "password": "long enough"}"#)
                .await
                .unwrap(),
            "request.invalid_body",
            "the field `full_name` is missing",
        ),
        (
            post_body(r#""just a string""#).await.unwrap(),
            "request.invalid_body",
            "the body must be an object, not a string",
        ),
        (
            post_body("").await.unwrap(),
            "request.malformed_json",
            "the body is empty; a JSON object is expected",
        ),
        (
            post_body(r#"{"email": "#).await.unwrap(),
            "request.malformed_json",
            "the body is not valid JSON: it ends at line 1, column 10, before the JSON is complete",
        ),
        (
            post_body(r#"{"email" "a"}"#).await.unwrap(),
            "request.malformed_json",
            "the body is not valid JSON at line 1, column 10: expected `:`",
        ),
        (
            app.http
                .get(app.url("/tasks/taskstatus?task_id=abc"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap(),
            "request.invalid_query",
            "the field `task_id` must be a UUID (like 67e55044-10b1-426f-9247-bb680e5fe0c8)",
        ),
        (
            app.http
                .get(app.url("/tasks/taskstatus"))
                .bearer_auth(&access)
                .send()
                .await
                .unwrap(),
            "request.invalid_query",
            "the field `task_id` is missing",
        ),
        (
            app.http
                .post(app.url("/auth/login"))
                .form(&[("username", email.as_str())])
                .send()
                .await
                .unwrap(),
            "request.invalid_form",
            "the field `password` is missing",
        ),
    ];
    for (response, code, detail) in cases {
        let (status, body) = problem(response).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            (body["code"].as_str(), body["detail"].as_str()),
            (Some(code), Some(detail))
        );
    }
}

#[tokio::test]
async fn a_password_of_only_spaces_or_one_repeated_character_is_refused_as_too_weak() {
    let app = spawn_app(Store::Embedded).await;

    for weak in [" ".repeat(12), "x".repeat(20)] {
        let mut body = signup_body(&unique_email("weak"), None);
        body["password"] = json!(weak);

        let (status, problem_body) = problem(app.signup(&body).await).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{weak:?}");
        assert_eq!(problem_body["code"], "user.password_too_weak", "{weak:?}");
    }
}

#[tokio::test]
async fn a_missing_database_is_created_at_the_first_start() {
    let server = std::env::var("TWOFOLD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let name = twofold_tests::scratch::database_name();
    let database_url = format!("{server}/{name}");
    let config = test_config(
        Store::Postgres,
        Some(database_url.clone()),
        Some(default_nats_url()),
    );

    // The app holds the database as a scratch resource: it is dropped when the test ends.
    let app = spawn_app_with(config).await;

    let email = unique_email("firstrun");
    assert_eq!(
        app.signup(&signup_body(&email, None)).await.status(),
        StatusCode::OK
    );
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    assert!(
        logs.lines().any(
            |line| line.contains("the database did not exist: created it") && line.contains(&name)
        ),
        "no log line says the database was created"
    );
}

/// Whether the user with `email` is an admin, as the admin endpoint tells them.
async fn is_admin(app: &TestApp, email: &str) -> bool {
    let access = app.login_token(email, StatusCode::OK).await;
    let status = app.get_with("/users/users", &access).await.status();
    assert!(
        status == StatusCode::OK || status == StatusCode::FORBIDDEN,
        "{status}"
    );
    status == StatusCode::OK
}

#[tokio::test]
async fn configured_admin_emails_get_the_role_at_start_up_and_at_sign_up_on_postgres() {
    let app = spawn_app(Store::Postgres).await;
    let existing = unique_email("existingadmin");
    let later = unique_email("lateradmin");
    let bystander = unique_email("bystander");
    for email in [&existing, &bystander] {
        assert_eq!(
            app.signup(&signup_body(email, None)).await.status(),
            StatusCode::OK
        );
    }
    assert!(!is_admin(&app, &existing).await);

    // A second start with the addresses configured (one in another letter case).
    let mut config = app.config.clone();
    config.accounts.admin_emails = vec![existing.to_uppercase(), later.clone()];
    let configured = spawn_app_with(config).await;

    assert!(
        is_admin(&configured, &existing).await,
        "granted at start-up"
    );
    assert_eq!(
        configured.signup(&signup_body(&later, None)).await.status(),
        StatusCode::OK
    );
    assert!(is_admin(&configured, &later).await, "granted at sign-up");
    assert!(!is_admin(&configured, &bystander).await);

    // Each grant is an `AdminGranted` event whose actor is the configuration.
    let actors: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'actor' FROM events WHERE event_type = 'AdminGranted' \
         ORDER BY sequence",
    )
    .fetch_all(app.db.as_ref().unwrap())
    .await
    .unwrap();
    assert_eq!(actors, ["config", "config"]);

    // A third start grants nothing again.
    let mut config = configured.config.clone();
    config.accounts.admin_emails = vec![existing.clone(), later.clone()];
    let _again = spawn_app_with(config).await;
    let grants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'AdminGranted'")
            .fetch_one(app.db.as_ref().unwrap())
            .await
            .unwrap();
    assert_eq!(grants, 2);
}

#[tokio::test]
async fn a_configured_admin_email_gets_the_role_at_sign_up_in_the_embedded_mode() {
    let admin = unique_email("embeddedadmin");
    let mut config = test_config(Store::Embedded, None, None);
    config.accounts.admin_emails = vec![admin.clone()];
    let app = spawn_app_with(config).await;
    let user = unique_email("embeddeduser");

    for email in [&admin, &user] {
        assert_eq!(
            app.signup(&signup_body(email, None)).await.status(),
            StatusCode::OK
        );
    }

    assert!(is_admin(&app, &admin).await);
    assert!(!is_admin(&app, &user).await);
    let access = app.login_token(&admin, StatusCode::OK).await;
    let history: Value = app
        .get_with("/users/me/history", &access)
        .await
        .json()
        .await
        .unwrap();
    let granted = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["type"] == "admin_granted")
        .cloned()
        .unwrap_or_else(|| panic!("no admin_granted entry: {history}"));
    assert_ne!(granted["by"], "self");
}
