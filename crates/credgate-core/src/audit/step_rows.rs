//! A SQLite indexing step's subject rows, grouped here instead of by the database (migration
//! 0100). The database's GROUP BY sorted every name of the step's records: ~72,000 names for a
//! step of ~360 100-row list records, 30-36 ms of SQLite's one write lock a step and about a
//! fifth of the gateway's CPU under a list load. A hash map groups them in a few ms, outside
//! the lock. The rows are exactly what 0090's trigger derives (`the_rows_a_step_groups_are_the_rows_the_database_derives` in
//! `tests/api/step_rows.rs` compares the two); when a record's `subjects` is not a list of
//! names the step gives no rows and the database derives them as before.

use std::{borrow::Cow, collections::HashMap};

use foldhash::fast::RandomState;

use serde::{Deserialize, de::IgnoredAny};

/// A row holds the `seq`s of one bucket of this many (migration 0090: `seq / 256`).
const BUCKET: i64 = 256;

/// A name as read from a record's `subjects`, borrowed from its text unless it has escapes:
/// a step of 360 list records reads 72,000 names and owns only the ~200 distinct ones.
#[derive(Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

/// A step's rows as its records are added, one at a time (the step reads them as a stream: it
/// holds what the driver buffers, not the whole scan, and one `String` a distinct name).
#[derive(Debug, Default)]
pub struct Grouper {
    /// name -> bucket -> the `seq`s naming it, in the order read. foldhash, not SipHash: the
    /// names are the gateway's own records', and every name of a step is hashed here.
    rows: HashMap<String, HashMap<i64, Vec<i64>, RandomState>, RandomState>,
    /// A record whose `subjects` is not a list of names was added: the database derives the
    /// step's rows instead.
    odd: bool,
    /// How many rows (name, bucket) there are so far.
    count: usize,
}

impl Grouper {
    /// Adds one record: its `seq` (None when it is not an integer: only planted, and left out
    /// as the database leaves it) and its `subjects` (None when not valid JSON). Returns what
    /// the record adds to the step's cost: its `json_array_length` (0 when not UTF-8 JSON).
    pub fn add(&mut self, seq: Option<i64>, subjects: Option<&[u8]>) -> i64 {
        let Some(text) = subjects else {
            return 0;
        };
        let Ok(names) = serde_json::from_slice::<Vec<Name<'_>>>(text) else {
            self.odd = true;
            let count = serde_json::from_slice::<Vec<IgnoredAny>>(text).map_or(0, |v| v.len());
            return self.derived(count);
        };
        // After an odd record the database derives every row: only the cost is wanted.
        if self.odd {
            return self.derived(names.len());
        }
        let count = i64::try_from(names.len()).unwrap_or(i64::MAX);
        let Some(seq) = seq else { return count };
        for Name(name) in names {
            let buckets = match self.rows.get_mut(name.as_ref()) {
                Some(b) => b,
                None => self.rows.entry(name.into_owned()).or_default(),
            };
            let seqs = buckets.entry(seq / BUCKET).or_insert_with(|| {
                self.count += 1;
                Vec::new()
            });
            // A name twice in one record is one entry, as `DISTINCT` makes it.
            if seqs.last() != Some(&seq) {
                seqs.push(seq);
            }
        }
        count
    }

    /// A record whose rows the database will derive: each name counts as a row (the database
    /// groups them inside the lock, so `rows` must still stop the step), and the cost.
    fn derived(&mut self, names: usize) -> i64 {
        self.count = self.count.saturating_add(names);
        i64::try_from(names).unwrap_or(i64::MAX)
    }

    /// How many rows the step would write so far: what its move costs inside the write lock.
    pub fn rows(&self) -> usize {
        self.count
    }

    /// The rows as the JSON the progress move carries (`[[subject, first_seq, last_seq,
    /// [seq, ...]], ...]`), or None when a record was odd.
    pub fn finish(self) -> Option<String> {
        if self.odd {
            return None;
        }
        let out: Vec<(&str, i64, i64, &[i64])> = self
            .rows
            .iter()
            .flat_map(|(name, buckets)| {
                buckets.values().map(move |seqs| {
                    let first = seqs.iter().min().copied().unwrap_or_default();
                    let last = seqs.iter().max().copied().unwrap_or_default();
                    (name.as_str(), first, last, seqs.as_slice())
                })
            })
            .collect();
        serde_json::to_string(&out).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(json: &str) -> Vec<(String, i64, i64, Vec<i64>)> {
        let mut v: Vec<(String, i64, i64, Vec<i64>)> = serde_json::from_str(json).unwrap();
        v.sort();
        v
    }

    #[test]
    fn names_are_grouped_per_bucket_with_their_span() {
        let mut g = Grouper::default();
        assert_eq!(g.add(Some(255), Some(br#"["a", "b"]"#.as_slice())), 2);
        assert_eq!(g.add(Some(256), Some(br#"["a"]"#.as_slice())), 1);
        assert_eq!(g.add(Some(300), Some(br#"["a", "a"]"#.as_slice())), 2);
        assert_eq!(g.add(None, Some(br#"["a"]"#.as_slice())), 1);
        assert_eq!(g.add(Some(301), None), 0);
        assert_eq!(g.add(Some(302), Some(br#"["\u5b81\"q"]"#.as_slice())), 1);
        assert_eq!(g.rows(), 4);
        assert_eq!(
            rows(&g.finish().unwrap()),
            vec![
                ("a".into(), 255, 255, vec![255]),
                ("a".into(), 256, 300, vec![256, 300]),
                ("b".into(), 255, 255, vec![255]),
                ("\u{5b81}\"q".into(), 302, 302, vec![302]),
            ]
        );
    }

    #[test]
    fn an_odd_record_leaves_the_rows_to_the_database() {
        let mut g = Grouper::default();
        assert_eq!(g.add(Some(1), Some(br#"["a"]"#.as_slice())), 1);
        assert_eq!(g.add(Some(2), Some(b"[1, \"x\", {}]".as_slice())), 3);
        assert!(g.finish().is_none());
        let mut g = Grouper::default();
        assert_eq!(g.add(Some(1), Some(br#"{"a": "x"}"#.as_slice())), 0);
        assert!(g.finish().is_none());
    }

    #[test]
    fn after_an_odd_record_every_name_counts_as_a_row() {
        let mut g = Grouper::default();
        assert_eq!(g.add(Some(1), Some(br#"["a", "a", "b"]"#.as_slice())), 3);
        assert_eq!(g.rows(), 2);
        assert_eq!(g.add(Some(2), Some(b"[1, 2]".as_slice())), 2);
        assert_eq!(g.rows(), 4);
        assert_eq!(g.add(Some(3), Some(br#"["a", "c", "d"]"#.as_slice())), 3);
        assert_eq!(g.rows(), 7, "the database will group these names itself");
    }
}
