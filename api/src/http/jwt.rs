//! Issuing and verifying JWTs, and the JWKS that lets other services verify them.
//!
//! Three kinds of token exist: access, refresh and pre-2FA. Each has its own audience and a
//! `typ` claim, both checked on every use, so one kind can never stand in for another. The
//! algorithm is pinned to EdDSA (Ed25519) on the server side: the token's own `alg` header is
//! never trusted, which rules out `alg: none` and HMAC/public-key confusion. Tokens carry a
//! `kid` (the key's RFC 7638 thumbprint) and are refused if it names another key.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use twofold_domain::values::{ChallengeId, RefreshTokenId, SessionId, UserId};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::http::error::ApiError;

/// Clock skew tolerated when checking `exp` and `nbf`, in seconds.
const LEEWAY_SECONDS: u64 = 5;

/// The kind of a token, carried in its `typ` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Grants access to the API.
    Access,
    /// Obtains a new token pair.
    Refresh,
    /// Proves the password step of a login; only unlocks the second step.
    #[serde(rename = "pre_2fa")]
    PreTfa,
}

impl TokenKind {
    fn audience_suffix(self) -> &'static str {
        match self {
            Self::Access => "",
            Self::Refresh => "/refresh",
            Self::PreTfa => "/pre-2fa",
        }
    }
}

/// The claims of every Twofold token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience, distinct per kind.
    pub aud: String,
    /// The user.
    pub sub: UserId,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Token id.
    pub jti: Uuid,
    /// The kind.
    pub typ: TokenKind,
    /// The login challenge a pre-2FA token answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<ChallengeId>,
    /// The session an access or refresh token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<SessionId>,
}

/// How long each kind of token lives.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Access tokens (30 minutes by default).
    pub access: Duration,
    /// Refresh tokens (24 hours by default).
    pub refresh: Duration,
    /// Pre-2FA tokens (5 minutes by default).
    pub pre_tfa: Duration,
}

/// The Ed25519 signing key and what is derived from it.
pub struct JwtKey {
    kid: String,
    /// The algorithm this key signs with; a token naming another is refused.
    algorithm: Algorithm,
    /// The Ed25519 public key, published in the JWKS; `None` for a shared HMAC secret,
    /// which is never published.
    public_x: Option<String>,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// The shortest HS256 secret accepted: 256 bits, the hash's own size (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JwtKey(kid={})", self.kid)
    }
}

impl JwtKey {
    /// Loads a PKCS#8 PEM Ed25519 private key (as `openssl genpkey -algorithm ed25519` writes).
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let signing = SigningKey::from_pkcs8_pem(pem)
            .map_err(|_| "the JWT key is not an Ed25519 private key in PKCS#8 PEM".to_owned())?;
        Self::from_signing_key(&signing)
    }

    /// A fresh random key (embedded mode).
    pub fn generate() -> Result<Self, String> {
        Self::from_signing_key(&SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A fresh key in PKCS#8 PEM, for `twofold keys generate`.
    pub fn generate_pem() -> Result<Zeroizing<String>, String> {
        SigningKey::generate(&mut rand::rngs::OsRng)
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|_| "could not encode the key".to_owned())
    }

    fn from_signing_key(signing: &SigningKey) -> Result<Self, String> {
        let pem = signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|_| "could not encode the key".to_owned())?;
        let encoding = EncodingKey::from_ed_pem(pem.as_bytes())
            .map_err(|_| "could not load the key for signing".to_owned())?;
        let public_x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
        let decoding = DecodingKey::from_ed_components(&public_x)
            .map_err(|_| "could not load the key for verifying".to_owned())?;
        // RFC 7638: the SHA-256 of the required members in lexicographic order.
        let thumbprint_input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{public_x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        Ok(Self {
            kid,
            algorithm: Algorithm::EdDSA,
            public_x: Some(public_x),
            encoding,
            decoding,
        })
    }

    /// A shared HS256 secret, for clients of the original service that verify tokens with
    /// the secret they share with it. Prefer EdDSA: any holder of this secret can mint tokens.
    pub fn hs256(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_HS256_SECRET_BYTES {
            return Err(format!(
                "TWOFOLD_JWT_HS256_SECRET must have at least {MIN_HS256_SECRET_BYTES} bytes"
            ));
        }
        // The kid names the secret without revealing it: a hash of a hash of it.
        let kid = URL_SAFE_NO_PAD.encode(&Sha256::digest(Sha256::digest(secret))[..12]);
        Ok(Self {
            kid: format!("hs256-{kid}"),
            algorithm: Algorithm::HS256,
            public_x: None,
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        })
    }
}

