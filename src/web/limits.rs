//! The web half of the rate limits: the layer that charges each anonymous door's bucket, and
//! the 429 it answers with. The buckets themselves are `crate::limits` (below the web layer,
//! since authentication charges the per-client bucket too).

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{AppState, Error};
pub use crate::limits::*;

/// Marks a 429 produced by `limit` (a door's bucket ran out): only these are summarised in the
/// audit log; any other 429 is recorded one by one.
#[derive(Debug, Clone, Copy)]
pub struct DoorLimited;

/// Whether `res` is a 429 a door's bucket produced: only these may be summarised in the audit
/// log; any other answer, whatever its status, is recorded one by one.
pub fn door_limited(res: &Response) -> bool {
    res.status() == http::StatusCode::TOO_MANY_REQUESTS
        && res.extensions().get::<DoorLimited>().is_some()
}

/// The 429 of a door whose bucket ran out, marked as such for the audit log.
fn refusal(limits: &RateLimits, door: Door, wait: u64) -> Response {
    let mut res = Error::RateLimited(wait).into_response();
    for (name, value) in limits.exhausted(door, wait) {
        res.headers_mut().insert(name, value);
    }
    res.extensions_mut().insert(DoorLimited);
    res
}

/// The layer that charges each anonymous door's bucket before the handler runs. It sits inside
/// the audit layer, so a 429 is accounted for (individually or in a summary).
pub async fn limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(door) = Door::of(req.method(), req.uri().path()) else {
        // A known caller's bucket is charged inside the handler (authentication): its answer,
        // a 429 included, says that bucket's state.
        let (mut res, charge) = charging(next.run(req)).await;
        if let Some(charge) = charge {
            for (name, value) in charge.headers() {
                res.headers_mut().insert(name, value);
            }
        }
        return res;
    };
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return Error::Internal(anyhow::anyhow!("no peer address on an anonymous door"))
            .into_response();
    };
    match state.limits.check_door(door, peer.ip()) {
        Ok(headers) => {
            let mut res = next.run(req).await;
            for (name, value) in headers {
                res.headers_mut().insert(name, value);
            }
            res
        }
        Err(wait) => refusal(&state.limits, door, wait),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[tokio::test]
    async fn only_a_doors_own_429_may_be_summarised() {
        let limits = RateLimits::new(&RateLimitConfig {
            receipts_per_address_per_minute: 1,
            ..RateLimitConfig::default()
        });
        let ip = "10.0.0.1".parse::<IpAddr>().unwrap();
        assert!(limits.check_door(Door::Receipt, ip).is_ok());
        let wait = limits.check_door(Door::Receipt, ip).unwrap_err();
        let refused = refusal(&limits, Door::Receipt, wait);
        assert_eq!(refused.status(), 429);
        assert_eq!(
            refused.headers()["ratelimit"],
            format!("\"report-receipt\";r=0;t={wait}").as_str()
        );
        assert_eq!(
            refused.headers()["ratelimit-policy"],
            "\"report-receipt\";q=1;w=60"
        );
        assert!(door_limited(&refused));
        // A 429 from anywhere else (a handler, a store's answer passed on) is not the door's.
        assert!(!door_limited(&Error::RateLimited(5).into_response()));
        let mut other = http::StatusCode::OK.into_response();
        other.extensions_mut().insert(DoorLimited);
        assert!(!door_limited(&other));
    }
}
