//! A per-client-address rate limit on the endpoints anyone can call without a token (sign-up,
//! login, refresh, password reset, the second login step).
//!
//! It complements the per-account lockout of the domain: the lockout stops guessing against
//! one account from anywhere, the rate limit stops one address from guessing against many
//! accounts. Because the lockout only ever lasts minutes (1 doubling to at most 60) and each
//! factor is locked separately, an attacker who fails a victim's password on purpose cannot
//! keep them out for long, and cannot lock their backup codes at all (ASVS 5.0 §6.1.1).
//!
//! Requests are counted per client (an IPv4 address or an IPv6 /64, see
//! [`crate::app::client_limit`]): on Postgres in a table every instance shares, in the embedded
//! mode in memory.
//!
//! The client address is the TCP peer, or, when the peer is a configured trusted proxy, the
//! right-most address in `X-Forwarded-For` that is not itself a trusted proxy: a client can
//! prepend anything to that header, but not what the proxies append.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::client_limit::{Admission, ClientKey, ClientLimiter};
use crate::http::error::ApiError;

/// The limited paths.
const LIMITED_PATHS: [&str; 11] = [
    "/api/v1/auth/signup",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/forgot-password",
    "/api/v1/auth/reset-password",
    "/api/v1/tfa/login_tfa",
    "/api/v1/tfa/recover_tfa",
    "/api/v1/tfa/passkey/start",
    "/api/v1/tfa/passkey/finish",
    "/api/v1/auth/passkey/start",
    "/api/v1/auth/passkey/finish",
];

/// The limiter and who may speak for clients.
pub struct ClientRateLimit {
    limiter: Arc<dyn ClientLimiter>,
    trusted_proxies: Vec<IpAddr>,
}

impl ClientRateLimit {
    /// Counts requests with `limiter`, believing `X-Forwarded-For` from `trusted_proxies`.
    pub fn new(limiter: Arc<dyn ClientLimiter>, trusted_proxies: Vec<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            limiter,
            trusted_proxies: trusted_proxies
                .into_iter()
                .map(|proxy| proxy.to_canonical())
                .collect(),
        })
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies.contains(&address.to_canonical())
    }

    /// The address a request is counted against.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&HeaderValue>) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        let Some(chain) = forwarded_for.and_then(|value| value.to_str().ok()) else {
            return peer;
        };
        chain
            .rsplit(',')
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .find(|hop| !self.is_trusted(*hop))
            .unwrap_or(peer)
    }
}

/// Parses `TWOFOLD_TRUSTED_PROXIES`: comma-separated IP addresses.
pub fn parse_proxies(spec: &str) -> Result<Vec<IpAddr>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|proxy| !proxy.is_empty())
        .map(|proxy| {
            proxy
                .parse()
                .map_err(|_| format!("TWOFOLD_TRUSTED_PROXIES: `{proxy}` is not an IP address"))
        })
        .collect()
}

/// The middleware: counts limited requests and answers 429 with `Retry-After` past the limit.
pub async fn limit(
    State(limit): State<Arc<ClientRateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    if !LIMITED_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let Some(peer) = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
    else {
        return next.run(request).await;
    };
    let client =
        ClientKey::of(limit.client_address(peer, request.headers().get("x-forwarded-for")));
    match limit.limiter.admit(client).await {
        Ok(Admission::Admitted) => next.run(request).await,
        Ok(Admission::Refused { retry_after }) => {
            let seconds = retry_after.as_secs().max(1);
            tracing::info!(target: "security", %client, "rate limited");
            let mut response = ApiError::rate_limited(seconds).into_response();
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
        // The limited endpoints all need the database too: answer as they would.
        Err(error) => ApiError::from(error).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::app::client_limit::{MemClientLimiter, SWEEP_PERIOD};

    fn limit(proxies: &str) -> Arc<ClientRateLimit> {
        let limiter = MemClientLimiter::start(NonZeroU32::new(10).unwrap(), SWEEP_PERIOD);
        ClientRateLimit::new(limiter, parse_proxies(proxies).unwrap())
    }

    #[tokio::test]
    async fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let direct: IpAddr = "198.51.100.7".parse().unwrap();
        let proxy: IpAddr = "192.0.2.1".parse().unwrap();
        let header = HeaderValue::from_static("203.0.113.9, 203.0.113.50");
        let untrusted = limit("");
        assert_eq!(untrusted.client_address(direct, Some(&header)), direct);
        let trusted = limit("192.0.2.1");
        assert_eq!(
            trusted.client_address(proxy, Some(&header)),
            "203.0.113.50".parse::<IpAddr>().unwrap(),
            "the right-most hop, which the proxy appended, not what the client wrote"
        );
        assert_eq!(trusted.client_address(proxy, None), proxy);
    }

    #[tokio::test]
    async fn a_proxy_is_trusted_under_its_ipv4_mapped_address_too() {
        let header = HeaderValue::from_static("203.0.113.9");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            limit("192.0.2.1").client_address(mapped, Some(&header)),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let header = HeaderValue::from_static("203.0.113.9, ::ffff:192.0.2.1");
        let proxy: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            limit("::ffff:192.0.2.1").client_address(proxy, Some(&header)),
            "203.0.113.9".parse::<IpAddr>().unwrap(),
            "a mapped hop of a trusted proxy is skipped"
        );
    }

    #[test]
    fn bad_proxies_are_refused() {
        assert!(parse_proxies("192.0.2.1, nonsense").is_err());
    }
}