/// The JWK Set document (RFC 7517) of the verification keys.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One public key.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// The key id tokens name in their header.
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub usage: String,
}

/// Issues and verifies tokens.
pub struct TokenService {
    key: JwtKey,
    /// Keys that signed earlier and still verify (and stay in the JWKS) until their tokens
    /// expire: rotation without downtime.
    retired: Vec<JwtKey>,
    issuer: String,
    audience: String,
    lifetimes: Lifetimes,
}

impl TokenService {
    /// A service signing with `key`.
    pub fn new(key: JwtKey, issuer: String, audience: String, lifetimes: Lifetimes) -> Self {
        Self {
            key,
            retired: Vec::new(),
            issuer,
            audience,
            lifetimes,
        }
    }

    /// Also verifies tokens signed by `retired` keys, and publishes them.
    pub fn with_retired_keys(self, retired: Vec<JwtKey>) -> Self {
        Self { retired, ..self }
    }

    fn keys(&self) -> impl Iterator<Item = &JwtKey> {
        std::iter::once(&self.key).chain(&self.retired)
    }

    /// The lifetime of `kind`.
    pub fn lifetime(&self, kind: TokenKind) -> Duration {
        match kind {
            TokenKind::Access => self.lifetimes.access,
            TokenKind::Refresh => self.lifetimes.refresh,
            TokenKind::PreTfa => self.lifetimes.pre_tfa,
        }
    }

    fn audience(&self, kind: TokenKind) -> String {
        format!("{}{}", self.audience, kind.audience_suffix())
    }

    /// A pre-2FA token naming the login challenge it may complete.
    pub fn issue_pre_tfa(&self, user: UserId, challenge: ChallengeId) -> Result<String, ApiError> {
        self.issue(
            TokenKind::PreTfa,
            user,
            Uuid::new_v4(),
            Some(challenge),
            None,
        )
    }

    /// An access token and a refresh token of `session`; the refresh token's `jti` is the
    /// session's current refresh token id, so the session can tell a rotated one.
    pub fn issue_pair(
        &self,
        user: UserId,
        session: SessionId,
        refresh: RefreshTokenId,
    ) -> Result<(String, String), ApiError> {
        let access = self.issue(TokenKind::Access, user, Uuid::new_v4(), None, Some(session))?;
        let refresh = self.issue(
            TokenKind::Refresh,
            user,
            refresh.as_uuid(),
            None,
            Some(session),
        )?;
        Ok((access, refresh))
    }

