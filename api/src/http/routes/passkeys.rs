//! Passkeys (WebAuthn): `/passkeys` (register, list, rename, remove the caller's),
//! `/tfa/passkey` (a passkey as the second login step) and `/auth/passkey` (a passwordless
//! login). Each ceremony is two calls: `start` answers a `challenge_id` and the options to
//! hand to `navigator.credentials.create()` or `.get()` (`publicKey`, in WebAuthn's JSON form
//! with base64url binaries); `finish` takes the `challenge_id` and the credential the browser
//! returned, serialised the same way. A ceremony lives 5 minutes and finishes once.
//!
//! Registering needs the proofs of a sensitive change (the password and, with two-factor
//! authentication on, a current code). Removing needs a re-authentication like ending
//! another session: within `TWOFOLD_REAUTH_WINDOW` of the caller's full sign-in the
//! `DELETE` works as it is; after it, `POST /passkeys/{id}/remove` takes the proofs. A passkey
//! may be the account's only second factor: removing it is never one stolen access token
//! away, and it sends a notice.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use twofold_domain::user::{LoginOutcome, Refusal};
use twofold_domain::values::{PasskeyId, PasskeyName, MAX_PASSKEY_NAME_CHARS};
use twofold_domain::{Actor, UserError};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::as_caller;
use super::dto::{ProofsOrSignInRequest, ReauthenticationRequest, TokenResponse};
use super::tfa_manage::answer;
use crate::app::passkeys::{CeremonyStart, PasskeyFailure, PasskeySummary, RegistrationStart};
use crate::http::error::ApiError;
use crate::http::extract::{AccessToken, Json, Path, PreTfaToken, RequestContext};
use crate::http::jwt::{Access, Claims};
use crate::http::openapi::problems;
use crate::http::state::AppState;

/// `/passkeys` (its paths written in full: a route at the root of a nested router is not one).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_registration))
        .routes(routes!(finish_registration))
        .routes(routes!(list_passkeys))
        .routes(routes!(rename_passkey, remove_passkey))
        .routes(routes!(remove_passkey_with_proofs))
}

/// `/tfa/passkey`.
pub fn second_factor_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_second_factor))
        .routes(routes!(finish_second_factor))
}

/// `/auth/passkey`.
pub fn passwordless_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_login))
        .routes(routes!(finish_login))
}

/// A started ceremony.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "challenge_id": "0f6a1e0c-8d3b-4c2e-9a51-3b7d2f0c9e14",
    "publicKey": {
        "challenge": "k3Jm9Yc4Vd0Q7pX1cB8sT2nL6wR5aZ0eH4uG9iF1oJs",
        "timeout": 300000,
        "rpId": "localhost",
        "allowCredentials": [],
        "userVerification": "required"
    }
}))]
pub struct CeremonyResponse {
    /// What `finish` names this ceremony by.
    challenge_id: Uuid,
    /// The options for `navigator.credentials.create()` (registration) or `.get()` (login),
    /// in WebAuthn's JSON form: binaries are base64url.
    #[serde(rename = "publicKey")]
    #[schema(value_type = Object)]
    public_key: serde_json::Value,
}

impl From<CeremonyStart> for CeremonyResponse {
    fn from(start: CeremonyStart) -> Self {
        Self {
            challenge_id: start.challenge_id,
            public_key: start.public_key,
        }
    }
}

/// One of the caller's passkeys.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "id": "5b0e2f5c-1a9d-4e37-8c21-7f4d3a6b2e90",
    "name": "laptop",
    "created_at": "2026-11-29T09:30:00Z",
    "last_used_at": null,
    "backed_up": false
}))]
pub struct PasskeyResponse {
    /// Its id.
    id: PasskeyId,
    /// Its name.
    name: String,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// When it last signed in.
    #[serde(with = "time::serde::rfc3339::option")]
    last_used_at: Option<OffsetDateTime>,
    /// Whether the authenticator says it is backed up (synced to other devices).
    backed_up: bool,
}

