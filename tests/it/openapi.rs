//! The OpenAPI document at `/openapi.json` and Swagger UI at `/docs`: every route is
//! documented, every documented operation is served, the document is valid OpenAPI 3.1, and
//! Swagger UI renders it in a real browser with no internet access.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use twofold_domain::values::{MAX_FULL_NAME_CHARS, MIN_FULL_NAME_CHARS};
use uuid::Uuid;

use crate::helpers::{
    problem, signup_body, spawn_app, spawn_app_with, test_config, unique_email, Store, TestApp,
};

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// `path` on the service, outside `/api/v1`.
fn root_url(app: &TestApp, path: &str) -> String {
    format!("{}{path}", app.address)
}

async fn document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(root_url(app, "/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// A fresh directory for this test's files, under the target directory.
fn scratch_dir(label: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{label}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The documented path with each `{parameter}` replaced by a fresh UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                Uuid::new_v4().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_documented_operation_is_served_and_answers_as_documented() {
    let app = spawn_app(Store::Postgres).await;
    let document = document(&app).await;
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/v1/auth/signup"), "{paths:?}");

    for (path, item) in paths {
        let url = root_url(&app, &concrete(path));
        for method in METHODS {
            let verb = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // No token and no body: no documented operation gets as far as a 404 of its own,
            // so a 404 is the router's fallback and a 405 a method the router does not serve.
            let response = app.http.request(verb, &url).send().await.unwrap();
            let status = response.status();
            let Some(operation) = item.get(method) else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented"
                );
                continue;
            };
            assert!(
                status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is documented but not served ({status})"
            );
            let documented = &operation["responses"][status.as_str()];
            assert!(
                documented.is_object(),
                "{method} {path} answered {status}, which it does not document"
            );
            if status.is_client_error() || status.is_server_error() {
                let code = response.json::<Value>().await.unwrap()["code"].clone();
                let code = code.as_str().unwrap();
                let examples = &documented["content"]["application/problem+json"]["examples"];
                assert!(
                    examples.get(code).is_some(),
                    "{method} {path} answered {status} `{code}`, which it does not document"
                );
            }
        }
    }
}

/// The operation at `method` `path` (under `/api/v1`) in `document`.
fn operation<'a>(document: &'a Value, method: &str, path: &str) -> &'a Value {
    let operation = &document["paths"][format!("/api/v1{path}")][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    operation
}

/// The schema of the query parameter `name` of `operation`.
fn query_parameter<'a>(operation: &'a Value, name: &str) -> &'a Value {
    operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|parameter| parameter["name"] == name && parameter["in"] == "query")
        .map(|parameter| &parameter["schema"])
        .unwrap_or_else(|| panic!("no query parameter `{name}`"))
}

