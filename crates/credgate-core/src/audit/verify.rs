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

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{AuditRecord, archive::MIN_RETENTION_DAYS, chain, store};
use crate::storage::{Db, StorageError, now_micros};

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
    if let Some(seq) = orphan_index_row(db).await? {
        let why = format!("the subject index names record {seq}, which the log does not hold");
        report.fail(Some(seq), None, why);
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
            // Archiving freed the places up to `base`, and the link trigger takes a record at
            // place 1 onto genesis again: a record there was never walked (second review, M1).
            if let Some(r) = store::chain_record_at_or_below(self.db, &writer_id, base).await? {
                let why = format!(
                    "chain `{writer_id}` holds a record at place {}, at or below its archive \
                     boundary ({base}): archived records are not in the log",
                    r.chain_seq
                );
                self.report.fail(Some(r.seq), Some(r.id), why);
                return Ok(());
            }
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
        // Read before any page: progress only grows, so a record above it that has no index
        // rows is one the indexer has not reached (`audit::indexer`), not one whose rows were
        // removed. Rows it does have must still say exactly what the record says.
        let indexed = super::index_store::progress_of(self.db, &writer_id).await?;
        let upto = store::chain_head(self.db, &writer_id).await?.chain_seq;
        let mut cps = checkpoints.iter().peekable();
        let mut expected = base + 1;
        let mut last_seq = i64::MIN;
        let mut after = base;
        while after < upto {
            let page = store::chain_page_after(self.db, &writer_id, after, 1000).await?;
            let Some(last) = page.last() else { break };
            let mut index = index_of(self.db, &writer_id, after, last.chain_seq).await?;
            after = last.chain_seq;
            for r in page.iter().take_while(|r| r.chain_seq <= upto) {
                let rows = index.remove(&r.seq).unwrap_or_default();
                let problem = check_record(r, expected, &prev_hash)
                    .or_else(|| (r.seq <= last_seq).then(|| out_of_order(last_seq)))
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

/// The subject index rows of the chain's records `(after, upto]`, by record `seq`: one query a
/// page, by the index's `seq` index (migration 0010).
async fn index_of(
    db: &Db,
    writer_id: &str,
    after: i64,
    upto: i64,
) -> Result<HashMap<i64, BTreeSet<String>>, StorageError> {
    let rows = sqlx::query(
        "SELECT seq, subject_id FROM audit_subjects WHERE seq IN \
         (SELECT seq FROM audit_log WHERE writer_id = $1 AND chain_seq > $2 AND chain_seq <= $3)",
    )
    .bind(writer_id)
    .bind(after)
    .bind(upto)
    .fetch_all(db.pool())
    .await?;
    let mut out: HashMap<i64, BTreeSet<String>> = HashMap::new();
    for row in rows {
        out.entry(row.try_get("seq")?)
            .or_default()
            .insert(row.try_get("subject_id")?);
    }
    Ok(out)
}

/// An index row naming a record the log does not hold (planted, or left behind by a deleted
/// record): the lowest such seq.
async fn orphan_index_row(db: &Db) -> Result<Option<i64>, StorageError> {
    let row = sqlx::query(
        "SELECT MIN(s.seq) AS seq FROM audit_subjects s \
         WHERE NOT EXISTS (SELECT 1 FROM audit_log l WHERE l.seq = s.seq)",
    )
    .fetch_one(db.pool())
    .await?;
    Ok(row.try_get::<Option<i64>, _>("seq")?)
}
