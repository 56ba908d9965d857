//! Verification: walks every writer's chain in chain order with constant memory (a page at a
//! time), and checks every checkpoint's signature and that its record still carries the signed
//! hash. Finds an edited, inserted, deleted or reordered record in any chain (naming the first
//! bad one and its chain), a record moved from one chain to another, a tail removed past the
//! chain's last checkpoint, a subject index that no longer says what the records say, and an
//! archive row forged to unlock deletion.
//!
//! What the database alone cannot show: a tail removed together with its checkpoints, or every
//! checkpoint removed and the chain recomputed, leave a log that is a consistent prefix. For
//! those, keep the report's `last_checkpoint` (or each chain's) outside the database (it is
//! signed) and verify against it later with `verify_against`: the log must still hold it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{AuditRecord, archive::MIN_RETENTION_DAYS, chain, store};
use crate::storage::{Backend, Db, StorageError, now_micros};

/// The answer of `GET /admin/audit/verify` and `credgate audit verify`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ChainVerdict {
    pub ok: bool,
    /// Records verified, every chain together.
    pub records: i64,
    /// One entry per chain, by writer id; on failure, up to the bad chain.
    pub chains: Vec<ChainReport>,
    /// Checkpoints stored, every chain together.
    pub checkpoints: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    /// The chain of the first bad record (or checkpoint, or archive boundary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The newest checkpoint verified in any chain, to keep outside the database as a witness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<Witness>,
}

/// One chain as verified.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ChainReport {
    pub writer_id: String,
    /// Records verified in this chain (archived ones not counted).
    pub records: i64,
    /// The hash of the chain's last record.
    pub head: String,
    /// The chain's place up to which a verified signed checkpoint vouches; `None` if none.
    pub signed_through: Option<i64>,
    /// The chain's places up to this one were archived; it verifies from there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_through: Option<i64>,
    /// This chain's newest verified checkpoint, to keep as a witness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<Witness>,
}

/// A signed checkpoint kept outside the database: the log must still hold it. A witness kept
/// before chains were per writer has neither `writer_id` nor `chain_seq`: it is the legacy
/// chain's, at `seq`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Witness {
    pub seq: i64,
    pub time_us: i64,
    pub hash: String,
    pub signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_seq: Option<i64>,
}

impl Witness {
    fn of(cp: &store::Checkpoint) -> Self {
        Self {
            seq: cp.seq,
            time_us: cp.time_us,
            hash: cp.hash.clone(),
            signature: cp.signature.clone(),
            writer_id: Some(cp.writer_id.clone()),
            chain_seq: Some(cp.chain_seq),
        }
    }

    fn chain(&self) -> (&str, i64) {
        (
            self.writer_id.as_deref().unwrap_or(chain::LEGACY_WRITER),
            self.chain_seq.unwrap_or(self.seq),
        )
    }
}

impl ChainVerdict {
    fn fail(&mut self, seq: Option<i64>, id: Option<String>, why: String) {
        self.ok = false;
        self.first_bad_seq = seq;
        self.first_bad_id = id;
        self.reason = Some(why);
    }
}

/// `public_key`: the audit signing key's raw Ed25519 public key.
pub async fn verify(db: &Db, public_key: &[u8]) -> Result<ChainVerdict, StorageError> {
    verify_at(db, public_key, now_micros()).await
}