#[tokio::test]
async fn the_empty_200_of_sign_up_and_enrolments_is_documented_without_content() {
    let app = spawn_app(Store::Embedded).await;
    let document = document(&app).await;

    for (method, path) in [
        ("post", "/auth/signup"),
        ("put", "/tfa/enable_tfa"),
        ("put", "/tfa/switch_device"),
    ] {
        let ok = &operation(&document, method, path)["responses"]["200"];
        assert!(ok.is_object(), "{method} {path}: no 200");
        assert!(
            ok.get("content").is_none(),
            "{method} {path}: its 200 is empty unless a QR code is asked for, yet it documents \
             {}",
            ok["content"]
        );
    }
    let signed_up = app.signup(&signup_body(&unique_email("empty"), None)).await;
    assert_eq!(signed_up.status(), StatusCode::OK);
    assert!(signed_up.headers().get("content-type").is_none());
    assert!(signed_up.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn grant_type_is_documented_as_the_enum_the_login_takes() {
    let app = spawn_app(Store::Embedded).await;
    let document = document(&app).await;
    let grant_type = &document["components"]["schemas"]["LoginForm"]["properties"]["grant_type"];

    assert_eq!(grant_type["type"], "string", "{grant_type}");
    assert_eq!(grant_type["enum"], json!(["password", ""]), "{grant_type}");
    let email = unique_email("grant");
    app.signup(&signup_body(&email, None)).await;
    for (grant, status) in [
        ("password", StatusCode::OK),
        ("", StatusCode::OK),
        ("client_credentials", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let response = app
            .http
            .post(app.url("/auth/login"))
            .form(&[
                ("username", email.as_str()),
                ("password", crate::helpers::PASSWORD),
                ("grant_type", grant),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "grant_type `{grant}`");
    }
}

#[tokio::test]
async fn full_name_is_documented_with_the_domain_s_length_limits() {
    let app = spawn_app(Store::Embedded).await;
    let document = document(&app).await;
    let full_name = &document["components"]["schemas"]["SignUpRequest"]["properties"]["full_name"];

    assert_eq!(full_name["minLength"], MIN_FULL_NAME_CHARS, "{full_name}");
    assert_eq!(full_name["maxLength"], MAX_FULL_NAME_CHARS, "{full_name}");
    for (length, status) in [
        (MIN_FULL_NAME_CHARS, StatusCode::OK),
        (MAX_FULL_NAME_CHARS, StatusCode::OK),
        (MAX_FULL_NAME_CHARS + 1, StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let mut body = signup_body(&unique_email("name"), None);
        body["full_name"] = json!("é".repeat(length));
        let response = app.signup(&body).await;
        assert_eq!(response.status(), status, "a name of {length} characters");
    }
    let mut blank = signup_body(&unique_email("blank"), None);
    blank["full_name"] = json!("   ");
    let (status, body) = problem(app.signup(&blank).await).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("user.invalid_full_name")
        )
    );
    let pattern = full_name["pattern"].as_str().unwrap();
    assert!(
        pattern.contains(r"[^\s"),
        "the pattern must ask for a character that is not white space: {pattern}"
    );
}

#[tokio::test]
async fn the_user_listing_documents_the_page_bounds_it_enforces_and_refuses_others_with_422() {
    let admin = unique_email("admin");
    let mut config = test_config(Store::Embedded, None, None);
    config.accounts.admin_emails = vec![admin.clone()];
    let app = spawn_app_with(config).await;
    app.signup(&signup_body(&admin, None)).await;
    let token = app.login_token(&admin, StatusCode::OK).await;
    let document = document(&app).await;
    let listing = operation(&document, "get", "/users/users");

    for name in ["page", "per_page"] {
        let schema = query_parameter(listing, name);
        let minimum = schema["minimum"]
            .as_u64()
            .unwrap_or_else(|| panic!("{schema}"));
        let maximum = schema["maximum"]
            .as_u64()
            .unwrap_or_else(|| panic!("{schema}"));
        assert_eq!(minimum, 1, "{name}");
        for value in [minimum, maximum] {
            let response = app
                .get_with(&format!("/users/users?{name}={value}"), &token)
                .await;
            assert_eq!(response.status(), StatusCode::OK, "{name}={value}");
        }
        for value in [minimum - 1, maximum + 1] {
            let response = app
                .get_with(&format!("/users/users?{name}={value}"), &token)
                .await;
            let (status, body) = problem(response).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some("request.invalid_query")
                ),
                "{name}={value}"
            );
        }
    }
}

/// Route registrations that bypass `utoipa_axum::routes!`, and so the OpenAPI document:
/// axum's own routing methods, wherever the service builds its router.
const UNDOCUMENTED_REGISTRATIONS: [&str; 3] = [".route(", ".route_service(", ".nest_service("];

/// Routes that exist only in test builds (the api's `test-routes` feature, which only the tests
/// crate enables), named by the constant of their path: a release build has none of them, and
/// the document must not list them.
const TEST_ONLY_ROUTES: [&str; 1] = ["TEST_PANIC_PATH"];

/// Routes that are no API operation, named by the constant of their path: the passkey page
/// and its script and stylesheet (`api/src/http/routes/account.rs`), which a browser loads and
/// which call the documented operations. Like `/docs`, the document does not list them.
const PAGE_ROUTES: [&str; 3] = [
    "PASSKEY_PAGE_PATH",
    "PASSKEY_PAGE_SCRIPT_PATH",
    "PASSKEY_PAGE_STYLE_PATH",
];

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, files);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn every_route_is_registered_through_the_openapi_router() {
    let api_src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/src");
    let mut files = Vec::new();
    rust_files(&api_src, &mut files);
    assert!(files.len() > 10, "no sources under {}", api_src.display());
    let mut bypasses = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if UNDOCUMENTED_REGISTRATIONS
                .iter()
                .any(|call| code.contains(call))
                && !TEST_ONLY_ROUTES.iter().any(|path| code.contains(path))
                && !PAGE_ROUTES
                    .iter()
                    .any(|path| code.contains(&format!(".route({path},")))
            {
                bypasses.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        bypasses.is_empty(),
        "these routes are missing from the OpenAPI document: declare each handler with \
         #[utoipa::path] and register it with utoipa_axum's routes!\n{}",
        bypasses.join("\n")
    );
}

#[tokio::test]
async fn the_document_validates_as_openapi_3_1() {
    let app = spawn_app(Store::Embedded).await;
    let document = document(&app).await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        document["openapi"]
    );
    let file = scratch_dir("openapi").join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&document).unwrap()).unwrap();

    let output = tokio::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .await
        .expect("python3 runs (scripts/test installs openapi-spec-validator)");

    assert!(
        output.status.success(),
        "openapi-spec-validator refused {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs headless Chromium with `arguments` in a fresh profile and returns its standard
/// output. The flags keep it off the network (this machine has none) and working as root.
async fn chromium(dir: &Path, arguments: &[&str]) -> String {
    let profile = dir.join(format!("profile-{}", Uuid::new_v4()));
    let run = tokio::process::Command::new("/usr/bin/chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(arguments)
        .kill_on_drop(true)
        .output();
    // A bound on a hung browser, not a speed requirement.
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("chromium finishes")
        .expect("/usr/bin/chromium runs (scripts/test installs Debian's chromium)");
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// What Swagger UI renders for the sign-up operation, once its scripts have run and the
/// document was fetched: it is in neither the static page nor its scripts.
const SIGN_UP_OPERATION: &str = r#"data-path="/api/v1/auth/signup""#;

#[tokio::test]
async fn swagger_ui_at_docs_renders_the_operations_in_headless_chromium() {
    let app = spawn_app(Store::Embedded).await;
    let docs = root_url(&app, "/docs/");
    let page = app.http.get(&docs).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(!page.text().await.unwrap().contains(SIGN_UP_OPERATION));
    let dir = scratch_dir("swagger-ui");

    // Virtual time runs the page's timers at once but waits for its network requests.
    let dom = chromium(&dir, &["--virtual-time-budget=30000", "--dump-dom", &docs]).await;

    assert!(
        dom.contains(SIGN_UP_OPERATION),
        "Swagger UI did not render the sign-up operation:\n{dom}"
    );
    assert!(
        dom.contains("opblock-post"),
        "no POST operation block:\n{dom}"
    );
    let screenshot = dir.join("docs.png");
    chromium(
        &dir,
        &[
            "--virtual-time-budget=30000",
            "--window-size=1280,1600",
            &format!("--screenshot={}", screenshot.display()),
            &docs,
        ],
    )
    .await;
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("Swagger UI screenshot: {}", screenshot.display());
}
