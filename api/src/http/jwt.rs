//! Issuing and verifying JWTs, and the JWKS that lets other services verify them.
//!
//! Three kinds of token exist: access, refresh and pre-2FA. Each has its own audience and a
//! `typ` claim, both checked on every use, so one kind can never stand in for another. The
//! algorithm is pinned to EdDSA (Ed25519) on the server side: the token's own `alg` header is
//! never trusted, which rules out `alg: none` and HMAC/public-key confusion. Tokens carry a
//! `kid` (the key's RFC 7638 thumbprint) and are refused if it names another key.
//!
//! Beyond the signature, the claims must be ones this service could have issued: an `iat` no
//! later than now (give or take the leeway) and an `exp` no further from `iat` than the
//! kind's configured lifetime. A token that breaks either was minted with a leaked key or a
//! wrong clock, and would otherwise outlive every lifetime the operator set. An access or
//! refresh token must name its session (`sid`), or it could not be revoked with it.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, KeypairBytes};
use ed25519_dalek::{Signer as _, SigningKey};
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::de::DeserializeOwned;
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

/// What one kind of token carries beyond the claims every token has: the type of a token's
/// own claims, so that a handler taking an access token cannot read a challenge id.
pub trait KindClaims: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// The kind, as its `typ` claim names it.
    const KIND: TokenKind;
}

/// An access token's own claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Access {
    /// The session the token belongs to.
    sid: SessionId,
}

/// A refresh token's own claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refresh {
    /// The session the token rotates.
    sid: SessionId,
}

/// A pre-2FA token's own claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreTfa {
    /// The login challenge it may complete.
    cid: ChallengeId,
}

impl KindClaims for Access {
    const KIND: TokenKind = TokenKind::Access;
}

impl KindClaims for Refresh {
    const KIND: TokenKind = TokenKind::Refresh;
}

impl KindClaims for PreTfa {
    const KIND: TokenKind = TokenKind::PreTfa;
}

/// The claims of a Twofold token of kind `K`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound = "K: KindClaims")]
pub struct Claims<K> {
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
    /// The kind's own claims.
    #[serde(flatten)]
    own: K,
}

impl Claims<Access> {
    /// The session the access token belongs to.
    pub fn session_id(&self) -> SessionId {
        self.own.sid
    }
}

impl Claims<Refresh> {
    /// The session the refresh token rotates.
    pub fn session_id(&self) -> SessionId {
        self.own.sid
    }

    /// The refresh token's id: the session tells its current one from a rotated one.
    pub fn refresh_id(&self) -> RefreshTokenId {
        RefreshTokenId::from_uuid(self.jti)
    }
}

impl Claims<PreTfa> {
    /// The login challenge the pre-2FA token may complete.
    pub fn challenge_id(&self) -> ChallengeId {
        self.own.cid
    }
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
    signer: Signer,
    decoding: DecodingKey,
}

/// What a key signs tokens with. An Ed25519 key is kept as a ready signing key:
/// `jsonwebtoken::encode` takes it as PKCS#8 and derives its public key again for every
/// token, which costs as much as the signature itself (callgrind: 23% of a refresh, which
/// signs two tokens). The token is the same, byte for byte: Ed25519 signatures are
/// deterministic, and the header and claims are serialized as `encode` serializes them.
enum Signer {
    Ed25519(SigningKey),
    Hmac(EncodingKey),
}

impl Signer {
    /// The compact JWS of `claims` under `header` (RFC 7515 §7.1).
    fn sign(
        &self,
        header: &Header,
        claims: &impl Serialize,
    ) -> jsonwebtoken::errors::Result<String> {
        match self {
            Self::Hmac(key) => encode(header, claims, key),
            Self::Ed25519(key) => {
                let mut token = String::new();
                URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(header)?, &mut token);
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims)?, &mut token);
                let signature = key.sign(token.as_bytes());
                token.push('.');
                URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
                Ok(token)
            }
        }
    }
}