/// `verify` as of `now_us`, which decides how old an archived checkpoint must be. Chains are
/// checked one after another, by writer id; the first bad one ends the walk.
pub async fn verify_at(
    db: &Db,
    public_key: &[u8],
    now_us: i64,
) -> Result<ChainVerdict, StorageError> {
    let checkpoints = store::checkpoints(db).await?;
    let mut report = ChainVerdict {
        ok: true,
        records: 0,
        chains: Vec::new(),
        checkpoints: checkpoints.len(),
        first_bad_id: None,
        first_bad_seq: None,
        writer_id: None,
        reason: None,
        last_checkpoint: None,
    };
    let mut by_chain: HashMap<String, Vec<store::Checkpoint>> = HashMap::new();
    for cp in checkpoints {
        by_chain.entry(cp.writer_id.clone()).or_default().push(cp);
    }
    for writer_id in store::writers(db).await? {
        let mut cps = by_chain.remove(&writer_id).unwrap_or_default();
        cps.sort_by_key(|c| (c.chain_seq, c.seq));
        let mut walk = Walk {
            db,
            public_key,
            report: &mut report,
            chain: ChainReport {
                writer_id: writer_id.clone(),
                records: 0,
                head: chain::GENESIS.into(),
                signed_through: None,
                archived_through: None,
                last_checkpoint: None,
            },
        };
        walk.chain(&cps, now_us).await?;
        let chain = walk.chain;
        report.records += chain.records;
        report.chains.push(chain);
        if !report.ok {
            report.writer_id = Some(writer_id);
            return Ok(report);
        }
    }
    if let Some(bad) = orphan_index_row(db).await? {
        report.fail(bad.seq, None, bad.why);
        report.writer_id = bad.writer_id;
        return Ok(report);
    }
    report.last_checkpoint = report
        .chains
        .iter()
        .filter_map(|c| c.last_checkpoint.clone())
        .max_by_key(|w| (w.time_us, w.seq));
    Ok(report)
}

/// `verify`, and the log must still hold `witness`, a checkpoint kept outside the database from
/// an earlier report: finds a tail removed with its checkpoints, checkpoints truncated and the
/// chain recomputed, an emptied log.
pub async fn verify_against(
    db: &Db,
    public_key: &[u8],
    witness: &Witness,
) -> Result<ChainVerdict, StorageError> {
    verify_against_all(db, public_key, std::slice::from_ref(witness)).await
}

/// `verify_against` with a witness per chain (each chain's `last_checkpoint` of a report).
pub async fn verify_against_all(
    db: &Db,
    public_key: &[u8],
    witnesses: &[Witness],
) -> Result<ChainVerdict, StorageError> {
    let mut report = verify(db, public_key).await?;
    if !report.ok {
        return Ok(report);
    }
    let held = store::checkpoints(db).await?;
    for w in witnesses {
        let (writer_id, chain_seq) = w.chain();
        let signed = chain::chain_checkpoint_signed(
            public_key,
            writer_id,
            chain_seq,
            &w.hash,
            w.time_us,
            &w.signature,
        );
        if !signed {
            report.fail(
                None,
                None,
                "the witness is not signed by this log's key".into(),
            );
            report.writer_id = Some(writer_id.into());
            return Ok(report);
        }
        let found = held.iter().any(|cp| {
            (cp.seq, cp.time_us, &cp.hash, &cp.signature)
                == (w.seq, w.time_us, &w.hash, &w.signature)
                && (cp.writer_id.as_str(), cp.chain_seq) == (writer_id, chain_seq)
        });
        if !found {
            let why = format!(
                "the log no longer holds the checkpoint at record {} that the witness signed: \
                 checkpoints were removed (with the records after them, or to recompute the chain)",
                w.seq
            );
            report.fail(Some(w.seq), None, why);
            report.writer_id = Some(writer_id.into());
            return Ok(report);
        }
    }
    Ok(report)
}

/// One chain's walk, writing into the chain's report and, on failure, the whole report.
struct Walk<'a> {
    db: &'a Db,
    public_key: &'a [u8],
    report: &'a mut ChainVerdict,
    chain: ChainReport,
}

