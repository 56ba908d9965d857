//! The data subject's rights: objections to records (with marking and delivery to the store),
//! and the clock their deadlines run on.

pub mod events;
pub mod marks;
pub mod objections;
pub mod outbox;
pub mod statements;

use std::sync::atomic::{AtomicI64, Ordering};

/// Why a workflow refused a request. The web layer maps it to its problem (`http::error`).
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The request is malformed or names something it may not: nothing was filed.
    #[error("{0}")]
    BadRequest(String),
}

/// Wall-clock time plus an offset that tests move forward, so deadlines can be tested without
/// waiting days.
#[derive(Debug, Default)]
pub struct Clock {
    offset_us: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        crate::storage::now_micros() + self.offset_us.load(Ordering::Relaxed)
    }

    pub fn advance_days(&self, days: i64) {
        self.offset_us
            .fetch_add(days * 86_400 * 1_000_000, Ordering::Relaxed);
    }
}

const DAY_US: i64 = 86_400 * 1_000_000;

/// `days` working days after `from` (Saturdays and Sundays skipped), same time of day.
pub fn add_working_days(from_us: i64, days: u32) -> i64 {
    let mut t = from_us;
    let mut left = days;
    while left > 0 {
        t += DAY_US;
        let weekday = time::OffsetDateTime::from_unix_timestamp(t / 1_000_000)
            .map(|d| d.weekday().number_from_monday())
            .unwrap_or(1);
        if weekday <= 5 {
            left -= 1;
        }
    }
    t
}

pub fn add_days(from_us: i64, days: u32) -> i64 {
    from_us + days as i64 * DAY_US
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// Working days to accept (or reject) an objection.
    #[serde(default = "d_accept")]
    pub accept_working_days: u32,
    /// Calendar days to decide it.
    #[serde(default = "d_decide")]
    pub decide_days: u32,
    /// How often the outbox deliverer and the deadline watcher look for work.
    #[serde(default = "d_poll")]
    pub poll_ms: u64,
}

fn d_accept() -> u32 {
    3
}
fn d_decide() -> u32 {
    20
}
fn d_poll() -> u64 {
    250
}

impl Default for WorkflowConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        (time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp())
            * 1_000_000
    }

    #[test]
    fn working_days_skip_weekends() {
        // Friday + 3 working days = Wednesday.
        assert_eq!(
            add_working_days(at("2026-11-27T10:00:00Z"), 3),
            at("2026-12-02T10:00:00Z")
        );
        // Wednesday + 3 = Monday.
        assert_eq!(
            add_working_days(at("2026-11-25T10:00:00Z"), 3),
            at("2026-11-30T10:00:00Z")
        );
        assert_eq!(
            add_days(at("2026-11-27T10:00:00Z"), 20),
            at("2026-12-17T10:00:00Z")
        );
    }
}
