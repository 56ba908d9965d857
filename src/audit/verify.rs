//! Verification: walks the whole chain in `seq` order with constant memory, and checks every
//! checkpoint's signature and that its record still carries the signed hash. Finds an edited,
//! inserted, deleted or reordered record (naming the first bad one) and a tail removed past the
//! last checkpoint.

use serde::Serialize;

use super::{chain, store};
use crate::storage::{Db, StorageError};

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Report {
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
}

/// `public_key`: the audit signing key's raw Ed25519 public key.
pub async fn verify(db: &Db, public_key: &[u8]) -> Result<Report, StorageError> {
    let checkpoints = store::checkpoints(db).await?;
    let mut report = Report {
        ok: true,
        records: 0,
        head: chain::GENESIS.into(),
        checkpoints: checkpoints.len(),
        first_bad_id: None,
        first_bad_seq: None,
        reason: None,
        archived_through: None,
    };
    // After archiving, the chain starts from the archived checkpoint, which must still verify.
    let (base, base_hash) = super::archive::base(db).await?;
    if base > 0 {
        let ok = checkpoints.iter().any(|cp| {
            cp.seq == base
                && cp.hash == base_hash
                && chain::verify_checkpoint(public_key, cp.seq, &cp.hash, cp.time_us, &cp.signature)
        });
        if !ok {
            report.ok = false;
            report.reason = Some(format!(
                "the archive boundary at {base} has no matching signed checkpoint"
            ));
            report.first_bad_seq = Some(base);
            return Ok(report);
        }
    }
    report.archived_through = (base > 0).then_some(base);
    let remaining: Vec<store::Checkpoint> =
        checkpoints.into_iter().filter(|cp| cp.seq > base).collect();
    let mut cps = remaining.iter().peekable();
    let mut prev_hash = base_hash;
    let mut expected_seq = base + 1;
    let mut after = base;
    'pages: loop {
        let page = store::page_after(db, after, 1000).await?;
        if page.is_empty() {
            break;
        }
        for r in &page {
            after = r.seq;
            let fail = |why: String| (r.id.clone(), r.seq, why);
            let problem = if r.seq != expected_seq {
                Some(fail(format!(
                    "sequence jumps from {} to {}: records missing or inserted",
                    expected_seq - 1,
                    r.seq
                )))
            } else if r.prev_hash != prev_hash {
                Some(fail(
                    "does not chain to the record before it (inserted, deleted or reordered)"
                        .into(),
                ))
            } else if !chain::verifies(r) {
                Some(fail("its content does not match its hash (edited)".into()))
            } else {
                None
            };
            if let Some((id, seq, why)) = problem {
                report.ok = false;
                report.first_bad_id = Some(id);
                report.first_bad_seq = Some(seq);
                report.reason = Some(why);
                break 'pages;
            }
            while let Some(cp) = cps.peek().filter(|cp| cp.seq <= r.seq) {
                let sig_ok = chain::verify_checkpoint(
                    public_key,
                    cp.seq,
                    &cp.hash,
                    cp.time_us,
                    &cp.signature,
                );
                if !sig_ok || (cp.seq == r.seq && cp.hash != r.hash) || cp.seq < r.seq {
                    report.ok = false;
                    report.first_bad_id = Some(r.id.clone());
                    report.first_bad_seq = Some(r.seq);
                    report.reason = Some(format!(
                        "checkpoint at {} does not match the log or its signature",
                        cp.seq
                    ));
                    break 'pages;
                }
                cps.next();
            }
            prev_hash = r.hash.clone();
            expected_seq += 1;
            report.records += 1;
        }
    }
    report.head = prev_hash;
    if report.ok
        && let Some(cp) = cps.next()
    {
        report.ok = false;
        report.reason = Some(format!(
            "the log ends at record {} but a signed checkpoint covers record {}: records were removed from the end",
            base + report.records,
            cp.seq
        ));
        report.first_bad_seq = Some(base + report.records + 1);
    }
    Ok(report)
}