impl Walk<'_> {
    /// The archive boundary, the records after it, and no checkpoint past the chain's end.
    async fn chain(&mut self, cps: &[store::Checkpoint], now_us: i64) -> Result<(), StorageError> {
        let writer_id = self.chain.writer_id.clone();
        // After archiving, the chain starts from the archived checkpoint, which must still verify.
        let (base, base_hash) = super::archive::base(self.db, &writer_id).await?;
        if base > 0 {
            if let Err(why) =
                check_base(cps, self.public_key, (&writer_id, base, &base_hash), now_us)
            {
                self.report.fail(Some(base), None, why);
                return Ok(());
            }
            self.chain.archived_through = Some(base);
            self.chain.signed_through = Some(base);
        }
        // Archiving freed the places up to `base`, and the link trigger takes a record at place
        // 1 onto genesis again: a record there was never walked (second review, M1). Places
        // start at 1, so without an archive a record at place 0 or below was never walked
        // either, and its index rows pass for genuine ones (this stop's third review).
        if let Some(r) = store::chain_record_at_or_below(self.db, &writer_id, base).await? {
            let why = if base > 0 {
                format!(
                    "chain `{writer_id}` holds a record at place {}, at or below its archive \
                     boundary ({base}): archived records are not in the log",
                    r.chain_seq
                )
            } else {
                format!(
                    "chain `{writer_id}` holds a record at place {}: places start at 1, so it \
                     was put there by hand",
                    r.chain_seq
                )
            };
            self.report.fail(Some(r.seq), Some(r.id), why);
            return Ok(());
        }
        let remaining: Vec<&store::Checkpoint> =
            cps.iter().filter(|c| c.chain_seq > base).collect();
        self.records(&remaining, base, base_hash).await?;
        let end = base + self.chain.records;
        if self.report.ok
            && let Some(cp) = remaining.iter().find(|cp| cp.chain_seq > end)
        {
            let why = format!(
                "chain {writer_id} ends at its record {end} but a signed checkpoint covers its \
                 record {}: records were removed from the end",
                cp.chain_seq
            );
            self.report.fail(Some(cp.seq), None, why);
        }
        Ok(())
    }

    /// Walks the chain's records after `base` page by page, up to its head as it was when the
    /// walk began: places, links, hashes, checkpoints and the subject index. Stops at the first
    /// problem, recorded in the report.
    async fn records(
        &mut self,
        checkpoints: &[&store::Checkpoint],
        base: i64,
        mut prev_hash: String,
    ) -> Result<(), StorageError> {
        let writer_id = self.chain.writer_id.clone();
        let store::Upto { place, not_a_place } = store::chain_upto(self.db, &writer_id).await?;
        let upto = place.unwrap_or(base);
        let mut cps = checkpoints.iter().peekable();
        let mut expected = base + 1;
        let mut last_seq = i64::MIN;
        let mut after = base;
        let mut steps = StepRows::default();
        while after < upto {
            let store::CheckedPage {
                records: page,
                undecodable,
            } = store::chain_page_checked(self.db, &writer_id, after, 1000).await?;
            let Some(last) = page.last() else {
                if let Some(bad) = undecodable {
                    self.report.fail(bad.seq, None, not_readable(&bad));
                }
                break;
            };
            // Read before the page's index rows: progress only grows, so a record above it
            // that has no index rows is one the indexer had not reached (`audit::indexer`),
            // not one whose rows were removed. Rows it does have must still say exactly what
            // the record says.
            let indexed = super::index_store::progress_of(self.db, &writer_id).await?;
            let mut index =
                index_of(self.db, &writer_id, &page, after, indexed, &mut steps).await?;
            after = last.chain_seq;
            for r in page.iter().take_while(|r| r.chain_seq <= upto) {
                let rows = index.remove(&r.seq).unwrap_or_default();
                let problem = check_record(r, expected, &prev_hash)
                    .or_else(|| (r.seq <= last_seq).then(|| out_of_order(last_seq)))
                    .or_else(|| steps.unreadable.remove(&r.seq).then(unreadable_name))
                    .or_else(|| {
                        let pending = r.chain_seq > indexed && rows.is_empty();
                        (!pending).then(|| check_index(r, &rows)).flatten()
                    });
                if let Some(why) = problem {
                    self.report.fail(Some(r.seq), Some(r.id.clone()), why);
                    return Ok(());
                }
                while let Some(cp) = cps.next_if(|cp| cp.chain_seq <= r.chain_seq) {
                    if let Err(why) = check_checkpoint(self.public_key, cp, r) {
                        self.report.fail(Some(r.seq), Some(r.id.clone()), why);
                        return Ok(());
                    }
                    self.chain.signed_through = Some(cp.chain_seq);
                    self.chain.last_checkpoint = Some(Witness::of(cp));
                }
                prev_hash = r.hash.clone();
                last_seq = r.seq;
                expected += 1;
                self.chain.records += 1;
            }
            if let Some(bad) = undecodable {
                self.report.fail(bad.seq, None, not_readable(&bad));
                return Ok(());
            }
        }
        if let Some(seq) = not_a_place {
            let why = format!(
                "a record of chain `{writer_id}` has a place that is not an integer: it was \
                 altered after it was written"
            );
            self.report.fail(seq, None, why);
            return Ok(());
        }
        self.chain.head = prev_hash;
        Ok(())
    }
}