    fn issue(
        &self,
        kind: TokenKind,
        user: UserId,
        jti: Uuid,
        challenge: Option<ChallengeId>,
        session: Option<SessionId>,
    ) -> Result<String, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let lifetime = i64::try_from(self.lifetime(kind).as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience(kind),
            sub: user,
            exp: now.saturating_add(lifetime),
            iat: now,
            nbf: now,
            jti,
            typ: kind,
            cid: challenge,
            sid: session,
        };
        let mut header = Header::new(self.key.algorithm);
        header.kid = Some(self.key.kid.clone());
        encode(&header, &claims, &self.key.encoding)
            .map_err(|error| ApiError::Internal(Box::new(error)))
    }

    /// The claims of `token` if it is a valid, unexpired token of `kind` signed by our key.
    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, ApiError> {
        let header = decode_header(token).map_err(|_| ApiError::InvalidToken)?;
        let key = self
            .keys()
            .find(|key| header.kid.as_deref() == Some(key.kid.as_str()))
            .ok_or(ApiError::InvalidToken)?;
        // The key's own algorithm, never the token's `alg` header.
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[self.audience(kind)]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        let claims = decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|_| ApiError::InvalidToken)?
            .claims;
        if claims.typ != kind {
            return Err(ApiError::InvalidToken);
        }
        Ok(claims)
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .keys()
                .filter_map(|key| {
                    Some(Jwk {
                        kty: "OKP".to_owned(),
                        crv: "Ed25519".to_owned(),
                        x: key.public_x.clone()?,
                        kid: key.kid.clone(),
                        alg: "EdDSA".to_owned(),
                        usage: "sig".to_owned(),
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> TokenService {
        TokenService::new(
            JwtKey::generate().unwrap(),
            "twofold".to_owned(),
            "twofold".to_owned(),
            Lifetimes {
                access: Duration::from_secs(1800),
                refresh: Duration::from_secs(86_400),
                pre_tfa: Duration::from_secs(300),
            },
        )
    }

    #[test]
    fn a_token_verifies_only_as_its_own_kind() {
        let tokens = service();
        let user = UserId::new_random();
        for kind in [TokenKind::Access, TokenKind::Refresh, TokenKind::PreTfa] {
            let token = tokens
                .issue(kind, user, Uuid::new_v4(), None, None)
                .unwrap();
            for expected in [TokenKind::Access, TokenKind::Refresh, TokenKind::PreTfa] {
                let result = tokens.verify(&token, expected);
                assert_eq!(result.is_ok(), kind == expected, "{kind:?} as {expected:?}");
            }
        }
    }

    #[test]
    fn a_retired_key_still_verifies_and_is_published_until_dropped() {
        let old = service();
        let token = old
            .issue(
                TokenKind::Access,
                UserId::new_random(),
                Uuid::new_v4(),
                None,
                None,
            )
            .unwrap();
        let retired = JwtKey::from_pem(&JwtKey::generate_pem().unwrap()).unwrap();
        let old_kid = old.key.kid.clone();
        let rotated = TokenService {
            retired: vec![old.key],
            ..service()
        };
        assert!(rotated.verify(&token, TokenKind::Access).is_ok());
        let kids: Vec<String> = rotated.jwks().keys.into_iter().map(|key| key.kid).collect();
        assert_eq!(kids.len(), 2);
        assert!(kids.contains(&old_kid));
        let without = service().with_retired_keys(vec![retired]);
        assert!(without.verify(&token, TokenKind::Access).is_err());
    }

    #[test]
    fn an_hs256_service_verifies_its_own_tokens_publishes_nothing_and_refuses_eddsa_ones() {
        let hs256 = TokenService {
            key: JwtKey::hs256(&[9u8; 32]).unwrap(),
            ..service()
        };
        let user = UserId::new_random();
        let token = hs256
            .issue(TokenKind::Access, user, Uuid::new_v4(), None, None)
            .unwrap();
        assert_eq!(decode_header(&token).unwrap().alg, Algorithm::HS256);
        assert!(hs256.verify(&token, TokenKind::Access).is_ok());
        assert!(hs256.jwks().keys.is_empty());
        let eddsa = service()
            .issue(TokenKind::Access, user, Uuid::new_v4(), None, None)
            .unwrap();
        assert!(hs256.verify(&eddsa, TokenKind::Access).is_err());
        assert!(JwtKey::hs256(&[9u8; 31]).is_err());
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let token = service()
            .issue(
                TokenKind::Access,
                UserId::new_random(),
                Uuid::new_v4(),
                None,
                None,
            )
            .unwrap();
        assert!(service().verify(&token, TokenKind::Access).is_err());
    }

    #[test]
    fn a_pem_key_loads_and_signs_what_its_jwks_verifies() {
        let pem = JwtKey::generate_pem().unwrap();
        let key = JwtKey::from_pem(&pem).unwrap();
        let again = JwtKey::from_pem(&pem).unwrap();
        assert_eq!(key.kid, again.kid);
        assert!(
            JwtKey::from_pem("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")
                .is_err()
        );
    }
}
