//! The passkey page at `/account/passkeys`: a real browser (headless Chromium with the
//! DevTools virtual authenticator) signs in with a password, registers a passkey, signs in
//! with it alone and as the second step after the password, renames and removes it, all
//! through the page, and a user with an authenticator app signs in with codes and adds and
//! removes a passkey with them; and the page and its assets carry a strict content security
//! policy and nothing inline.

use std::net::TcpListener;
use std::time::Duration;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use twofold_api::Config;

use crate::devtools::Browser;
use crate::helpers::{
    current_code, signup_body, spawn_app_with, test_config, unique_email, Store, TestApp, PASSWORD,
};

const PAGE_PATH: &str = "/account/passkeys";
const ASSETS: [&str; 2] = ["/account/passkeys.js", "/account/passkeys.css"];

/// The policy the page and its assets are served with.
const STRICT_POLICY: [&str; 8] = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "connect-src 'self'",
    "img-src 'self'",
    "form-action 'none'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
];

/// A bound on each step of the page (a hung browser or page fails with a message).
const STEP: Duration = Duration::from_secs(30);

/// What the page shows as a failure, or the empty string.
const PAGE_PROBLEM: &str = "document.getElementById('problem')?.hidden === false \
     ? document.getElementById('problem').textContent : ''";

/// The embedded service on a port of its own, accepting passkeys from the page as a browser
/// loads it: from `http://localhost:<port>` (the relying party id is `localhost`, which an
/// address such as 127.0.0.1 is not).
async fn spawn_page_app(configure: impl FnOnce(&mut Config)) -> (TestApp, String) {
    // The port is chosen before the start because the accepted origin names it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = test_config(Store::Embedded, None, None);
    config.http.addr = ([127, 0, 0, 1], port).into();
    config.webauthn.webauthn_rp_id = "localhost".to_owned();
    let origin = format!("http://localhost:{port}");
    config.webauthn.webauthn_origins = origin.clone();
    configure(&mut config);
    (spawn_app_with(config).await, origin)
}