/// The archive boundary must be a signed checkpoint of the chain, and old enough to have been
/// archived: an archive row is what lets the guard delete records, so one forged on a recent
/// checkpoint would unlock deleting everything before it.
fn check_base(
    checkpoints: &[store::Checkpoint],
    public_key: &[u8],
    (writer_id, base, base_hash): (&str, i64, &str),
    now_us: i64,
) -> Result<(), String> {
    let Some(cp) = checkpoints.iter().find(|cp| {
        cp.chain_seq == base
            && cp.hash == base_hash
            && chain::chain_checkpoint_signed(
                public_key,
                writer_id,
                cp.chain_seq,
                &cp.hash,
                cp.time_us,
                &cp.signature,
            )
    }) else {
        return Err(format!(
            "the archive boundary at {base} of chain {writer_id} has no matching signed checkpoint"
        ));
    };
    let youngest = now_us - i64::from(MIN_RETENTION_DAYS) * 86_400 * 1_000_000;
    if cp.time_us > youngest {
        return Err(format!(
            "the archive boundary at {base} of chain {writer_id} is a checkpoint younger than the \
             {MIN_RETENTION_DAYS}-day retention minimum: no archive can have taken it (a forged archive row)"
        ));
    }
    Ok(())
}

fn check_checkpoint(
    public_key: &[u8],
    cp: &store::Checkpoint,
    r: &AuditRecord,
) -> Result<(), String> {
    let sig_ok = chain::chain_checkpoint_signed(
        public_key,
        &cp.writer_id,
        cp.chain_seq,
        &cp.hash,
        cp.time_us,
        &cp.signature,
    );
    if !sig_ok || cp.chain_seq != r.chain_seq || cp.hash != r.hash || cp.seq != r.seq {
        return Err(format!(
            "checkpoint at {} does not match the log or its signature",
            cp.seq
        ));
    }
    Ok(())
}

fn check_record(r: &AuditRecord, expected: i64, prev_hash: &str) -> Option<String> {
    if r.chain_seq != expected {
        Some(format!(
            "the chain jumps from its record {} to {}: records missing or inserted",
            expected - 1,
            r.chain_seq
        ))
    } else if r.prev_hash != prev_hash {
        Some("does not chain to the record before it (inserted, deleted or reordered)".into())
    } else if !chain::verifies(r) {
        Some("its content does not match its hash (edited, or moved to another chain)".into())
    } else {
        None
    }
}

/// A record holding a value of a form the gateway never writes (text that is not UTF-8, or a
/// value of another type where text or an integer belongs), at `place` in its chain.
fn not_readable(place: &store::Unreadable) -> String {
    format!(
        "the record after place {} of chain `{}` holds a value of a form the gateway never \
         writes (text that is not UTF-8, or another type): it was altered after it was written",
        place.after, place.writer_id
    )
}

/// A record some index row names by a name that is not UTF-8 text.
fn unreadable_name() -> String {
    "an index row names this record by a name that is not UTF-8 text (or not text): the \
     index was edited"
        .to_string()
}

/// Within a chain the log's `seq` grows with the chain's place (each record's is assigned
/// after the record before it committed, migration 0060): a record whose `seq` does not
/// was moved in the log's order, and the subject index rows keyed by it point elsewhere.
fn out_of_order(before: i64) -> String {
    format!(
        "its seq is not after the seq {before} of the chain's record before it:          records were reordered in the log"
    )
}