impl From<PasskeySummary> for PasskeyResponse {
    fn from(summary: PasskeySummary) -> Self {
        Self {
            id: summary.id,
            name: summary.name,
            created_at: summary.created_at,
            last_used_at: summary.last_used_at,
            backed_up: summary.backed_up,
        }
    }
}

/// No control character anywhere, and at least one character that is not white space: what
/// [`PasskeyName::parse`] takes (it trims white space at either end before counting).
const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

/// A passkey's name as [`PasskeyName::parse`] takes it.
fn name_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "1 to {MAX_PASSKEY_NAME_CHARS} characters once white space at either end is \
             trimmed, no control characters; unique among the caller's passkeys in any case."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_PASSKEY_NAME_CHARS))
        .pattern(Some(NAME_PATTERN))
        .build()
}

fn name(raw: &str) -> Result<PasskeyName, ApiError> {
    Ok(PasskeyName::parse(raw)?)
}

problems!(
    /// What `start_registration` can answer besides what its inputs and token imply.
    StartRegistrationProblems:
        proofs,
        UserError::SecondFactorRequired,
        UserError::ReauthenticationRequired,
        UserError::PasskeySignInRequired,
        UserError::PasskeyLimitReached,
);

/// Starts registering a passkey, with the password and, with two-factor authentication on,
/// a current second factor (a TOTP code, a confirmation code from
/// `POST /api/v1/tfa/email_code`, or a backup code, which is spent). Wrong proofs are
/// recorded and throttled as for the other sensitive changes. With `{}` instead, it rests on
/// the caller's full sign-in, within the re-authentication window after it
/// (`TWOFOLD_REAUTH_WINDOW`, 5 minutes by default; a refresh does not renew it). A user whose
/// only second factor is a passkey has only that way: their password alone answers 403
/// `reauthentication.passkey_required`. Hand `publicKey` to
/// `navigator.credentials.create({publicKey})` (its binaries base64url-decoded).
#[utoipa::path(
    post,
    path = "/passkeys/registration/start",
    tag = "passkeys",
    security(("access_token" = [])),
    request_body = ProofsOrSignInRequest,
    responses(
        (status = 200, description = "The ceremony is on: the creation options.",
            body = CeremonyResponse),
        StartRegistrationProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn start_registration(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<ProofsOrSignInRequest>,
) -> Result<Json<CeremonyResponse>, ApiError> {
    let started = state
        .app
        .start_passkey_registration(
            claims.sub,
            claims.session_id(),
            request.proofs(),
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    match started {
        RegistrationStart::Started(start) => Ok(Json(start.into())),
        RegistrationStart::Refused(refusal) => Err(ApiError::Refused(refusal)),
    }
}

/// A finished registration.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "challenge_id": "0f6a1e0c-8d3b-4c2e-9a51-3b7d2f0c9e14",
    "name": "laptop",
    "credential": {
        "id": "mV3uK9cQ…",
        "rawId": "mV3uK9cQ…",
        "type": "public-key",
        "response": {"attestationObject": "o2NmbXRk…", "clientDataJSON": "eyJ0eXBl…"}
    }
}))]
pub struct FinishRegistrationRequest {
    /// The `challenge_id` of the start.
    challenge_id: Uuid,
    /// A name for it.
    #[schema(schema_with = name_schema)]
    name: String,
    /// What `navigator.credentials.create()` returned, serialised with base64url binaries
    /// (`id`, `rawId`, `type`, `response.attestationObject`, `response.clientDataJSON`).
    #[schema(value_type = Object)]
    credential: serde_json::Value,
}

