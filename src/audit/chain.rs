//! Tamper evidence: each record's hash is SHA-256 over the previous hash and a canonical
//! encoding of the record; checkpoints sign the head with Ed25519.

use ring::{
    digest,
    signature::{self, Ed25519KeyPair},
};

use super::AuditRecord;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

use crate::hex::encode as hex;

/// A JSON array of every field but `prev_hash` and `hash`, in a fixed order. serde_json writes
/// the same bytes for the same values, and `masked` is a sorted map, so this is canonical.
pub fn canonical(r: &AuditRecord) -> Vec<u8> {
    serde_json::to_vec(&(
        (
            r.seq,
            &r.id,
            r.time_us,
            &r.request_id,
            &r.kind,
            &r.client_id,
            &r.org,
            &r.role,
            &r.actor_subject,
            &r.purpose,
            &r.consent_id,
            &r.method,
        ),
        (
            &r.path,
            &r.store,
            &r.dataset,
            &r.subjects,
            &r.decision,
            &r.rule,
            &r.masked,
            r.status,
            r.bytes_out,
            r.upstream_us,
            r.total_us,
            &r.client_addr,
        ),
    ))
    .expect("an audit record serialises")
}

pub fn hash(prev_hash: &str, r: &AuditRecord) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev_hash.as_bytes());
    ctx.update(b"\n");
    ctx.update(&canonical(r));
    hex(ctx.finish().as_ref())
}

/// Chains `records`, in order, onto the record `seq` whose hash is `hash`: sets each one's
/// `seq`, `prev_hash` and `hash`. Returns the new head's seq and hash.
pub fn link(mut seq: i64, mut hash: String, records: &mut [AuditRecord]) -> (i64, String) {
    for r in records.iter_mut() {
        seq += 1;
        r.seq = seq;
        r.prev_hash = std::mem::take(&mut hash);
        r.hash = self::hash(&r.prev_hash, r);
        hash = r.hash.clone();
    }
    (seq, hash)
}

fn checkpoint_message(seq: i64, hash: &str, time_us: i64) -> Vec<u8> {
    format!("credgate-audit-checkpoint\n{seq}\n{hash}\n{time_us}").into_bytes()
}

pub fn sign_checkpoint(key: &Ed25519KeyPair, seq: i64, hash: &str, time_us: i64) -> String {
    hex(key.sign(&checkpoint_message(seq, hash, time_us)).as_ref())
}

pub fn verify_checkpoint(public: &[u8], seq: i64, hash: &str, time_us: i64, sig_hex: &str) -> bool {
    let Some(sig) = (0..sig_hex.len())
        .step_by(2)
        .map(|i| {
            sig_hex
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    signature::UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(&checkpoint_message(seq, hash, time_us), &sig)
        .is_ok()
}