/// The subject index feeds subjects' access logs and officers' subject filter; it is not
/// chained, so it must say exactly what the (chained) records say.
fn check_index(r: &AuditRecord, indexed: &BTreeSet<String>) -> Option<String> {
    let named: BTreeSet<&str> = r.subjects.iter().map(String::as_str).collect();
    let indexed: BTreeSet<&str> = indexed.iter().map(String::as_str).collect();
    (named != indexed).then(|| {
        let forged = indexed.difference(&named).count();
        let missing = named.difference(&indexed).count();
        format!(
            "the subject index does not match the record ({forged} entries it does not name, \
             {missing} of its subjects missing): the index was edited"
        )
    })
}

/// A chain's step rows (`audit_subject_steps`, migration 0090) as the walk reads them. A row
/// holds the `seq`s of one indexing step's records that name its subject, so it can straddle
/// pages: it is read with the page its `first_seq` falls in (by the `(writer_id, first_seq)`
/// index), and its `seq`s above that page wait in `carry` for the pages they belong to. What
/// is carried is the part above a page of the rows whose step straddles the page's end: a
/// step's rows are bounded by the indexer's budget, so memory stays bounded however long the
/// chain.
#[derive(Default)]
struct StepRows {
    /// Every row of the chain whose `first_seq` is at or below this was read, and no row
    /// written later can have one (None: nothing read yet).
    read_through: Option<i64>,
    /// `seq` -> subjects, from rows read, for `seq`s above the pages walked so far.
    carry: BTreeMap<i64, BTreeSet<String>>,
    /// Records an index row names by a name that is not UTF-8 text (read on any page): the
    /// indexer never writes one, and no name stands for it (any string could be a subject of
    /// a record written before `recorded_subject`), so the record is reported as such.
    unreadable: BTreeSet<i64>,
}

/// The subject index entries of the chain's page of records (places `(after, last]`), by
/// record `seq`: the rows of `audit_subjects` (written before migration 0090: one query a
/// page, by the index's `seq` index of migration 0010) and what the chain's step rows say of
/// the page's `seq`s. `indexed` is the chain's progress, read before this: a step row whose
/// first record is at or below it was written before, so it is never read twice. Rows above
/// it can appear while the walk goes (the indexer runs), and are read again with the next
/// page until the progress passes them; each such read is one statement, so it sees all of a
/// step's rows or none.
async fn index_of(
    db: &Db,
    writer_id: &str,
    page: &[AuditRecord],
    after: i64,
    indexed: i64,
    steps: &mut StepRows,
) -> Result<HashMap<i64, BTreeSet<String>>, StorageError> {
    let mut out: HashMap<i64, BTreeSet<String>> = HashMap::new();
    let (Some(lo), Some(hi), Some(last)) = (
        page.iter().map(|r| r.seq).min(),
        page.iter().map(|r| r.seq).max(),
        page.last(),
    ) else {
        return Ok(out);
    };
    legacy_rows(db, writer_id, (after, last.chain_seq), &mut out, steps).await?;
    // What earlier pages' rows said of this page.
    let above = match hi.checked_add(1) {
        Some(next) => steps.carry.split_off(&next),
        None => BTreeMap::new(),
    };
    for (seq, subjects) in std::mem::replace(&mut steps.carry, above) {
        out.entry(seq).or_default().extend(subjects);
    }
    step_rows_of(db, writer_id, (lo, hi), &mut out, steps).await?;
    // Rows starting at or below the progress's record were all there when it was read.
    let settled = if indexed >= last.chain_seq {
        Some(hi)
    } else {
        page.iter()
            .filter(|r| r.chain_seq <= indexed)
            .map(|r| r.seq)
            .max()
    };
    steps.read_through = steps.read_through.max(settled);
    Ok(out)
}

