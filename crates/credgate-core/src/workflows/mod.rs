//! The data subject's rights: objections to records (with marking and delivery to the store),
//! complaints, subject requests and whistleblower reports, all written in one pattern
//! (`machine`: a typed status, one transition table, one guarded move with history, one text
//! validator), and the clock their deadlines run on.

pub mod complaints;
pub mod events;
pub mod machine;
pub mod marks;
pub mod objections;
pub mod outbox;
pub mod reports;
pub mod requests;
pub mod restrictions;
pub mod statements;
pub mod text;

/// Why a workflow refused a request. The web layer maps it to its problem (`web::error`).
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The request is malformed or names something it may not: nothing was filed.
    #[error("{0}")]
    BadRequest(String),
    /// No such item, or not the caller's (another subject's id answers exactly like this).
    #[error("{0}")]
    NotFound(String),
    /// The item's status does not allow the move; the message names the allowed next states.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

use crate::storage::StorageError;

pub use crate::clock::Clock;

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
// The deadlines are configuration (`[workflows]`), not policy values: they say how fast this
// operator's office works, within the law's maxima that the comments below name; the policy
// files say what may be read. The self-query's free number, which is what a subject may ask
// for, is a policy value (`free_per_year` on the `self_query` purpose).
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
    /// Calendar days to handle a complaint and answer the complainant in writing.
    /// Source: 征信业管理条例 (Regulation on the Administration of the Credit Reporting
    /// Industry, 2013) art. 26: the office that takes a complaint answers it in writing within
    /// 30 days of taking it.
    #[serde(default = "d_complaint")]
    pub complaint_days: u32,
    /// Subject requests (credit repair, correction, restriction, deletion): working days to
    /// accept or refuse, working days to finish once accepted, and the one extension's length.
    /// Source: the energy sector's credit-repair rules (国家能源局, 能源行业信用修复管理办法, as
    /// issue 15 item 2 states them): accept or refuse within 3 working days, finish within 7,
    /// extendable once by 10. Applied to every request kind until a kind's own rule is set.
    #[serde(default)]
    pub requests: RequestDeadlines,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestDeadlines {
    #[serde(default = "d_req_accept")]
    pub accept_working_days: u32,
    #[serde(default = "d_req_finish")]
    pub finish_working_days: u32,
    #[serde(default = "d_req_extension")]
    pub extension_working_days: u32,
}

impl Default for RequestDeadlines {
    fn default() -> Self {
        Self {
            accept_working_days: d_req_accept(),
            finish_working_days: d_req_finish(),
            extension_working_days: d_req_extension(),
        }
    }
}

fn d_complaint() -> u32 {
    30
}
fn d_req_accept() -> u32 {
    3
}
fn d_req_finish() -> u32 {
    7
}
fn d_req_extension() -> u32 {
    10
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
