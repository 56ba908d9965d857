//! 429 summaries: anonymous traffic cannot flood the audit log. The first 429 of an (address,
//! door) in a window is recorded like any answer; the further ones of that window are only
//! counted, and one `rate_limit_summary` record (address, door, count, first and last time) is
//! appended when the window closes. Only 429s on anonymous doors come here: nothing released,
//! and no other refusal, is ever summarised away.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use super::AuditRecord;

/// The kind of a summary record.
pub const SUMMARY_KIND: &str = "rate_limit_summary";

/// Bound on open windows; past it a new (address, door) is recorded individually (fail towards
/// more records, never fewer).
const WINDOWS_MAX: usize = 100_000;

#[derive(Debug, Clone)]
struct Window {
    opened_us: i64,
    /// 429s of this window not recorded one by one.
    suppressed: u64,
    first_us: i64,
    last_us: i64,
    /// The door's path, as the individual records store it.
    path: String,
}

impl Window {
    fn new(now_us: i64, path: &str) -> Self {
        Self {
            opened_us: now_us,
            suppressed: 0,
            first_us: now_us,
            last_us: now_us,
            path: path.to_string(),
        }
    }

    /// Open until `window_us` after it opened. A window opened ahead of `now_us` (the clock was
    /// stepped back since) is over: kept open, it would fold every 429 of its address and door
    /// into one summary until the clock caught up (an hour's step: an hour unrecorded).
    fn is_open(&self, now_us: i64, window_us: i64) -> bool {
        (0..window_us).contains(&(now_us - self.opened_us))
    }
}

pub struct Flood {
    window_us: i64,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    windows: HashMap<(String, &'static str), Window>,
    /// Summaries of windows replaced by a new one before the tick collected them.
    due: Vec<AuditRecord>,
}

impl Flood {
    pub fn new(window: Duration) -> Self {
        Self {
            window_us: window.as_micros() as i64,
            open: Mutex::default(),
        }
    }

    /// Called for each 429 of an anonymous door: true if it must be recorded individually (the
    /// first of its window), false if it is counted for the window's summary instead.
    pub fn admit(&self, addr: &str, door: &'static str, path: &str, now_us: i64) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Open { windows, due } = &mut *open;
        let key = (addr.to_string(), door);
        let full = windows.len() >= WINDOWS_MAX;
        match windows.get_mut(&key) {
            Some(w) if w.is_open(now_us, self.window_us) => {
                if w.suppressed == 0 {
                    w.first_us = now_us;
                }
                w.suppressed += 1;
                w.last_us = now_us;
                false
            }
            // A window that has run out but not been collected yet: its summary falls due now.
            Some(w) => {
                if w.suppressed > 0 {
                    due.push(summary(addr, door, w, now_us));
                }
                *w = Window::new(now_us, path);
                true
            }
            None if full => true,
            None => {
                windows.insert(key, Window::new(now_us, path));
                true
            }
        }
    }

    /// Closes the windows that ended by `now_us` (all of them with `everything`): the summary
    /// records to append, for windows that suppressed anything.
    pub fn close(&self, now_us: i64, everything: bool) -> Vec<AuditRecord> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let Open { windows, due } = &mut *open;
        let mut due = std::mem::take(due);
        windows.retain(|(addr, door), w| {
            if !everything && w.is_open(now_us, self.window_us) {
                return true;
            }
            if w.suppressed > 0 {
                due.push(summary(addr, door, w, now_us));
            }
            false
        });
        due
    }
}

/// The record of a window's suppressed 429s. The chained record has no columns for a count or a
/// time range, so they travel in `masked` (a count per name, as masking counts do):
/// `suppressed_429`, `first_us`, `last_us`.
fn summary(addr: &str, door: &str, w: &Window, now_us: i64) -> AuditRecord {
    AuditRecord {
        id: format!("au_{}", uuid::Uuid::now_v7().simple()),
        time_us: now_us,
        request_id: String::new(),
        kind: SUMMARY_KIND.into(),
        method: "*".into(),
        path: w.path.clone(),
        store: None,
        dataset: Some(door.to_string()),
        decision: "deny".into(),
        rule: Some("rate-limited".into()),
        masked: [
            ("suppressed_429".to_string(), w.suppressed),
            ("first_us".to_string(), w.first_us.max(0) as u64),
            ("last_us".to_string(), w.last_us.max(0) as u64),
        ]
        .into_iter()
        .collect(),
        status: 429,
        client_addr: addr.to_string(),
        ..AuditRecord::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_recorded_then_counted_then_one_summary() {
        let f = Flood::new(Duration::from_secs(60));
        assert!(f.admit("10.0.0.1", "public-data", "/public/stores/p/x", 0));
        for i in 1..50 {
            assert!(!f.admit("10.0.0.1", "public-data", "/public/stores/p/x", i));
        }
        // Another door or address has its own window.
        assert!(f.admit("10.0.0.1", "token", "/oauth/token", 5));
        assert!(f.admit("10.0.0.2", "public-data", "/public/stores/p/x", 5));
        assert!(f.close(59_000_000, false).is_empty());
        let due = f.close(60_000_000, false);
        assert_eq!(
            due.len(),
            1,
            "windows with nothing suppressed need no summary"
        );
        let s = &due[0];
        assert_eq!(s.kind, SUMMARY_KIND);
        assert_eq!(s.client_addr, "10.0.0.1");
        assert_eq!(s.masked["suppressed_429"], 49);
        assert_eq!((s.masked["first_us"], s.masked["last_us"]), (1, 49));
        // The next window starts with an individual record again.
        assert!(f.admit("10.0.0.1", "public-data", "/public/stores/p/x", 61_000_000));
    }

    #[test]
    fn a_window_opened_ahead_of_a_clock_stepped_back_closes_at_once() {
        let f = Flood::new(Duration::from_secs(60));
        let t = 10_000_000_000;
        assert!(f.admit("a", "token", "/oauth/token", t));
        assert!(!f.admit("a", "token", "/oauth/token", t + 1));
        // The clock steps back an hour: the window is over, its summary due, the next 429 of
        // the address is recorded on its own again.
        let back = t - 3_600_000_000;
        let due = f.close(back, false);
        assert_eq!(due.len(), 1, "the summary is not held for an hour");
        assert_eq!(due[0].masked["suppressed_429"], 1);
        assert!(f.admit("a", "token", "/oauth/token", back));
        assert!(!f.admit("a", "token", "/oauth/token", back + 1));
        // A 429 on a window opened ahead of the clock starts a new one, with its summary.
        assert!(f.admit("b", "token", "/oauth/token", t));
        assert!(!f.admit("b", "token", "/oauth/token", t + 1));
        assert!(f.admit("b", "token", "/oauth/token", back));
        assert_eq!(f.close(back, false).len(), 1);
    }

    #[test]
    fn shutdown_flushes_open_windows() {
        let f = Flood::new(Duration::from_secs(60));
        f.admit("a", "token", "/oauth/token", 0);
        f.admit("a", "token", "/oauth/token", 1);
        assert_eq!(f.close(2, true).len(), 1);
        assert!(f.close(3, true).is_empty());
    }
}