/// The page's rows of `audit_subjects` (places `(after, last]`), into `out`; a name that is
/// not UTF-8 text flags its record.
async fn legacy_rows(
    db: &Db,
    writer_id: &str,
    (after, last): (i64, i64),
    out: &mut HashMap<i64, BTreeSet<String>>,
    steps: &mut StepRows,
) -> Result<(), StorageError> {
    let (backend, text) = (db.backend(), text_sql(db.backend()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT seq, {} FROM audit_subjects WHERE seq IN \
         (SELECT seq FROM audit_log WHERE writer_id = $1 AND chain_seq > $2 AND chain_seq <= $3)",
        text("subject_id", "subject_id")
    )))
    .bind(writer_id)
    .bind(after)
    .bind(last)
    .fetch_all(db.pool())
    .await?;
    for row in rows {
        let seq: i64 = row.try_get("seq")?;
        match read_text(backend, &row, "subject_id")? {
            Some(subject) => {
                out.entry(seq).or_default().insert(subject);
            }
            None => {
                steps.unreadable.insert(seq);
            }
        }
    }
    Ok(())
}

/// The chain's step rows not read yet that reach the page's `seq`s `[lo, hi]`: what they say of
/// the page into `out`, of later `seq`s into `steps.carry`; a name that is not UTF-8 text flags
/// every record its row names.
async fn step_rows_of(
    db: &Db,
    writer_id: &str,
    (lo, hi): (i64, i64),
    out: &mut HashMap<i64, BTreeSet<String>>,
    steps: &mut StepRows,
) -> Result<(), StorageError> {
    let (backend, text) = (db.backend(), text_sql(db.backend()));
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {}, {} FROM audit_subject_steps \
         WHERE writer_id = $1 AND first_seq > $2 AND first_seq <= $3 AND last_seq >= $4",
        text("subject_id", "subject_id"),
        text("seqs", "seqs")
    )))
    .bind(writer_id)
    .bind(steps.read_through.unwrap_or(i64::MIN))
    .bind(hi)
    .bind(lo)
    .fetch_all(db.pool())
    .await?;
    for row in rows {
        let subject = read_text(backend, &row, "subject_id")?;
        // A malformed `seqs` (planted) is reported by `orphan_index_row`; here it says
        // nothing, so the records it should index miss it.
        let Some(seqs) = read_text(backend, &row, "seqs")?
            .and_then(|text| serde_json::from_str::<Vec<i64>>(&text).ok())
        else {
            continue;
        };
        let Some(subject) = subject else {
            steps.unreadable.extend(seqs);
            continue;
        };
        for seq in seqs {
            if seq > hi {
                steps.carry.entry(seq).or_default().insert(subject.clone());
            } else if seq >= lo {
                out.entry(seq).or_default().insert(subject.clone());
            }
        }
    }
    Ok(())
}

/// How an index row's text column is selected: on SQLite as its type and its bytes, since a
/// column may hold text that is not UTF-8 (planted, or copied by the database's own
/// derivation from a planted record), which the driver refuses in a whole read, or a value of
/// another type (`audit_subjects` is not STRICT), which must not pass for the text it casts
/// to (a BLOB `X'41'` is not the subject `A`: searches never find it); PostgreSQL's columns
/// hold text only, always UTF-8.
fn text_sql(backend: Backend) -> impl Fn(&str, &str) -> String {
    move |column, alias| match backend {
        Backend::Sqlite => {
            format!("typeof({column}) AS {alias}_type, CAST({column} AS BLOB) AS {alias}")
        }
        Backend::Postgres => format!("{column} AS {alias}"),
    }
}

/// A column [`text_sql`] selected, as text; None when it is anything but UTF-8 text.
fn read_text(
    backend: Backend,
    row: &sqlx::any::AnyRow,
    alias: &str,
) -> Result<Option<String>, sqlx::Error> {
    if backend == Backend::Postgres {
        return row.try_get(alias).map(Some);
    }
    let kind: String = row.try_get(format!("{alias}_type").as_str())?;
    let bytes: Option<Vec<u8>> = row.try_get(alias)?;
    Ok(bytes
        .filter(|_| kind == "text")
        .and_then(|b| String::from_utf8(b).ok()))
}

