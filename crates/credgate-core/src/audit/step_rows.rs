//! A SQLite indexing step's subject rows, grouped here instead of by the database (migration
//! 0100). The database's GROUP BY sorted every name of the step's records: ~72,000 names for a
//! step of ~360 100-row list records, 30-36 ms of SQLite's one write lock a step and about a
//! fifth of the gateway's CPU under a list load. A hash map groups them in a few ms, outside
//! the lock. The rows are exactly what 0090's trigger derives (`group_by_matches_the_sql` in
//! `tests/api/index_steps.rs` compares the two); when a record's `subjects` is not a list of
//! names the step gives no rows and the database derives them as before.

use std::collections::HashMap;

use serde::de::IgnoredAny;

/// A row holds the `seq`s of one bucket of this many (migration 0090: `seq / 256`).
const BUCKET: i64 = 256;

/// A record's names, parsed once: what it costs a step and what it adds to the rows.
pub enum Names {
    /// A list of names (what the gateway writes).
    List(Vec<String>),
    /// Anything else the database's `json_each` would still read (planted): `count` is its
    /// `json_array_length`, what the step is costed by.
    Odd { count: i64 },
}

impl Names {
    pub fn of(subjects: Option<&str>) -> Self {
        let Some(text) = subjects else {
            return Names::Odd { count: 0 };
        };
        if let Ok(list) = serde_json::from_str::<Vec<String>>(text) {
            return Names::List(list);
        }
        let count = serde_json::from_str::<Vec<IgnoredAny>>(text).map_or(0, |v| v.len());
        Names::Odd {
            count: i64::try_from(count).unwrap_or(i64::MAX),
        }
    }

    /// `json_array_length`: what the step's cost and the database's count check read.
    pub fn count(&self) -> i64 {
        match self {
            Names::List(list) => i64::try_from(list.len()).unwrap_or(i64::MAX),
            Names::Odd { count } => *count,
        }
    }
}

/// The step rows of records `(seq, names)` as the JSON the progress move carries
/// (`[[subject, first_seq, last_seq, [seq, ...]], ...]`), or None when one of them is odd
/// (the database then derives every row of the step). Records whose `seq` is not an integer
/// are left out, as the database leaves them.
pub fn group(records: &[(Option<i64>, Names)]) -> Option<String> {
    let mut rows: HashMap<(&str, i64), Vec<i64>> = HashMap::new();
    for (seq, names) in records {
        let Names::List(list) = names else {
            return None;
        };
        let Some(seq) = *seq else { continue };
        for name in list {
            let seqs = rows.entry((name.as_str(), seq / BUCKET)).or_default();
            // A name twice in one record is one entry, as `DISTINCT` makes it.
            if seqs.last() != Some(&seq) {
                seqs.push(seq);
            }
        }
    }
    let out: Vec<(&str, i64, i64, Vec<i64>)> = rows
        .into_iter()
        .map(|((name, _), seqs)| {
            let (first, last) = seqs
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
            (name, first, last, seqs)
        })
        .collect();
    serde_json::to_string(&out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Names {
        Names::List(names.iter().map(|s| s.to_string()).collect())
    }

    fn rows(json: &str) -> Vec<(String, i64, i64, Vec<i64>)> {
        let mut v: Vec<(String, i64, i64, Vec<i64>)> = serde_json::from_str(json).unwrap();
        v.sort();
        v
    }

    #[test]
    fn names_are_grouped_per_bucket_with_their_span() {
        let got = group(&[
            (Some(255), list(&["a", "b"])),
            (Some(256), list(&["a"])),
            (Some(300), list(&["a", "a"])),
            (None, list(&["a"])),
        ])
        .unwrap();
        assert_eq!(
            rows(&got),
            vec![
                ("a".into(), 255, 255, vec![255]),
                ("a".into(), 256, 300, vec![256, 300]),
                ("b".into(), 255, 255, vec![255]),
            ]
        );
    }

    #[test]
    fn an_odd_record_leaves_the_rows_to_the_database() {
        assert!(group(&[(Some(1), list(&["a"])), (Some(2), Names::of(Some("[1]")))]).is_none());
        assert_eq!(Names::of(Some("[1, \"x\", {}]")).count(), 3);
        assert_eq!(Names::of(Some("{\"a\": 1}")).count(), 0);
        assert_eq!(Names::of(None).count(), 0);
        assert_eq!(Names::of(Some("[\"a\\\"b\", \"\u{957f}\"]")).count(), 2);
    }
}
