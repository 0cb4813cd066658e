//! A per-client-address rate limit on the endpoints anyone can call without a token (sign-up,
//! login, refresh, password reset, the second login step).
//!
//! It complements the per-account lockout of the domain: the lockout stops guessing against
//! one account from anywhere, the rate limit stops one address from guessing against many
//! accounts. Because the lockout only ever lasts minutes (1 doubling to at most 60) and each
//! factor is locked separately, an attacker who fails a victim's password on purpose cannot
//! keep them out for long, and cannot lock their backup codes at all (ASVS 5.0 §6.1.1).
//!
//! The client address is the TCP peer, or, when the peer is a configured trusted proxy, the
//! right-most address in `X-Forwarded-For` that is not itself a trusted proxy: a client can
//! prepend anything to that header, but not what the proxies append.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::error::ApiError;

/// The limited paths.
const LIMITED_PATHS: [&str; 7] = [
    "/api/v1/auth/signup",
    "/api/v1/auth/login",
    "/api/v1/auth/refresh",
    "/api/v1/auth/forgot-password",
    "/api/v1/auth/reset-password",
    "/api/v1/tfa/login_tfa",
    "/api/v1/tfa/recover_tfa",
];

/// The limiter and who may speak for clients.
pub struct ClientRateLimit {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    trusted_proxies: Vec<IpAddr>,
}

impl ClientRateLimit {
    /// `per_minute` requests per client address (a burst of that many, refilled evenly over
    /// the minute); `None` when `per_minute` is 0 (disabled).
    pub fn new(per_minute: u32, trusted_proxies: Vec<IpAddr>) -> Option<Arc<Self>> {
        let per_minute = NonZeroU32::new(per_minute)?;
        let limiter = RateLimiter::keyed(Quota::per_minute(per_minute));
        let limit = Arc::new(Self {
            limiter,
            trusted_proxies,
        });
        // Forget idle addresses so the table stays small.
        let weak = Arc::downgrade(&limit);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(limit) => limit.limiter.retain_recent(),
                    None => return,
                }
            }
        });
        Some(limit)
    }

    /// The address a request is counted against.
    pub fn client_address(&self, peer: IpAddr, forwarded_for: Option<&HeaderValue>) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let Some(chain) = forwarded_for.and_then(|value| value.to_str().ok()) else {
            return peer;
        };
        chain
            .rsplit(',')
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .find(|hop| !self.trusted_proxies.contains(hop))
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
    let client = limit.client_address(peer, request.headers().get("x-forwarded-for"));
    match limit.limiter.check_key(&client) {
        Ok(()) => next.run(request).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs().max(1);
            tracing::info!(target: "security", %client, "rate limited");
            let mut response = ApiError::rate_limited(seconds).into_response();
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(proxies: &str) -> Arc<ClientRateLimit> {
        ClientRateLimit::new(10, parse_proxies(proxies).unwrap()).unwrap()
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

    #[test]
    fn zero_disables_the_limit_and_bad_proxies_are_refused() {
        assert!(ClientRateLimit::new(0, Vec::new()).is_none());
        assert!(parse_proxies("192.0.2.1, nonsense").is_err());
    }
}