/// An index row that is not what the indexer writes, found after every chain verified.
struct Orphan {
    seq: Option<i64>,
    writer_id: Option<String>,
    why: String,
}

/// A `seqs` that is a non-empty JSON array of integers, as the indexer writes it: 64-bit ones
/// (`json_each` types a larger one `integer` too, but its value is a REAL).
const STEPS_WELL_FORMED_SQLITE: &str = "CASE WHEN NOT json_valid(s.seqs) THEN 0 \
     WHEN json_type(s.seqs) <> 'array' THEN 0 \
     WHEN json_array_length(s.seqs) = 0 THEN 0 \
     ELSE NOT EXISTS (SELECT 1 FROM json_each(s.seqs) e \
                      WHERE e.type <> 'integer' OR typeof(e.value) <> 'integer') END";
/// `seqs` itself when well formed, else an empty array: `json_each` raises on malformed JSON.
const STEPS_SAFE_SQLITE: &str = "CASE WHEN NOT json_valid(s.seqs) THEN '[]' \
     WHEN json_type(s.seqs) = 'array' THEN s.seqs ELSE '[]' END";
/// PostgreSQL has no JSON test that does not raise on malformed text in plain SQL, and `seqs`
/// is TEXT: a JSON array of integer literals is matched by this pattern first, and only then
/// cast (JSON's own whitespace, no leading zeros: whatever matches, `jsonb` accepts).
const STEPS_PATTERN_PG: &str = "'^[ \\t\\n\\r]*\\[[ \\t\\n\\r]*-?(0|[1-9][0-9]*)\
     ([ \\t\\n\\r]*,[ \\t\\n\\r]*-?(0|[1-9][0-9]*))*[ \\t\\n\\r]*\\][ \\t\\n\\r]*$'";

/// SQL of the step rows' `seq`s, per backend, for a row `s`.
struct StepsSql {
    /// A FROM clause of the rows `s` joined with each of their `seq`s, as `seq`.
    entries: String,
    /// The expression of one `seq` in `entries`.
    seq: &'static str,
    /// `(SELECT f(seq) FROM ...)` over the `seq`s of `s`, with `{f}` for the aggregate.
    aggregate: String,
    /// The condition that `s.seqs` is malformed.
    malformed: String,
}

fn steps_sql(backend: Backend) -> StepsSql {
    match backend {
        Backend::Sqlite => StepsSql {
            entries: format!("audit_subject_steps s, json_each({STEPS_SAFE_SQLITE}) e"),
            seq: "e.value",
            aggregate: format!("(SELECT {{f}}(a.value) FROM json_each({STEPS_SAFE_SQLITE}) a)"),
            malformed: format!("NOT ({STEPS_WELL_FORMED_SQLITE})"),
        },
        Backend::Postgres => {
            let safe =
                format!("(CASE WHEN s.seqs ~ {STEPS_PATTERN_PG} THEN s.seqs ELSE '[]' END)::jsonb");
            // An integer out of BIGINT's range is malformed too: its `v` is NULL.
            let v = "CASE WHEN t.n::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 \
                     THEN t.n::bigint END";
            StepsSql {
                entries: format!(
                    "audit_subject_steps s CROSS JOIN LATERAL \
                     (SELECT {v} AS v FROM jsonb_array_elements_text({safe}) t(n)) e"
                ),
                seq: "e.v",
                aggregate: format!(
                    "(SELECT {{f}}({v}) FROM jsonb_array_elements_text({safe}) t(n))"
                ),
                malformed: format!(
                    "(NOT s.seqs ~ {STEPS_PATTERN_PG} OR EXISTS (SELECT 1 FROM \
                       jsonb_array_elements_text({safe}) t(n) WHERE t.n::numeric NOT BETWEEN \
                       -9223372036854775808 AND 9223372036854775807))"
                ),
            }
        }
    }
}

