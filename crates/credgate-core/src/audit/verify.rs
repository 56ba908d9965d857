//! Verification: walks the whole chain in `seq` order with constant memory, and checks every
//! checkpoint's signature and that its record still carries the signed hash. Finds an edited,
//! inserted, deleted or reordered record (naming the first bad one), a tail removed past the
//! last checkpoint, a subject index that no longer says what the records say, and an archive
//! row forged to unlock deletion.
//!
//! What the database alone cannot show: a tail removed together with its checkpoints, or every
//! checkpoint removed and the chain recomputed, leave a log that is a consistent prefix. For
//! those, keep the report's `last_checkpoint` outside the database (it is signed) and verify
//! against it later with `verify_against`: the log must still hold that checkpoint.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{AuditRecord, archive::MIN_RETENTION_DAYS, chain, store};
use crate::storage::{Db, StorageError, now_micros};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ChainVerdict {
    pub ok: bool,
    pub records: i64,
    pub head: String,
    pub checkpoints: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Records up to this seq were archived; the chain verifies from there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_through: Option<i64>,
    /// The newest checkpoint verified, to keep outside the database as a witness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<Witness>,
}

/// A signed checkpoint kept outside the database: the log must still hold it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Witness {
    pub seq: i64,
    pub time_us: i64,
    pub hash: String,
    pub signature: String,
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

/// `verify` as of `now_us`, which decides how old an archived checkpoint must be.
pub async fn verify_at(
    db: &Db,
    public_key: &[u8],
    now_us: i64,
) -> Result<ChainVerdict, StorageError> {
    let checkpoints = store::checkpoints(db).await?;
    let mut report = ChainVerdict {
        ok: true,
        records: 0,
        head: chain::GENESIS.into(),
        checkpoints: checkpoints.len(),
        first_bad_id: None,
        first_bad_seq: None,
        reason: None,
        archived_through: None,
        last_checkpoint: None,
    };
    // After archiving, the chain starts from the archived checkpoint, which must still verify.
    let (base, base_hash) = super::archive::base(db).await?;
    if base > 0 {
        if let Err(why) = check_base(&checkpoints, public_key, (base, &base_hash), now_us) {
            report.fail(Some(base), None, why);
            return Ok(report);
        }
        report.archived_through = Some(base);
    }
    let remaining: Vec<store::Checkpoint> =
        checkpoints.into_iter().filter(|cp| cp.seq > base).collect();
    walk(db, public_key, &remaining, base, base_hash, &mut report).await?;
    if report.ok
        && let Some(cp) = remaining.iter().find(|cp| cp.seq > base + report.records)
    {
        let why = format!(
            "the log ends at record {} but a signed checkpoint covers record {}: records were removed from the end",
            base + report.records,
            cp.seq
        );
        report.fail(Some(base + report.records + 1), None, why);
    }
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
    let mut report = verify(db, public_key).await?;
    if !report.ok {
        return Ok(report);
    }
    let w = witness;
    if !chain::verify_checkpoint(public_key, w.seq, &w.hash, w.time_us, &w.signature) {
        report.fail(
            None,
            None,
            "the witness is not signed by this log's key".into(),
        );
        return Ok(report);
    }
    let held = store::checkpoints(db).await?.iter().any(|cp| {
        (cp.seq, cp.time_us, &cp.hash, &cp.signature) == (w.seq, w.time_us, &w.hash, &w.signature)
    });
    if !held {
        let why = format!(
            "the log no longer holds the checkpoint at record {} that the witness signed: \
             checkpoints were removed (with the records after them, or to recompute the chain)",
            w.seq
        );
        report.fail(Some(w.seq), None, why);
    }
    Ok(report)
}

/// The archive boundary must be a signed checkpoint, and old enough to have been archived: an
/// archive row is what lets the guard delete records, so one forged on a recent checkpoint
/// would unlock deleting everything before it.
fn check_base(
    checkpoints: &[store::Checkpoint],
    public_key: &[u8],
    (base, base_hash): (i64, &str),
    now_us: i64,
) -> Result<(), String> {
    let Some(cp) = checkpoints.iter().find(|cp| {
        cp.seq == base
            && cp.hash == base_hash
            && chain::verify_checkpoint(public_key, cp.seq, &cp.hash, cp.time_us, &cp.signature)
    }) else {
        return Err(format!(
            "the archive boundary at {base} has no matching signed checkpoint"
        ));
    };
    let youngest = now_us - i64::from(MIN_RETENTION_DAYS) * 86_400 * 1_000_000;
    if cp.time_us > youngest {
        return Err(format!(
            "the archive boundary at {base} is a checkpoint younger than the {MIN_RETENTION_DAYS}-day retention minimum: \
             no archive can have taken it (a forged archive row)"
        ));
    }
    Ok(())
}

