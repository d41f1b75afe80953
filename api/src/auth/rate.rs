//! Requests per second per caller (`ORDO_RATE_LIMIT`, default `100/s`,
//! bursts of as many): per token when the request carries a valid one, per
//! client address otherwise. A caller over its rate gets 429 `rate_limited`
//! with `Retry-After`, `RateLimit-Policy` and `RateLimit` headers (the IETF
//! httpapi draft's structured form); other callers are untouched.
//!
//! The client address is the connection's peer, unless that peer is one of
//! `ORDO_TRUSTED_PROXIES`: then the address its `X-Forwarded-For` names
//! (the rightmost one that is not itself a trusted proxy). A client cannot
//! choose its own address by sending the header.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// `ORDO_RATE_LIMIT`: `N/s`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSetting {
    /// No limit.
    Off,
    /// At most this many requests a second, bursts of as many.
    PerSecond(NonZeroU32),
}

impl FromStr for RateSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateSetting::Off);
        }
        let number = s.strip_suffix("/s").unwrap_or(s);
        number
            .parse::<NonZeroU32>()
            .map(RateSetting::PerSecond)
            .map_err(|_| {
                format!("{s:?} is no rate: write N/s (requests a second, N at least 1) or off")
            })
    }
}

/// Whom a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// An authenticated caller, by actor.
    Actor(String),
    /// Anyone else, by client address.
    Address(IpAddr),
}

type Limiter = RateLimiter<
    RateKey,
    governor::state::keyed::DefaultKeyedStateStore<RateKey>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// The limits; cheap to clone.
#[derive(Debug, Clone)]
pub struct RateLimits {
    limiter: Option<Arc<Limiter>>,
    per_second: u32,
    trusted_proxies: Arc<Vec<IpAddr>>,
}

impl RateLimits {
    /// No limits.
    pub fn off() -> RateLimits {
        RateLimits {
            limiter: None,
            per_second: 0,
            trusted_proxies: Arc::default(),
        }
    }

    /// Limits as set, trusting `X-Forwarded-For` from `trusted_proxies`
    /// only. Forgets idle callers every minute while it lives.
    pub fn new(setting: RateSetting, trusted_proxies: Vec<IpAddr>) -> RateLimits {
        let RateSetting::PerSecond(rate) = setting else {
            return RateLimits {
                trusted_proxies: Arc::new(trusted_proxies),
                ..RateLimits::off()
            };
        };
        let limiter: Arc<Limiter> = Arc::new(
            DefaultKeyedRateLimiter::<RateKey>::keyed(Quota::per_second(rate).allow_burst(rate))
                .with_middleware::<StateInformationMiddleware>(),
        );
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else {
                    return;
                };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
        RateLimits {
            limiter: Some(limiter),
            per_second: rate.get(),
            trusted_proxies: Arc::new(trusted_proxies),
        }
    }

    /// The address a request comes from (see the module's description).
    pub fn client_address(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|a| !self.trusted_proxies.contains(a))
                .unwrap_or(peer),
        )
    }

    /// Counts one request against `key`; 429 when over.
    pub fn check(&self, key: &RateKey) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.check_key(key) {
            Ok(_) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let retry_after = wait.as_secs_f64().ceil().max(1.0) as u64;
                let policy = self.per_second;
                Err(ApiError::RateLimited {
                    retry_after,
                    headers: vec![
                        ("ratelimit-policy", format!("\"per-caller\";q={policy};w=1")),
                        ("ratelimit", format!("\"per-caller\";r=0;t={retry_after}")),
                    ],
                })
            }
        }
    }
}

/// `ORDO_TRUSTED_PROXIES`: addresses separated by commas.
pub fn parse_proxies(text: &str) -> Result<Vec<IpAddr>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| format!("ORDO_TRUSTED_PROXIES: {a:?} is not an IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rates_read_as_written() {
        assert_eq!(
            "100/s".parse::<RateSetting>(),
            Ok(RateSetting::PerSecond(NonZeroU32::new(100).unwrap()))
        );
        assert_eq!(
            "7".parse::<RateSetting>(),
            Ok(RateSetting::PerSecond(NonZeroU32::new(7).unwrap()))
        );
        assert_eq!("OFF".parse::<RateSetting>(), Ok(RateSetting::Off));
        assert!("0/s".parse::<RateSetting>().is_err());
        assert!("fast".parse::<RateSetting>().is_err());
    }

    #[tokio::test]
    async fn a_caller_over_its_rate_is_refused_and_others_are_not() {
        let limits = RateLimits::new("3/s".parse().unwrap(), Vec::new());
        let a = RateKey::Actor("token:a".into());
        let b = RateKey::Actor("token:b".into());
        for _ in 0..3 {
            limits.check(&a).unwrap();
        }
        let refused = limits.check(&a).unwrap_err();
        assert_eq!(refused.status(), 429);
        limits.check(&b).unwrap();
        assert!(RateLimits::off().check(&a).is_ok());
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        let peer = Some(SocketAddr::new(proxy, 4000));
        let direct = Some(SocketAddr::new("198.51.100.9".parse().unwrap(), 4000));
        let trusting = RateLimits::new(RateSetting::Off, vec![proxy]);
        assert_eq!(
            trusting.client_address(peer, &headers),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            trusting.client_address(direct, &headers),
            Some("198.51.100.9".parse().unwrap())
        );
        let trusting_none = RateLimits::new(RateSetting::Off, Vec::new());
        assert_eq!(trusting_none.client_address(peer, &headers), Some(proxy));
        assert!(parse_proxies("10.0.0.1, ::1").is_ok());
        assert!(parse_proxies("10.0.0.0/8").is_err());
    }
}