problems!(
    /// What `finish_registration` can answer besides what its inputs and token imply.
    FinishRegistrationProblems:
        UserError::InvalidPasskeyName,
        UserError::PasskeyNameTaken,
        UserError::PasskeyLimitReached,
        UserError::PasskeyAlreadyRegistered,
        UserError::AccountLocked,
        PasskeyFailure::CeremonyClosed,
        PasskeyFailure::RegistrationRefused,
        PasskeyFailure::WrongOrigin,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Finishes a registration: the passkey is the caller's from now on, and a notice is emailed.
#[utoipa::path(
    post,
    path = "/passkeys/registration/finish",
    tag = "passkeys",
    security(("access_token" = [])),
    request_body = FinishRegistrationRequest,
    responses(
        (status = 201, description = "Registered.", body = PasskeyResponse),
        FinishRegistrationProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn finish_registration(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Json(request): Json<FinishRegistrationRequest>,
) -> Result<(StatusCode, Json<PasskeyResponse>), ApiError> {
    let name = name(&request.name)?;
    let registered = state
        .app
        .finish_passkey_registration(
            claims.sub,
            request.challenge_id,
            name,
            request.credential,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    Ok((StatusCode::CREATED, Json(registered.into())))
}

problems!(
    /// What `list_passkeys` can answer besides what its inputs and token imply.
    ListPasskeysProblems:
        ApiError::unavailable(),
);

/// The caller's passkeys, oldest first. Never their public keys.
#[utoipa::path(
    get,
    path = "/passkeys",
    tag = "passkeys",
    security(("access_token" = [])),
    responses(
        (status = 200, description = "The passkeys.", body = Vec<PasskeyResponse>),
        ListPasskeysProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn list_passkeys(
    State(state): State<AppState>,
    AccessToken(claims): AccessToken,
) -> Result<Json<Vec<PasskeyResponse>>, ApiError> {
    let passkeys = state.app.passkeys(claims.sub).await.map_err(as_caller)?;
    Ok(Json(passkeys.into_iter().map(Into::into).collect()))
}

/// A new name.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"name": "work laptop"}))]
pub struct RenameRequest {
    /// The new name.
    #[schema(schema_with = name_schema)]
    name: String,
}

problems!(
    /// What `rename_passkey` can answer besides what its inputs and token imply.
    RenamePasskeyProblems:
        UserError::InvalidPasskeyName,
        UserError::PasskeyNameTaken,
        UserError::UnknownPasskey,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Renames one of the caller's passkeys.
#[utoipa::path(
    patch,
    path = "/passkeys/{passkey_id}",
    tag = "passkeys",
    security(("access_token" = [])),
    params(("passkey_id" = uuid::Uuid, Path, description = "A passkey id from `GET /passkeys`")),
    request_body = RenameRequest,
    responses(
        (status = 200, description = "Renamed.", body = PasskeyResponse),
        RenamePasskeyProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn rename_passkey(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Path(passkey_id): Path<PasskeyId>,
    Json(request): Json<RenameRequest>,
) -> Result<Json<PasskeyResponse>, ApiError> {
    let name = name(&request.name)?;
    let renamed = state
        .app
        .rename_passkey(
            claims.sub,
            passkey_id,
            name,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    Ok(Json(renamed.into()))
}

problems!(
    /// What `remove_passkey` can answer besides what its inputs and token imply.
    RemovePasskeyProblems:
        UserError::UnknownPasskey,
        UserError::ReauthenticationRequired,
        ApiError::Conflict,
        ApiError::unavailable(),
);

/// Removes one of the caller's passkeys; a notice is emailed. Answered only within the
/// re-authentication window after the caller's full sign-in (`TWOFOLD_REAUTH_WINDOW`, 5
/// minutes by default; a refresh does not renew it); after it, use
/// `POST /api/v1/passkeys/{passkey_id}/remove` with the proofs.
#[utoipa::path(
    delete,
    path = "/passkeys/{passkey_id}",
    tag = "passkeys",
    security(("access_token" = [])),
    params(("passkey_id" = uuid::Uuid, Path, description = "A passkey id from `GET /passkeys`")),
    responses(
        (status = 204, description = "Removed."),
        RemovePasskeyProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn remove_passkey(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Path(passkey_id): Path<PasskeyId>,
) -> Result<StatusCode, ApiError> {
    remove(&state, &context, &claims, passkey_id, None).await
}

problems!(
    /// What `remove_passkey_with_proofs` can answer besides what its inputs and token imply.
    RemovePasskeyWithProofsProblems:
        proofs,
        UserError::UnknownPasskey,
        UserError::SecondFactorRequired,
        UserError::PasskeySignInRequired,
);

/// Removes one of the caller's passkeys at any time: with the password and, with two-factor
/// authentication on, a current second factor (which is spent). A notice is emailed.
#[utoipa::path(
    post,
    path = "/passkeys/{passkey_id}/remove",
    tag = "passkeys",
    security(("access_token" = [])),
    params(("passkey_id" = uuid::Uuid, Path, description = "A passkey id from `GET /passkeys`")),
    request_body = ReauthenticationRequest,
    responses(
        (status = 204, description = "Removed."),
        RemovePasskeyWithProofsProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn remove_passkey_with_proofs(
    State(state): State<AppState>,
    context: RequestContext,
    AccessToken(claims): AccessToken,
    Path(passkey_id): Path<PasskeyId>,
    Json(request): Json<ReauthenticationRequest>,
) -> Result<StatusCode, ApiError> {
    remove(&state, &context, &claims, passkey_id, Some(request.into())).await
}

async fn remove(
    state: &AppState,
    context: &RequestContext,
    claims: &Claims<Access>,
    passkey_id: PasskeyId,
    proofs: Option<crate::app::Proofs>,
) -> Result<StatusCode, ApiError> {
    let outcome = state
        .app
        .remove_passkey(
            claims.sub,
            claims.session_id(),
            passkey_id,
            proofs,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    answer(outcome)?;
    Ok(StatusCode::NO_CONTENT)
}

/// A finished login ceremony.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "challenge_id": "0f6a1e0c-8d3b-4c2e-9a51-3b7d2f0c9e14",
    "credential": {
        "id": "mV3uK9cQ…",
        "rawId": "mV3uK9cQ…",
        "type": "public-key",
        "response": {
            "authenticatorData": "SZYN5YgO…",
            "clientDataJSON": "eyJ0eXBl…",
            "signature": "MEUCIQD…",
            "userHandle": "AAAAAAAAAAAAAAAAAAAK2g"
        }
    }
}))]
pub struct FinishLoginRequest {
    /// The `challenge_id` of the start.
    challenge_id: Uuid,
    /// What `navigator.credentials.get()` returned, serialised with base64url binaries
    /// (`id`, `rawId`, `type`, `response.authenticatorData`, `response.clientDataJSON`,
    /// `response.signature`, `response.userHandle`).
    #[schema(value_type = Object)]
    credential: serde_json::Value,
}

/// The answer of a finished passkey login step: that of any second login step, except that
/// whatever was wrong (an unknown credential, a signature, a counter) gets one answer.
fn login_answer(state: &AppState, outcome: LoginOutcome) -> Result<Json<TokenResponse>, ApiError> {
    let outcome = match outcome {
        LoginOutcome::Refused(_) => LoginOutcome::Refused(Refusal::WrongPasskey),
        other => other,
    };
    super::tfa::second_step_answer(state, outcome)
}

problems!(
    /// What `start_second_factor` can answer besides what its inputs and token imply.
    StartSecondFactorProblems:
        PasskeyFailure::NoPasskey,
        ApiError::unavailable(),
);

/// Starts the second login step with a passkey (instead of `login_tfa`), with the pre-2FA
/// token of a 202 login. Hand `publicKey` to `navigator.credentials.get({publicKey})`.
#[utoipa::path(
    post,
    path = "/start",
    tag = "tfa",
    security(("pre_2fa_token" = [])),
    responses(
        (status = 200, description = "The ceremony is on: the request options.",
            body = CeremonyResponse),
        StartSecondFactorProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn start_second_factor(
    State(state): State<AppState>,
    PreTfaToken(claims): PreTfaToken,
) -> Result<Json<CeremonyResponse>, ApiError> {
    let start = state
        .app
        .start_passkey_second_factor(claims.sub)
        .await
        .map_err(as_caller)?;
    Ok(Json(start.into()))
}

problems!(
    /// What `finish_second_factor` can answer besides what its inputs and token imply.
    FinishSecondFactorProblems:
        Refusal::WrongPasskey,
        UserError::ChallengeClosed,
        UserError::AccountLocked,
        PasskeyFailure::CeremonyClosed,
        PasskeyFailure::WrongOrigin,
        ApiError::Conflict,
        UserError::Locked { retry_after_secs: 60 },
        ApiError::rate_limited(60),
        ApiError::unavailable(),
);

/// Finishes the second login step with the passkey's assertion: the same token pair as
/// `login_tfa`. A refused assertion counts against the passkey factor (5 in a row lock it
/// for a while) and against the login challenge.
#[utoipa::path(
    post,
    path = "/finish",
    tag = "tfa",
    security(("pre_2fa_token" = [])),
    request_body = FinishLoginRequest,
    responses(
        (status = 200, description = "Logged in: an access and a refresh token.",
            body = TokenResponse),
        FinishSecondFactorProblems,
    )
)]
#[tracing::instrument(skip_all, fields(user_id = %claims.sub))]
async fn finish_second_factor(
    State(state): State<AppState>,
    context: RequestContext,
    PreTfaToken(claims): PreTfaToken,
    Json(request): Json<FinishLoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let outcome = state
        .app
        .finish_passkey_second_factor(
            claims.sub,
            claims.challenge_id(),
            request.challenge_id,
            request.credential,
            &context.metadata(Actor::User(claims.sub)),
        )
        .await
        .map_err(as_caller)?;
    login_answer(&state, outcome)
}

problems!(
    /// What `start_login` can answer.
    StartLoginProblems:
        ApiError::rate_limited(60),
        ApiError::unavailable(),
);

/// Starts a passwordless login: any discoverable passkey may answer it. Hand `publicKey` to
/// `navigator.credentials.get({publicKey})` (or with `mediation: "conditional"` for autofill).
#[utoipa::path(
    post,
    path = "/start",
    tag = "auth",
    responses(
        (status = 200, description = "The ceremony is on: the request options.",
            body = CeremonyResponse),
        StartLoginProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn start_login(State(state): State<AppState>) -> Result<Json<CeremonyResponse>, ApiError> {
    Ok(Json(state.app.start_passkey_login().await?.into()))
}

problems!(
    /// What `finish_login` can answer besides what its inputs imply.
    FinishLoginProblems:
        Refusal::WrongPasskey,
        UserError::AccountLocked,
        PasskeyFailure::CeremonyClosed,
        PasskeyFailure::WrongOrigin,
        ApiError::Conflict,
        UserError::Locked { retry_after_secs: 60 },
        ApiError::rate_limited(60),
        ApiError::unavailable(),
);

/// Finishes a passwordless login with the passkey's assertion: the same token pair as a full
/// login (the passkey proves possession and, by its user verification, a second factor).
/// An unknown credential, a wrong signature and a counter that went back answer alike.
#[utoipa::path(
    post,
    path = "/finish",
    tag = "auth",
    request_body = FinishLoginRequest,
    responses(
        (status = 200, description = "Logged in: an access and a refresh token.",
            body = TokenResponse),
        FinishLoginProblems,
    )
)]
#[tracing::instrument(skip_all)]
async fn finish_login(
    State(state): State<AppState>,
    context: RequestContext,
    Json(request): Json<FinishLoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let outcome = state
        .app
        .finish_passkey_login(
            request.challenge_id,
            request.credential,
            &context.metadata(Actor::Anonymous),
        )
        .await?;
    login_answer(&state, outcome)
}