/// Walks the records after `base` page by page, up to the head as it was when the walk began:
/// sequence, links, hashes, checkpoints and the subject index. Stops at the first problem,
/// recorded in `report`.
async fn walk(
    db: &Db,
    public_key: &[u8],
    checkpoints: &[store::Checkpoint],
    base: i64,
    mut prev_hash: String,
    report: &mut ChainVerdict,
) -> Result<(), StorageError> {
    let upto = store::head(db).await?.seq;
    let mut index = IndexCursor::open(db, base, upto);
    let mut cps = checkpoints.iter().peekable();
    let mut expected_seq = base + 1;
    let mut after = base;
    while after < upto {
        let page = store::page_after(db, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in page.iter().take_while(|r| r.seq <= upto) {
            let indexed = index.take(r.seq).await?;
            let problem =
                check_record(r, expected_seq, &prev_hash).or_else(|| check_index(r, &indexed));
            if let Some(why) = problem {
                report.fail(Some(r.seq), Some(r.id.clone()), why);
                return Ok(());
            }
            while let Some(cp) = cps.next_if(|cp| cp.seq <= r.seq) {
                if let Err(why) = check_checkpoint(public_key, cp, r) {
                    report.fail(Some(r.seq), Some(r.id.clone()), why);
                    return Ok(());
                }
                report.last_checkpoint = Some(Witness {
                    seq: cp.seq,
                    time_us: cp.time_us,
                    hash: cp.hash.clone(),
                    signature: cp.signature.clone(),
                });
            }
            prev_hash = r.hash.clone();
            expected_seq += 1;
            report.records += 1;
        }
    }
    report.head = prev_hash;
    if let Some(seq) = index.leftover().await? {
        let why = format!("the subject index names record {seq}, which the log does not hold");
        report.fail(Some(seq), None, why);
    }
    Ok(())
}

fn check_checkpoint(
    public_key: &[u8],
    cp: &store::Checkpoint,
    r: &AuditRecord,
) -> Result<(), String> {
    let sig_ok = chain::verify_checkpoint(public_key, cp.seq, &cp.hash, cp.time_us, &cp.signature);
    if !sig_ok || cp.seq < r.seq || cp.hash != r.hash {
        return Err(format!(
            "checkpoint at {} does not match the log or its signature",
            cp.seq
        ));
    }
    Ok(())
}

fn check_record(r: &AuditRecord, expected_seq: i64, prev_hash: &str) -> Option<String> {
    if r.seq != expected_seq {
        Some(format!(
            "sequence jumps from {} to {}: records missing or inserted",
            expected_seq - 1,
            r.seq
        ))
    } else if r.prev_hash != prev_hash {
        Some("does not chain to the record before it (inserted, deleted or reordered)".into())
    } else if !chain::verifies(r) {
        Some("its content does not match its hash (edited)".into())
    } else {
        None
    }
}

/// The subject index feeds subjects' access logs and officers' subject filter; it is not
/// chained, so it must say exactly what the (chained) records say.
fn check_index(r: &AuditRecord, indexed: &Indexed) -> Option<String> {
    if let Some(seq) = indexed.orphan {
        return Some(format!(
            "the subject index names record {seq}, which the log does not hold"
        ));
    }
    let named: BTreeSet<&str> = r.subjects.iter().map(String::as_str).collect();
    let indexed: BTreeSet<&str> = indexed.subjects.iter().map(String::as_str).collect();
    (named != indexed).then(|| {
        let forged = indexed.difference(&named).count();
        let missing = named.difference(&indexed).count();
        format!(
            "the subject index does not match the record ({forged} entries it does not name, \
             {missing} of its subjects missing): the index was edited"
        )
    })
}

/// One record's index rows, and the seq of an index row before it that no record holds.
#[derive(Default)]
struct Indexed {
    subjects: BTreeSet<String>,
    orphan: Option<i64>,
}

/// The subject index of `(base, upto]`, read once in seq order beside the records: a range
/// query per page would scan the whole index each time (it is keyed by subject first).
struct IndexCursor<'a> {
    rows: futures_util::stream::BoxStream<'a, Result<sqlx::any::AnyRow, sqlx::Error>>,
    ahead: Option<(i64, String)>,
}

impl<'a> IndexCursor<'a> {
    fn open(db: &'a Db, base: i64, upto: i64) -> Self {
        let rows = sqlx::query(
            "SELECT seq, subject_id FROM audit_subjects WHERE seq > $1 AND seq <= $2 \
             ORDER BY seq, subject_id",
        )
        .bind(base)
        .bind(upto)
        .fetch(db.pool());
        Self { rows, ahead: None }
    }

    async fn next(&mut self) -> Result<Option<(i64, String)>, StorageError> {
        if let Some(row) = self.ahead.take() {
            return Ok(Some(row));
        }
        match futures_util::StreamExt::next(&mut self.rows).await {
            Some(row) => {
                let row = row?;
                Ok(Some((row.try_get("seq")?, row.try_get("subject_id")?)))
            }
            None => Ok(None),
        }
    }

    /// The rows of record `seq`; rows for earlier seqs no record took are orphans.
    async fn take(&mut self, seq: i64) -> Result<Indexed, StorageError> {
        let mut out = Indexed::default();
        while let Some((s, subject)) = self.next().await? {
            if s > seq {
                self.ahead = Some((s, subject));
                break;
            }
            if s < seq {
                out.orphan.get_or_insert(s);
            } else {
                out.subjects.insert(subject);
            }
        }
        Ok(out)
    }

    /// An index row left after the last record: it names a record the log does not hold.
    async fn leftover(&mut self) -> Result<Option<i64>, StorageError> {
        Ok(self.next().await?.map(|(s, _)| s))
    }
}
