//! Time as stored: unix microseconds, UTC, and its rendering for people and JSON.

/// Now, as stored: unix microseconds, UTC.
pub fn now_micros() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000) as i64
}

/// Renders stored microseconds as RFC 3339 for people and JSON.
pub fn micros_to_rfc3339(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(us as i128 * 1_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
