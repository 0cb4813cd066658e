//! The HTTP calls the benchmark makes, as a client of the public API would.

use anyhow::Context;
use reqwest::Client;
use serde::Deserialize;
use serde_json::json;

pub const PASSWORD: &str = "correct horse battery staple";

/// A token pair.
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: Option<String>,
}

/// A fresh address.
pub fn fresh_email(tag: &str) -> String {
    format!("bench-{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// `POST /auth/signup`; `device` turns 2FA on (an `email` device mails its backup codes).
pub async fn sign_up(
    client: &Client,
    base: &str,
    email: &str,
    device: Option<&str>,
) -> anyhow::Result<u16> {
    let response = post_sign_up(client, base, email, device).await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok(status)
}

async fn post_sign_up(
    client: &Client,
    base: &str,
    email: &str,
    device: Option<&str>,
) -> anyhow::Result<reqwest::Response> {
    let body = json!({
        "email": email,
        "full_name": "Ada Lovelace",
        "password": PASSWORD,
        "tfa_enabled": device.is_some(),
        "device": device.map(|device_type| json!({ "device_type": device_type })),
    });
    Ok(client
        .post(format!("{base}/api/v1/auth/signup"))
        .json(&body)
        .send()
        .await?)
}

/// `POST /auth/signup` with an authenticator app as the second factor: the TOTP seed of the
/// QR code it answers with, read as the app would read it.
pub async fn sign_up_with_app(client: &Client, base: &str, email: &str) -> anyhow::Result<Vec<u8>> {
    let response = post_sign_up(client, base, email, Some("code_generator")).await?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("sign-up with an authenticator app answered {status}: {body}");
    }
    let png = response.bytes().await?;
    tokio::task::spawn_blocking(move || seed_of_qr_code(&png)).await?
}

fn seed_of_qr_code(png: &[u8]) -> anyhow::Result<Vec<u8>> {
    let image = image::load_from_memory(png)?.to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grid = prepared
        .detect_grids()
        .into_iter()
        .next()
        .context("a QR code in the sign-up's answer")?;
    let (_, uri) = grid
        .decode()
        .map_err(|error| anyhow::anyhow!("the QR code does not read: {error}"))?;
    let secret = url::Url::parse(&uri)?
        .query_pairs()
        .find(|(key, _)| key == "secret")
        .map(|(_, value)| value.into_owned())
        .context("a secret in the otpauth URI")?;
    totp_rs::Secret::Encoded(secret)
        .to_bytes()
        .map_err(|error| anyhow::anyhow!("the TOTP secret does not decode: {error:?}"))
}

/// The code an authenticator app holding `seed` shows now (SHA-1, 6 digits, 30 s steps).
pub fn current_code(seed: &[u8]) -> anyhow::Result<String> {
    totp_rs::TOTP::new_unchecked(totp_rs::Algorithm::SHA1, 6, 0, 30, seed.to_vec())
        .generate_current()
        .map_err(|error| anyhow::anyhow!("the clock: {error}"))
}

/// `POST /auth/login` of an account with 2FA: the pre-2FA token of its 202.
pub async fn pre_2fa_token(client: &Client, base: &str, email: &str) -> anyhow::Result<String> {
    let response = post_login(client, base, email).await?;
    let status = response.status().as_u16();
    if status != 202 {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("a login with 2FA answered {status}: {body}");
    }
    let tokens: Tokens = response.json().await.context("the login's answer")?;
    Ok(tokens.access_token)
}

/// `POST /tfa/login_tfa` with `code`, on the pre-2FA token `pre_2fa`: the status.
pub async fn login_tfa(
    client: &Client,
    base: &str,
    pre_2fa: &str,
    code: &str,
) -> anyhow::Result<u16> {
    let response = client
        .post(format!("{base}/api/v1/tfa/login_tfa"))
        .query(&[("tfa_token", code)])
        .bearer_auth(pre_2fa)
        .send()
        .await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok(status)
}

/// `POST /auth/login` with [`PASSWORD`].
async fn post_login(client: &Client, base: &str, email: &str) -> anyhow::Result<reqwest::Response> {
    Ok(client
        .post(format!("{base}/api/v1/auth/login"))
        .form(&[("username", email), ("password", PASSWORD)])
        .send()
        .await?)
}

/// `POST /auth/login`: the status, and the tokens when it answered 200.
pub async fn log_in(
    client: &Client,
    base: &str,
    email: &str,
) -> anyhow::Result<(u16, Option<Tokens>)> {
    let response = post_login(client, base, email).await?;
    let status = response.status().as_u16();
    if status == 503 {
        check_busy(response).await?;
        return Ok((503, None));
    }
    if status != 200 {
        response.bytes().await?;
        return Ok((status, None));
    }
    Ok((status, Some(response.json().await?)))
}

/// A 503 must be `service.busy` with `Retry-After`; anything else is an error here.
async fn check_busy(response: reqwest::Response) -> anyhow::Result<()> {
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let body: serde_json::Value = response.json().await?;
    match (retry_after, body.get("code").and_then(|code| code.as_str())) {
        (Some(_), Some("service.busy")) => Ok(()),
        other => anyhow::bail!("a 503 without service.busy and Retry-After: {other:?} {body}"),
    }
}

/// `GET /auth/test-token`.
pub async fn test_token(client: &Client, url: &str, access: &str) -> anyhow::Result<u16> {
    let response = client.get(url).bearer_auth(access).send().await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok(status)
}

/// A plain `GET`: its status (the body is read and dropped).
pub async fn get(client: &Client, url: &str) -> anyhow::Result<u16> {
    let response = client.get(url).send().await?;
    let status = response.status().as_u16();
    response.bytes().await?;
    Ok(status)
}

/// The value of an unlabelled metric in the service's `/metrics`, if it is there.
pub async fn metric(client: &Client, base: &str, name: &str) -> anyhow::Result<Option<f64>> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    }))
}

/// `POST /auth/refresh`: the status and the new pair.
pub async fn refresh(
    client: &Client,
    base: &str,
    refresh: &str,
) -> anyhow::Result<(u16, Option<Tokens>)> {
    let response = client
        .post(format!("{base}/api/v1/auth/refresh"))
        .json(&json!({ "refresh_token": refresh }))
        .send()
        .await?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response.text().await.unwrap_or_default();
        anyhow::bail!("refresh answered {status}: {body}");
    }
    Ok((
        status,
        Some(response.json().await.context("the refresh answer")?),
    ))
}