/// Verifiers of this service's own Ed25519 keys, kept ready. For every token, jsonwebtoken's
/// RustCrypto provider builds an Ed25519 verifier from the key's 32 bytes, and decompressing
/// that point costs about a fifth of a verification (callgrind: ~40k instructions of a
/// test-token request's ~520k). jsonwebtoken's `CryptoProvider` is the hook for it: the one
/// installed here answers for the keys [`keep`](kept_verifiers::keep) was given, looked up by
/// their exact bytes, with the same verification RustCrypto's verifier runs, and hands
/// everything else to the RustCrypto provider unchanged.
mod kept_verifiers {
    use std::collections::VecDeque;
    use std::sync::{OnceLock, RwLock};

    use ed25519_dalek::{Signature, VerifyingKey};
    use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwtVerifier};
    use jsonwebtoken::signature::{Error, Verifier};
    use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

    /// Keys kept at most: a service has one key and a few retired ones; a test process makes
    /// many, and the oldest make way.
    const KEPT: usize = 16;

    static KEYS: RwLock<VecDeque<VerifyingKey>> = RwLock::new(VecDeque::new());
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();

    /// Verifies tokens of `key` with a verifier kept ready, once the provider is installed.
    /// jsonwebtoken fixes its provider at its first use: if that came first, or another
    /// provider was installed, tokens verify as before, only without the kept key.
    pub(super) fn keep(key: VerifyingKey) {
        let provider = PROVIDER.get_or_init(|| CryptoProvider {
            verifier_factory: verifier,
            ..rust_crypto::DEFAULT_PROVIDER.clone()
        });
        if provider.install_default().is_err() {
            tracing::trace!("a JWT crypto provider was in place already");
        }
        let Ok(mut keys) = KEYS.write() else {
            return;
        };
        if !keys.contains(&key) {
            if keys.len() == KEPT {
                keys.pop_front();
            }
            keys.push_back(key);
        }
    }

    fn verifier(
        algorithm: &Algorithm,
        key: &DecodingKey,
    ) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
        if *algorithm == Algorithm::EdDSA {
            if let Some(kept) = kept(key) {
                return Ok(Box::new(Kept(kept)));
            }
        }
        (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key)
    }

    /// The kept verifying key with exactly the bytes of `key`, an Ed25519 key.
    fn kept(key: &DecodingKey) -> Option<VerifyingKey> {
        if key.family() != AlgorithmFamily::Ed {
            return None;
        }
        let keys = KEYS.read().ok()?;
        keys.iter()
            .find(|kept| kept.as_bytes().as_slice() == key.as_bytes())
            .copied()
    }

    struct Kept(VerifyingKey);

    impl Verifier<Vec<u8>> for Kept {
        fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), Error> {
            self.0.verify(message, &Signature::from_slice(signature)?)
        }
    }

    impl JwtVerifier for Kept {
        fn algorithm(&self) -> Algorithm {
            Algorithm::EdDSA
        }
    }

    #[cfg(test)]
    mod tests {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        use ed25519_dalek::{Signer, SigningKey};

        use super::*;

        fn decoding(key: &SigningKey) -> DecodingKey {
            DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()))
                .unwrap()
        }

        #[test]
        fn a_kept_key_answers_as_the_rustcrypto_verifier_does() {
            let signing = SigningKey::from_bytes(&[7; 32]);
            keep(signing.verifying_key());
            let key = decoding(&signing);
            assert!(kept(&key).is_some());
            assert!(kept(&decoding(&SigningKey::from_bytes(&[8; 32]))).is_none());
            assert!(kept(&DecodingKey::from_secret(
                signing.verifying_key().as_bytes()
            ))
            .is_none());

            let message = b"header.claims".as_slice();
            let good = signing.sign(message).to_bytes().to_vec();
            let mut flipped = good.clone();
            flipped[5] ^= 1;
            let short = good[..63].to_vec();
            let ours = verifier(&Algorithm::EdDSA, &key).unwrap();
            let theirs =
                (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(&Algorithm::EdDSA, &key).unwrap();
            assert!(ours.verify(message, &good).is_ok());
            for signature in [&good, &flipped, &short] {
                for signed in [message, b"header.claimz".as_slice()] {
                    assert_eq!(
                        ours.verify(signed, signature).is_ok(),
                        theirs.verify(signed, signature).is_ok()
                    );
                }
            }
        }
    }
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
        Self::from_signing_key(signing)
    }

    /// A fresh random key (embedded mode).
    pub fn generate() -> Result<Self, String> {
        Self::from_signing_key(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// A fresh key in PKCS#8 v1 PEM (RFC 5208: the private key alone, as
    /// `openssl genpkey -algorithm ed25519` writes it), for `twofold keys generate`. v2
    /// (RFC 5958, with the public key beside it) is what ed25519-dalek writes by default, and
    /// not every tool reads it; [`Self::from_pem`] reads both.
    pub fn generate_pem() -> Result<Zeroizing<String>, String> {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let private_only = KeypairBytes {
            secret_key: signing.to_bytes(),
            public_key: None,
        };
        private_only
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|_| "could not encode the key".to_owned())
    }

    fn from_signing_key(signing: SigningKey) -> Result<Self, String> {
        kept_verifiers::keep(signing.verifying_key());
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
            signer: Signer::Ed25519(signing),
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
            signer: Signer::Hmac(EncodingKey::from_secret(secret)),
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
        self.issue(user, Uuid::new_v4(), PreTfa { cid: challenge })
    }

    /// An access token and a refresh token of `session`; the refresh token's `jti` is the
    /// session's current refresh token id, so the session can tell a rotated one.
    pub fn issue_pair(
        &self,
        user: UserId,
        session: SessionId,
        refresh: RefreshTokenId,
    ) -> Result<(String, String), ApiError> {
        let access = self.issue(user, Uuid::new_v4(), Access { sid: session })?;
        let refresh = self.issue(user, refresh.as_uuid(), Refresh { sid: session })?;
        Ok((access, refresh))
    }

    fn issue<K: KindClaims>(&self, user: UserId, jti: Uuid, own: K) -> Result<String, ApiError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let lifetime = i64::try_from(self.lifetime(K::KIND).as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience(K::KIND),
            sub: user,
            exp: now.saturating_add(lifetime),
            iat: now,
            nbf: now,
            jti,
            typ: K::KIND,
            own,
        };
        let mut header = Header::new(self.key.algorithm);
        header.kid = Some(self.key.kid.clone());
        self.key
            .signer
            .sign(&header, &claims)
            .map_err(|error| ApiError::Internal(Box::new(error)))
    }

    /// The claims of `token` if it is a valid, unexpired token of kind `K` signed by our key.
    pub fn verify<K: KindClaims>(&self, token: &str) -> Result<Claims<K>, ApiError> {
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
        validation.set_audience(&[self.audience(K::KIND)]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        let claims = decode::<Claims<K>>(token, &key.decoding, &validation)
            .map_err(|_| ApiError::InvalidToken)?
            .claims;
        if claims.typ != K::KIND || !self.issued_as_we_issue(&claims) {
            return Err(ApiError::InvalidToken);
        }
        Ok(claims)
    }

    /// Whether `claims` keep to what this service issues: not issued in the future (beyond the
    /// leeway), and not valid for longer than the kind's lifetime.
    fn issued_as_we_issue<K: KindClaims>(&self, claims: &Claims<K>) -> bool {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let leeway = i64::try_from(LEEWAY_SECONDS).unwrap_or(i64::MAX);
        let lifetime = i64::try_from(self.lifetime(K::KIND).as_secs()).unwrap_or(i64::MAX);
        claims.iat <= now.saturating_add(leeway)
            && claims.exp.saturating_sub(claims.iat) <= lifetime
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

    /// One token of each kind, for `user`.
    fn one_of_each(tokens: &TokenService, user: UserId) -> [(TokenKind, String); 3] {
        let session = SessionId::new_random();
        let (access, refresh) = tokens
            .issue_pair(user, session, RefreshTokenId::new_random())
            .unwrap();
        let pre_tfa = tokens
            .issue_pre_tfa(user, ChallengeId::new_random())
            .unwrap();
        [
            (TokenKind::Access, access),
            (TokenKind::Refresh, refresh),
            (TokenKind::PreTfa, pre_tfa),
        ]
    }

    fn access_token(tokens: &TokenService) -> String {
        tokens
            .issue_pair(
                UserId::new_random(),
                SessionId::new_random(),
                RefreshTokenId::new_random(),
            )
            .unwrap()
            .0
    }

    #[test]
    fn a_token_verifies_only_as_its_own_kind() {
        let tokens = service();
        for (kind, token) in one_of_each(&tokens, UserId::new_random()) {
            let as_access = tokens.verify::<Access>(&token).is_ok();
            let as_refresh = tokens.verify::<Refresh>(&token).is_ok();
            let as_pre_tfa = tokens.verify::<PreTfa>(&token).is_ok();
            assert_eq!(
                [as_access, as_refresh, as_pre_tfa],
                [
                    kind == TokenKind::Access,
                    kind == TokenKind::Refresh,
                    kind == TokenKind::PreTfa
                ],
                "{kind:?}"
            );
        }
    }

    #[test]
    fn each_kind_carries_its_own_claims_and_no_other() {
        let tokens = service();
        let session = SessionId::new_random();
        let refresh_id = RefreshTokenId::new_random();
        let challenge = ChallengeId::new_random();
        let user = UserId::new_random();
        let (access, refresh) = tokens.issue_pair(user, session, refresh_id).unwrap();
        let access = tokens.verify::<Access>(&access).unwrap();
        assert_eq!((access.sub, access.session_id()), (user, session));
        let refresh = tokens.verify::<Refresh>(&refresh).unwrap();
        assert_eq!(refresh.session_id(), session);
        assert_eq!(refresh.refresh_id(), refresh_id);
        let pre_tfa = tokens.issue_pre_tfa(user, challenge).unwrap();
        let pre_tfa = tokens.verify::<PreTfa>(&pre_tfa).unwrap();
        assert_eq!(pre_tfa.challenge_id(), challenge);
        let payload = |claims: &serde_json::Value| {
            let object = claims.as_object().unwrap();
            (object.contains_key("sid"), object.contains_key("cid"))
        };
        assert_eq!(
            payload(&serde_json::to_value(&access).unwrap()),
            (true, false)
        );
        assert_eq!(
            payload(&serde_json::to_value(&pre_tfa).unwrap()),
            (false, true)
        );
    }

    #[test]
    fn an_access_token_without_a_session_is_refused() {
        let tokens = service();
        let user = UserId::new_random();
        // Signed by our key, of the right audience and type, but naming no session.
        let without_session = tokens
            .issue(
                user,
                Uuid::new_v4(),
                PreTfa {
                    cid: ChallengeId::new_random(),
                },
            )
            .unwrap();
        let mut claims = decode::<serde_json::Value>(&without_session, &tokens.key.decoding, &{
            let mut validation = Validation::new(tokens.key.algorithm);
            validation.set_audience(&[tokens.audience(TokenKind::PreTfa)]);
            validation
        })
        .unwrap()
        .claims;
        let object = claims.as_object_mut().unwrap();
        object.remove("cid");
        object.insert("typ".to_owned(), serde_json::json!("access"));
        object.insert(
            "aud".to_owned(),
            serde_json::json!(tokens.audience(TokenKind::Access)),
        );
        let mut header = Header::new(tokens.key.algorithm);
        header.kid = Some(tokens.key.kid.clone());
        let forged = tokens.key.signer.sign(&header, &claims).unwrap();
        assert!(tokens.verify::<Access>(&forged).is_err());
    }

    /// `claims` with `edit` applied, signed by `tokens`' key as an access token.
    fn forged_access(tokens: &TokenService, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut claims = serde_json::to_value(
            tokens
                .verify::<Access>(&access_token(tokens))
                .expect("a fresh token verifies"),
        )
        .unwrap();
        edit(&mut claims);
        let mut header = Header::new(tokens.key.algorithm);
        header.kid = Some(tokens.key.kid.clone());
        tokens.key.signer.sign(&header, &claims).unwrap()
    }

    fn now() -> i64 {
        OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_token_issued_in_the_future_beyond_the_leeway_is_refused() {
        let tokens = service();
        let leeway = i64::try_from(LEEWAY_SECONDS).unwrap();
        let issued_at = |iat: i64| {
            forged_access(&tokens, |claims| {
                claims["iat"] = iat.into();
                claims["nbf"] = (now() - 1).into();
                claims["exp"] = (iat + 60).into();
            })
        };
        assert!(tokens
            .verify::<Access>(&issued_at(now() + leeway + 60))
            .is_err());
        assert!(tokens.verify::<Access>(&issued_at(now() + 1)).is_ok());
    }

    #[test]
    fn a_token_valid_for_longer_than_its_kinds_lifetime_is_refused() {
        let tokens = service();
        let lifetime = i64::try_from(tokens.lifetime(TokenKind::Access).as_secs()).unwrap();
        let lasting = |seconds: i64| {
            forged_access(&tokens, |claims| {
                let iat = claims["iat"].as_i64().unwrap();
                claims["exp"] = (iat + seconds).into();
            })
        };
        assert!(tokens.verify::<Access>(&lasting(lifetime + 1)).is_err());
        assert!(tokens.verify::<Access>(&lasting(365 * 86_400)).is_err());
        assert!(tokens.verify::<Access>(&lasting(lifetime)).is_ok());
    }

    #[test]
    fn generated_keys_are_pkcs8_v1_and_v2_keys_still_load() {
        use ed25519_dalek::pkcs8::spki::der::{self, Decode};
        let pem = JwtKey::generate_pem().unwrap();
        let (_, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
        let info = ed25519_dalek::pkcs8::PrivateKeyInfo::from_der(&der).unwrap();
        assert!(info.public_key.is_none(), "v1: the private key alone");
        assert!(JwtKey::from_pem(&pem).is_ok());
        let v2 = SigningKey::generate(&mut rand::rngs::OsRng)
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        assert!(v2.contains("BEGIN PRIVATE KEY"));
        assert!(JwtKey::from_pem(&v2).is_ok());
    }

    #[test]
    fn a_retired_key_still_verifies_and_is_published_until_dropped() {
        let old = service();
        let token = access_token(&old);
        let retired = JwtKey::from_pem(&JwtKey::generate_pem().unwrap()).unwrap();
        let old_kid = old.key.kid.clone();
        let rotated = TokenService {
            retired: vec![old.key],
            ..service()
        };
        assert!(rotated.verify::<Access>(&token).is_ok());
        let kids: Vec<String> = rotated.jwks().keys.into_iter().map(|key| key.kid).collect();
        assert_eq!(kids.len(), 2);
        assert!(kids.contains(&old_kid));
        let without = service().with_retired_keys(vec![retired]);
        assert!(without.verify::<Access>(&token).is_err());
    }

    #[test]
    fn an_hs256_service_verifies_its_own_tokens_publishes_nothing_and_refuses_eddsa_ones() {
        let hs256 = TokenService {
            key: JwtKey::hs256(&[9u8; 32]).unwrap(),
            ..service()
        };
        let token = access_token(&hs256);
        assert_eq!(decode_header(&token).unwrap().alg, Algorithm::HS256);
        assert!(hs256.verify::<Access>(&token).is_ok());
        assert!(hs256.jwks().keys.is_empty());
        let eddsa = access_token(&service());
        assert!(hs256.verify::<Access>(&eddsa).is_err());
        assert!(JwtKey::hs256(&[9u8; 31]).is_err());
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let token = access_token(&service());
        assert!(service().verify::<Access>(&token).is_err());
    }

    #[test]
    fn an_ed25519_token_is_the_one_jsonwebtoken_encodes() {
        let pem = JwtKey::generate_pem().unwrap();
        let key = JwtKey::from_pem(&pem).unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let claims =
            serde_json::json!({"sub": "ada", "exp": 1, "nested": {"list": [1, "two", null]}});
        let by_jsonwebtoken = encode(
            &header,
            &claims,
            &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(key.signer.sign(&header, &claims).unwrap(), by_jsonwebtoken);
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
