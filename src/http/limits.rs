//! Rate limits from config, with governor's GCRA limiters keyed by client id (after
//! authentication) and by source address (the public door, the token endpoint). A limited
//! request gets 429 with `Retry-After` and is audited like any other.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};
use serde::Deserialize;

use super::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per minute per institution client.
    #[serde(default = "d_client")]
    pub per_client_per_minute: u32,
    /// Requests per minute per source address on the public door and the token endpoint.
    #[serde(default = "d_public")]
    pub per_address_per_minute: u32,
}

fn d_client() -> u32 {
    6000
}
fn d_public() -> u32 {
    120
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Clone)]
pub struct RateLimits {
    clients: Arc<DefaultKeyedRateLimiter<String>>,
    addresses: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least one"))
}

impl RateLimits {
    pub fn new(c: &RateLimitConfig) -> Self {
        let limits = Self {
            clients: Arc::new(RateLimiter::keyed(quota(c.per_client_per_minute))),
            addresses: Arc::new(RateLimiter::keyed(quota(c.per_address_per_minute))),
        };
        // Forget idle keys now and then, so the tables stay small.
        let weak = (
            Arc::downgrade(&limits.clients),
            Arc::downgrade(&limits.addresses),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                match (weak.0.upgrade(), weak.1.upgrade()) {
                    (Some(c), Some(a)) => {
                        c.retain_recent();
                        a.retain_recent();
                    }
                    _ => return,
                }
            }
        });
        limits
    }

    pub fn check_client(&self, client_id: &str) -> Result<(), Error> {
        self.clients.check_key(&client_id.to_string()).map_err(|n| {
            Error::RateLimited(n.wait_time_from(DefaultClock::default().now()).as_secs() + 1)
        })
    }

    pub fn check_address(&self, ip: IpAddr) -> Result<(), Error> {
        self.addresses.check_key(&ip).map_err(|n| {
            Error::RateLimited(n.wait_time_from(DefaultClock::default().now()).as_secs() + 1)
        })
    }
}