/// `text` as a JavaScript string literal.
fn literal(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

/// Types `value` into the page's input `id`.
async fn type_into(browser: &mut Browser, id: &str, value: &str) {
    browser
        .evaluate(&format!(
            "document.getElementById({}).value = {}",
            literal(id),
            literal(value)
        ))
        .await;
}

/// Clicks the page's element `selector` (a submit button submits its form).
async fn click(browser: &mut Browser, selector: &str) {
    browser
        .evaluate(&format!(
            "document.querySelector({}).click()",
            literal(selector)
        ))
        .await;
}

/// Whether the page shows its section `id`.
fn showing(id: &str) -> String {
    format!("!document.getElementById({}).hidden", literal(id))
}

/// The failure the page shows, once it shows one.
async fn page_problem(browser: &mut Browser) -> String {
    browser.wait_for(&showing("problem"), "''", STEP).await;
    text_of(browser, "#problem").await
}

async fn text_of(browser: &mut Browser, selector: &str) -> String {
    browser
        .evaluate(&format!(
            "document.querySelector({}).textContent",
            literal(selector)
        ))
        .await
        .as_str()
        .unwrap()
        .to_owned()
}

/// The signed-in user's passkeys, asked over HTTP with the access token the page holds (a
/// password login now needs the passkey as its second step).
async fn passkeys_over_http(app: &TestApp, browser: &mut Browser) -> Vec<Value> {
    let token = browser.evaluate("session.access").await;
    let token = token.as_str().expect("the page holds an access token");
    let response = app.get_with("/passkeys", token).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Vec<Value>>().await.unwrap()
}

/// Headless Chromium with a virtual authenticator (a platform one that keeps discoverable
/// credentials and verifies its user), on the page at `origin`, ready; and the
/// authenticator's id.
async fn open_page(origin: &str) -> (Browser, Value) {
    let mut browser = Browser::launch("passkey-page").await;
    browser
        .command(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 900, "height": 1100, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    // A headless page has no window focus, and WebAuthn refuses an unfocused document.
    browser
        .command(
            "Emulation.setFocusEmulationEnabled",
            json!({"enabled": true}),
        )
        .await;
    browser
        .command("WebAuthn.enable", json!({"enableUI": false}))
        .await;
    let authenticator = browser
        .command(
            "WebAuthn.addVirtualAuthenticator",
            json!({"options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
                "automaticPresenceSimulation": true,
            }}),
        )
        .await["authenticatorId"]
        .clone();
    browser
        .command(
            "Page.navigate",
            json!({"url": format!("{origin}{PAGE_PATH}")}),
        )
        .await;
    browser
        .wait_for(
            "document.documentElement?.dataset.ready === 'true'",
            PAGE_PROBLEM,
            STEP,
        )
        .await;
    (browser, authenticator)
}

/// Signs in through the page's form with `email` and the password.
async fn submit_password(browser: &mut Browser, email: &str) {
    type_into(browser, "email", email).await;
    type_into(browser, "password", PASSWORD).await;
    click(browser, "#password-form button[type=submit]").await;
}

#[tokio::test]
async fn a_browser_registers_a_passkey_on_the_page_and_signs_in_with_it_alone() {
    let (app, origin) = spawn_page_app(|_| ()).await;
    let email = unique_email("page");
    let signed_up = app.signup(&signup_body(&email, None)).await;
    assert_eq!(signed_up.status(), StatusCode::OK);
    let (mut browser, authenticator) = open_page(&origin).await;

    // Bad input gets a message on the page.
    type_into(&mut browser, "email", &email).await;
    click(&mut browser, "#password-form button[type=submit]").await;
    assert_eq!(page_problem(&mut browser).await, "Enter your password.");
    type_into(&mut browser, "password", "not the password").await;
    click(&mut browser, "#password-form button[type=submit]").await;
    let problem = page_problem(&mut browser).await;
    assert!(problem.contains("auth.invalid_credentials"), "{problem}");

    type_into(&mut browser, "password", PASSWORD).await;
    click(&mut browser, "#password-form button[type=submit]").await;
    browser
        .wait_for(&showing("signed-in"), PAGE_PROBLEM, STEP)
        .await;
    assert!(text_of(&mut browser, "#who").await.contains(&email));
    assert!(browser.evaluate(&showing("no-passkeys")).await == true);

    // Register a passkey through the page.
    type_into(&mut browser, "new-name", "headless laptop").await;
    type_into(&mut browser, "proof-password", PASSWORD).await;
    click(&mut browser, "#register-form button[type=submit]").await;
    browser
        .wait_for(
            "document.querySelectorAll('#passkeys li').length === 1",
            PAGE_PROBLEM,
            STEP,
        )
        .await;
    assert_eq!(
        text_of(&mut browser, "#passkeys li .passkey-name").await,
        "headless laptop"
    );

    let passkeys = passkeys_over_http(&app, &mut browser).await;
    assert_eq!(passkeys.len(), 1, "{passkeys:?}");
    assert_eq!(passkeys[0]["name"], "headless laptop");
    let credentials = browser
        .command(
            "WebAuthn.getCredentials",
            json!({"authenticatorId": authenticator}),
        )
        .await;
    let credentials = credentials["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(credentials[0]["isResidentCredential"], true);
    assert_eq!(credentials[0]["rpId"], "localhost");

    // Sign out: the page forgets the token and shows the sign-in form again.
    click(&mut browser, "#sign-out").await;
    browser
        .wait_for(&showing("signed-out"), PAGE_PROBLEM, STEP)
        .await;
    assert_eq!(text_of(&mut browser, "#who").await, "");
    assert!(browser.evaluate("session.access === null").await == true);

    // Sign in with the passkey alone: no email, no password.
    click(&mut browser, "#passkey-sign-in").await;
    browser
        .wait_for(&showing("signed-in"), PAGE_PROBLEM, STEP)
        .await;
    assert!(text_of(&mut browser, "#who").await.contains(&email));
    assert!(text_of(&mut browser, "#message")
        .await
        .contains("Signed in with a passkey"));
    let last_used = passkeys_over_http(&app, &mut browser).await[0]["last_used_at"].clone();
    assert!(
        last_used.is_string(),
        "the passkey was not used: {last_used}"
    );

    // The passkey is the account's only second factor: the password does not stand in for
    // it, and the page says how to add another one.
    type_into(&mut browser, "new-name", "spare").await;
    type_into(&mut browser, "proof-password", PASSWORD).await;
    click(&mut browser, "#register-form button[type=submit]").await;
    let problem = page_problem(&mut browser).await;
    assert!(
        problem.contains("sign in again with the passkey"),
        "{problem}"
    );
    assert_eq!(passkeys_over_http(&app, &mut browser).await.len(), 1);
    browser
        .evaluate("document.getElementById('new-name').value = ''")
        .await;

    let screenshot = browser
        .command(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(screenshot["data"].as_str().unwrap())
        .unwrap();
    let path = browser.dir().join("passkey-page.png");
    std::fs::write(&path, &png).unwrap();
    // Kept in the checkout's `target/` (README says where), which a build into another
    // `CARGO_TARGET_DIR` does not make.
    let kept_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    std::fs::create_dir_all(&kept_dir).unwrap();
    let kept = kept_dir.join("passkey-page.png");
    std::fs::copy(&path, &kept).unwrap();
    let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .expect("the screenshot is a PNG");
    assert!(
        image.width() >= 600 && image.height() >= 600,
        "a {}x{} screenshot",
        image.width(),
        image.height()
    );
    let pixels = image.to_rgb8();
    let first = pixels.get_pixel(0, 0);
    assert!(
        pixels.pixels().any(|pixel| pixel != first),
        "the screenshot is one colour"
    );
    eprintln!("passkey page screenshot: {}", kept.display());

    // Rename through the page.
    browser
        .evaluate("document.querySelector('#passkeys li input').value = 'work laptop'")
        .await;
    click(&mut browser, "#passkeys li button.secondary").await;
    browser
        .wait_for(
            "document.querySelector('#passkeys li .passkey-name')?.textContent === 'work laptop'",
            PAGE_PROBLEM,
            STEP,
        )
        .await;
    assert_eq!(
        passkeys_over_http(&app, &mut browser).await[0]["name"],
        "work laptop"
    );

    // A password sign-in now asks for the passkey as its second step.
    click(&mut browser, "#sign-out").await;
    browser
        .wait_for(&showing("signed-out"), PAGE_PROBLEM, STEP)
        .await;
    submit_password(&mut browser, &email).await;
    browser
        .wait_for(&showing("second-step"), PAGE_PROBLEM, STEP)
        .await;
    click(&mut browser, "#second-step-passkey").await;
    browser
        .wait_for(&showing("signed-in"), PAGE_PROBLEM, STEP)
        .await;
    assert!(text_of(&mut browser, "#who").await.contains(&email));

    // Remove through the page (the sign-in is fresh: no proofs needed).
    click(&mut browser, "#passkeys li button.danger").await;
    browser
        .wait_for(&showing("no-passkeys"), PAGE_PROBLEM, STEP)
        .await;
    assert_eq!(
        browser
            .evaluate("document.querySelectorAll('#passkeys li').length")
            .await,
        0
    );
    assert!(passkeys_over_http(&app, &mut browser).await.is_empty());
}

#[tokio::test]
async fn a_user_with_an_authenticator_app_signs_in_with_codes_and_adds_and_removes_a_passkey_with_them(
) {
    // Every removal asks for the proofs.
    let (app, origin) = spawn_page_app(|config| config.lifetimes.reauth_window = 0).await;
    let email = unique_email("page-totp");
    let seed = app.signup_with_authenticator(&email).await;
    let backup_codes = app.backup_codes(&email).await;
    assert_eq!(backup_codes.len(), 5);
    let (mut browser, _) = open_page(&origin).await;

    // The second step with a TOTP code.
    submit_password(&mut browser, &email).await;
    browser
        .wait_for(&showing("second-step"), PAGE_PROBLEM, STEP)
        .await;
    click(&mut browser, "#code-form button[value=code]").await;
    assert_eq!(page_problem(&mut browser).await, "Enter the code.");
    type_into(&mut browser, "code", &current_code(&seed)).await;
    click(&mut browser, "#code-form button[value=code]").await;
    browser
        .wait_for(&showing("signed-in"), PAGE_PROBLEM, STEP)
        .await;
    assert!(text_of(&mut browser, "#who").await.contains(&email));

    // Adding a passkey asks for a second factor too: without one the page says so.
    type_into(&mut browser, "new-name", "phone").await;
    type_into(&mut browser, "proof-password", PASSWORD).await;
    click(&mut browser, "#register-form button[type=submit]").await;
    let problem = page_problem(&mut browser).await;
    assert!(problem.contains("tfa.code_required"), "{problem}");
    type_into(&mut browser, "proof-password", PASSWORD).await;
    type_into(&mut browser, "proof-code", &backup_codes[0]).await;
    click(&mut browser, "#register-form button[type=submit]").await;
    browser
        .wait_for(
            "document.querySelectorAll('#passkeys li').length === 1",
            PAGE_PROBLEM,
            STEP,
        )
        .await;
    assert_eq!(
        passkeys_over_http(&app, &mut browser).await[0]["name"],
        "phone"
    );

    // The second step with a backup code, although a passkey is there.
    click(&mut browser, "#sign-out").await;
    browser
        .wait_for(&showing("signed-out"), PAGE_PROBLEM, STEP)
        .await;
    submit_password(&mut browser, &email).await;
    browser
        .wait_for(&showing("second-step"), PAGE_PROBLEM, STEP)
        .await;
    type_into(&mut browser, "code", &backup_codes[1]).await;
    click(&mut browser, "#code-form button[value=backup]").await;
    browser
        .wait_for(&showing("signed-in"), PAGE_PROBLEM, STEP)
        .await;
    assert!(text_of(&mut browser, "#who").await.contains(&email));

    // Removing it asks for the proofs (the sign-in is older than the window of 0 s).
    click(&mut browser, "#passkeys li button.danger").await;
    let problem = page_problem(&mut browser).await;
    assert!(problem.contains("enter your password"), "{problem}");
    type_into(&mut browser, "proof-password", PASSWORD).await;
    type_into(&mut browser, "proof-code", &backup_codes[2]).await;
    click(&mut browser, "#passkeys li button.danger").await;
    browser
        .wait_for(&showing("no-passkeys"), PAGE_PROBLEM, STEP)
        .await;
    assert!(passkeys_over_http(&app, &mut browser).await.is_empty());
}

#[tokio::test]
async fn the_page_and_its_assets_carry_a_strict_policy_and_nothing_inline() {
    let (app, _) = spawn_page_app(|_| ()).await;

    for path in std::iter::once(PAGE_PATH).chain(ASSETS) {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let policy = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
        for directive in STRICT_POLICY {
            assert!(
                directives.contains(&directive),
                "{path}: `{policy}` lacks `{directive}`"
            );
        }
        assert!(!policy.contains("unsafe-"), "{path}: {policy}");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
    }

    let page = app
        .http
        .get(format!("{}{PAGE_PATH}", app.address))
        .send()
        .await
        .unwrap();
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap().to_lowercase();
    let scripts: Vec<&str> = html.split("<script").skip(1).collect();
    assert_eq!(scripts.len(), 1, "one script, the page's own");
    for script in scripts {
        let tag = &script[..script.find('>').unwrap()];
        assert!(
            tag.contains("src=\"/account/passkeys.js\""),
            "an inline script: <script{tag}>"
        );
        let body = &script[script.find('>').unwrap() + 1..];
        assert!(
            body.trim_start().starts_with("</script>"),
            "a script with a body"
        );
    }
    // No event handler attributes (`onclick=`, `onload =`, …) on any tag.
    for tag in html.split('<').skip(1) {
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        for attribute in tag.split_whitespace().skip(1) {
            assert!(!attribute.starts_with("on"), "an inline handler in <{tag}>");
        }
    }
    assert!(!html.contains("javascript:"), "a javascript: URL");
    // Everything the page loads is the service's own.
    for reference in ["src=\"", "href=\""] {
        for link in html.split(reference).skip(1) {
            assert!(
                link.starts_with('/'),
                "an outside reference: {reference}{link:.40}"
            );
        }
    }

    // The API keeps its own headers, and the page is not an API operation.
    let root = app.http.get(&app.address).send().await.unwrap();
    assert_eq!(
        root.headers()["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    let document: Value = app
        .http
        .get(format!("{}/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|path| !path.starts_with("/account")),
        "{paths:?}"
    );
}