/// An index row that is not what the indexer writes: a row of `audit_subjects` naming a record
/// the log does not hold (planted, or left behind by a deleted record), or a step row whose
/// `seqs` is not a list of record `seq`s, whose `first_seq`/`last_seq` are not the least and
/// greatest of them, or that names a record the log does not hold (unless an archive of the
/// row's chain covers that `seq`: a row straddling an archive's cut stays whole) or a record of
/// another chain. Whether each record named names the row's subject, `check_index` saw.
async fn orphan_index_row(db: &Db) -> Result<Option<Orphan>, StorageError> {
    let row = sqlx::query(
        "SELECT MIN(s.seq) AS seq FROM audit_subjects s \
         WHERE NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.seq = s.seq)",
    )
    .fetch_one(db.pool())
    .await?;
    if let Some(seq) = row.try_get::<Option<i64>, _>("seq")? {
        return Ok(Some(Orphan {
            seq: Some(seq),
            writer_id: None,
            why: format!("the subject index names record {seq}, which the log does not hold"),
        }));
    }
    let StepsSql {
        entries,
        seq: v,
        aggregate,
        malformed,
    } = steps_sql(db.backend());
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT s.writer_id, s.last_seq FROM audit_subject_steps s WHERE {malformed} \
         ORDER BY s.writer_id, s.first_seq LIMIT 1"
    )))
    .fetch_optional(db.pool())
    .await?;
    if let Some(row) = row {
        let writer_id: String = row.try_get("writer_id")?;
        let last: i64 = row.try_get("last_seq")?;
        return Ok(Some(Orphan {
            seq: None,
            why: format!(
                "a subject index row of chain `{writer_id}` (up to record {last}) does not hold \
                 a list of record seqs: the index was edited"
            ),
            writer_id: Some(writer_id),
        }));
    }
    // Row by row (no aggregate over the whole table): the least and greatest of its `seqs`.
    let (min, max) = (
        aggregate.replace("{f}", "MIN"),
        aggregate.replace("{f}", "MAX"),
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT t.writer_id, t.first_seq, t.last_seq, t.lo, t.hi FROM \
           (SELECT s.writer_id, s.first_seq, s.last_seq, {min} AS lo, {max} AS hi \
            FROM audit_subject_steps s) t \
         WHERE t.lo <> t.first_seq OR t.hi <> t.last_seq \
         ORDER BY t.writer_id, t.first_seq LIMIT 1"
    )))
    .fetch_optional(db.pool())
    .await?;
    if let Some(row) = row {
        let writer_id: String = row.try_get("writer_id")?;
        let (first, last): (i64, i64) = (row.try_get("first_seq")?, row.try_get("last_seq")?);
        let (lo, hi): (i64, i64) = (row.try_get("lo")?, row.try_get("hi")?);
        return Ok(Some(Orphan {
            seq: None,
            why: format!(
                "a subject index row of chain `{writer_id}` says it spans records {first} to \
                 {last} but names records {lo} to {hi}: the index was edited"
            ),
            writer_id: Some(writer_id),
        }));
    }
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT s.writer_id, {v} AS seq, l.writer_id AS holder FROM {entries} \
         LEFT JOIN audit_log l ON l.seq = {v} \
         WHERE CASE WHEN l.seq IS NULL THEN NOT EXISTS (SELECT 1 FROM audit_archives a \
                      WHERE a.writer_id = s.writer_id AND a.upto_seq >= {v}) \
                    ELSE l.writer_id <> s.writer_id END \
         ORDER BY {v} LIMIT 1"
    )))
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let writer_id: String = row.try_get("writer_id")?;
    let seq: i64 = row.try_get("seq")?;
    let why = match row.try_get::<Option<String>, _>("holder")? {
        None => format!("the subject index names record {seq}, which the log does not hold"),
        Some(holder) => format!(
            "a subject index row of chain `{writer_id}` names record {seq}, which is of chain \
             `{holder}`: the index was edited"
        ),
    };
    Ok(Some(Orphan {
        seq: Some(seq),
        writer_id: Some(writer_id),
        why,
    }))
}
