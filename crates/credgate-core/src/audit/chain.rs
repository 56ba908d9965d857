//! Tamper evidence: each record's hash is SHA-256 over the previous hash and a canonical
//! encoding of the record; checkpoints sign the head with Ed25519.
//!
//! The encoding is versioned, so that stored logs keep verifying when it changes. A version-1
//! hash is 64 bare hex digits (every log written so far). A later version writes its hashes as
//! `v<N>:<hex>`, adds a variant to `Encoding` with its own golden vectors, and becomes `CURRENT`;
//! the verifier reads each record's version from its hash, so v1 records still verify. The
//! golden vectors in the tests below pin each version's bytes: if one fails, stored logs would
//! no longer verify.

use ring::{
    digest,
    signature::{self, Ed25519KeyPair},
};

use super::AuditRecord;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

use hex::encode as hex;

/// The versions of the canonical encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A JSON array of every field but `prev_hash` and `hash`; the hash is bare hex.
    V1,
    /// V1's array of two groups plus a third, `[actor, actor_org]` (a staff person acting);
    /// the hash is `v2:<hex>`. Used only for records that name a person, so every other
    /// record keeps its v1 bytes.
    V2,
    /// V2's array plus a fourth group, `[legal_basis, caller_request_id, trace_id]` (the
    /// purpose's legal basis, the caller's own request id and W3C trace id); the hash is
    /// `v3:<hex>`. Used only for records carrying one of these, so every earlier record keeps
    /// its v1 or v2 bytes and still verifies.
    V3,
    /// Per-writer chains: V3's four groups, with the record's place in its chain
    /// (`chain_seq`) where v1..v3 have `seq`, plus a fifth group `[writer_id]`; the hash is
    /// `v4:<hex>`. Every record written since chains became per writer uses it: the global
    /// `seq` is assigned by the database when the batch is inserted, after hashing, so it
    /// cannot be covered; the chain and the place in it are.
    V4,
}

/// The chain every record written before per-writer chains belongs to (migration 0060). Its
/// records are v1..v3 and their `chain_seq` is their `seq`; no writer may take this name.
pub const LEGACY_WRITER: &str = "legacy";

/// The version new records are written with (see [`Encoding::for_record`]).
pub const CURRENT: Encoding = Encoding::V4;

impl Encoding {
    /// The version a stored hash was made with; `None` for a form no version writes.
    pub fn of_hash(hash: &str) -> Option<Self> {
        let bare =
            |h: &str| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if let Some(rest) = hash.strip_prefix("v4:") {
            return bare(rest).then_some(Self::V4);
        }
        if let Some(rest) = hash.strip_prefix("v3:") {
            return bare(rest).then_some(Self::V3);
        }
        match hash.strip_prefix("v2:") {
            Some(rest) => bare(rest).then_some(Self::V2),
            None => bare(hash).then_some(Self::V1),
        }
    }

    /// The version a new record is written with: always `CURRENT` (v4), which covers every
    /// field. v1..v3 are only verified, never written: they hash `seq`, which the database
    /// now assigns after hashing.
    pub fn for_record(_r: &AuditRecord) -> Self {
        CURRENT
    }

    pub fn canonical(self, r: &AuditRecord) -> Vec<u8> {
        match self {
            Self::V1 => canonical_v1(r),
            Self::V2 => canonical_v2(r),
            Self::V3 => canonical_v3(r),
            Self::V4 => canonical_v4(r),
        }
    }

    /// The record's hash in this version's written form.
    pub fn hash(self, prev_hash: &str, r: &AuditRecord) -> String {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(prev_hash.as_bytes());
        ctx.update(b"\n");
        ctx.update(&self.canonical(r));
        let hex = hex(ctx.finish().as_ref());
        match self {
            Self::V1 => hex,
            Self::V2 => format!("v2:{hex}"),
            Self::V3 => format!("v3:{hex}"),
            Self::V4 => format!("v4:{hex}"),
        }
    }
}

/// Version 1: a JSON array of every field but `prev_hash` and `hash`, in a fixed order.
/// serde_json writes the same bytes for the same values, and `masked` is a sorted map, so this is
/// canonical. Frozen: pinned by `golden_v1_record`.
fn canonical_v1(r: &AuditRecord) -> Vec<u8> {
    serde_json::to_vec(&(first_group(r, r.seq), second_group(r)))
        .expect("an audit record serialises")
}

/// Version 2: version 1's two groups and `[actor, actor_org]`. Frozen: pinned by
/// `golden_v2_record`.
fn canonical_v2(r: &AuditRecord) -> Vec<u8> {
    serde_json::to_vec(&(
        first_group(r, r.seq),
        second_group(r),
        (&r.actor, &r.actor_org),
    ))
    .expect("an audit record serialises")
}

/// Version 3: version 2's three groups and `[legal_basis, caller_request_id, trace_id]`.
/// Frozen: pinned by `golden_v3_record`.
///
/// Each version writes its groups in one pass. The first v3 re-parsed the v2 bytes, which
/// re-parsed v1's: 70k instructions a record, 14% of a data request (callgrind).
fn canonical_v3(r: &AuditRecord) -> Vec<u8> {
    serde_json::to_vec(&(
        first_group(r, r.seq),
        second_group(r),
        (&r.actor, &r.actor_org),
        (&r.legal_basis, &r.caller_request_id, &r.trace_id),
    ))
    .expect("an audit record serialises")
}

/// Version 4: version 3's groups with `chain_seq` in the first group's first place, and
/// `[writer_id]`. Frozen: pinned by `golden_v4_record`.
fn canonical_v4(r: &AuditRecord) -> Vec<u8> {
    serde_json::to_vec(&(
        first_group(r, r.chain_seq),
        second_group(r),
        (&r.actor, &r.actor_org),
        (&r.legal_basis, &r.caller_request_id, &r.trace_id),
        (&r.writer_id,),
    ))
    .expect("an audit record serialises")
}

/// Version 1's first group: who asked, when, and how. `place` is `seq` up to v3 and
/// `chain_seq` from v4.
fn first_group(r: &AuditRecord, place: i64) -> impl serde::Serialize + '_ {
    (
        place,
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
    )
}

/// Version 1's second group: what was asked for, what was decided and released.
fn second_group(r: &AuditRecord) -> impl serde::Serialize + '_ {
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
    )
}

fn has_person(r: &AuditRecord) -> bool {
    r.actor.is_some() || r.actor_org.is_some()
}

fn has_v3_fields(r: &AuditRecord) -> bool {
    r.legal_basis.is_some() || r.caller_request_id.is_some() || r.trace_id.is_some()
}

/// The canonical encoding a new record is written with.
pub fn canonical(r: &AuditRecord) -> Vec<u8> {
    Encoding::for_record(r).canonical(r)
}

/// The record's hash in the version it is written with: what the writer stores.
pub fn hash(prev_hash: &str, r: &AuditRecord) -> String {
    Encoding::for_record(r).hash(prev_hash, r)
}

/// Whether the record's stored hash is its hash, in the version the hash names. A hash in no
/// known form does not verify, nor does a record carrying a field its version does not cover:
/// v1 does not cover `actor`, v1 and v2 not `legal_basis`, `caller_request_id` or `trace_id`,
/// so one added to an old record afterwards must not pass as original.
///
/// v1..v3 hash `seq`, not the chain: such a record is valid only in the legacy chain, at the
/// place its `seq` names. A v4 record is valid in no other chain and at no other place than
/// the ones it was hashed with.
pub fn verifies(r: &AuditRecord) -> bool {
    let legacy = r.writer_id == LEGACY_WRITER && r.chain_seq == r.seq;
    let covered = |e: Encoding| match e {
        Encoding::V1 => legacy && !has_person(r) && !has_v3_fields(r),
        Encoding::V2 => legacy && !has_v3_fields(r),
        Encoding::V3 => legacy,
        Encoding::V4 => r.writer_id != LEGACY_WRITER,
    };
    Encoding::of_hash(&r.hash).is_some_and(|e| covered(e) && e.hash(&r.prev_hash, r) == r.hash)
}

/// Chains `records`, in order, onto the chain's record `chain_seq` whose hash is `hash`: sets
/// each one's `chain_seq`, `prev_hash` and `hash` (their `writer_id` is set by the caller).
/// Returns the new head's place and hash.
pub fn link(mut chain_seq: i64, mut hash: String, records: &mut [AuditRecord]) -> (i64, String) {
    for r in records.iter_mut() {
        chain_seq += 1;
        r.chain_seq = chain_seq;
        r.prev_hash = std::mem::take(&mut hash);
        r.hash = self::hash(&r.prev_hash, r);
        hash = r.hash.clone();
    }
    (chain_seq, hash)
}

/// What a legacy checkpoint signs (made before chains were per writer; `seq` was the chain's
/// place). Frozen: pinned by `golden_checkpoint`. Accepted only for the legacy chain.
pub fn checkpoint_message(seq: i64, hash: &str, time_us: i64) -> Vec<u8> {
    format!("credgate-audit-checkpoint\n{seq}\n{hash}\n{time_us}").into_bytes()
}

/// What a chain's checkpoint signs: the chain, the place in it, the hash there and when.
/// Frozen: pinned by `golden_chain_checkpoint`. The chain is named so that a signature can
/// never be moved to another chain's record.
pub fn chain_checkpoint_message(
    writer_id: &str,
    chain_seq: i64,
    hash: &str,
    time_us: i64,
) -> Vec<u8> {
    format!("credgate-audit-checkpoint-v2\n{writer_id}\n{chain_seq}\n{hash}\n{time_us}")
        .into_bytes()
}

/// Signs a chain's checkpoint (the message every new checkpoint uses).
pub fn sign_chain_checkpoint(
    key: &Ed25519KeyPair,
    writer_id: &str,
    chain_seq: i64,
    hash: &str,
    time_us: i64,
) -> String {
    hex(key
        .sign(&chain_checkpoint_message(
            writer_id, chain_seq, hash, time_us,
        ))
        .as_ref())
}

/// Whether `sig_hex` signs this checkpoint of this chain: the chain message, or for the
/// legacy chain also the legacy message (its `seq` is its `chain_seq`).
pub fn chain_checkpoint_signed(
    public: &[u8],
    writer_id: &str,
    chain_seq: i64,
    hash: &str,
    time_us: i64,
    sig_hex: &str,
) -> bool {
    let Ok(sig) = hex::decode(sig_hex) else {
        return false;
    };
    let key = signature::UnparsedPublicKey::new(&signature::ED25519, public);
    let msg = chain_checkpoint_message(writer_id, chain_seq, hash, time_us);
    key.verify(&msg, &sig).is_ok()
        || (writer_id == LEGACY_WRITER
            && key
                .verify(&checkpoint_message(chain_seq, hash, time_us), &sig)
                .is_ok())
}

pub fn sign_checkpoint(key: &Ed25519KeyPair, seq: i64, hash: &str, time_us: i64) -> String {
    hex(key.sign(&checkpoint_message(seq, hash, time_us)).as_ref())
}

pub fn verify_checkpoint(public: &[u8], seq: i64, hash: &str, time_us: i64, sig_hex: &str) -> bool {
    let Ok(sig) = hex::decode(sig_hex) else {
        return false;
    };
    signature::UnparsedPublicKey::new(&signature::ED25519, public)
        .verify(&checkpoint_message(seq, hash, time_us), &sig)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A record with every field set, non-ASCII text and a control character included.
    fn fixed() -> AuditRecord {
        AuditRecord {
            seq: 42,
            id: "au_0190f0e0a1b2c3d4e5f60718293a4b5c".into(),
            time_us: 1_735_689_600_123_456,
            request_id: "req-1".into(),
            kind: "data".into(),
            client_id: Some("cl_bank".into()),
            org: Some("某某银行".into()),
            role: Some("financial_institution".into()),
            actor_subject: None,
            purpose: Some("lending".into()),
            consent_id: Some("cs_1".into()),
            method: "GET".into(),
            path: "/v1/stores/power/entities/91350100M000100Y43\t".into(),
            store: Some("power".into()),
            dataset: Some("entity".into()),
            subjects: vec!["91350100M000100Y43".into(), "110101199003077777".into()],
            decision: "allow".into(),
            rule: None,
            masked: BTreeMap::from([("id_number".into(), 2), ("address".into(), 1)]),
            status: 200,
            bytes_out: 1234,
            upstream_us: Some(5678),
            total_us: 9012,
            client_addr: "127.0.0.1".into(),
            prev_hash: GENESIS.into(),
            hash: String::new(),
            actor: None,
            actor_org: None,
            legal_basis: None,
            caller_request_id: None,
            trace_id: None,
            writer_id: LEGACY_WRITER.into(),
            chain_seq: 42,
        }
    }

    /// Hashes `r` in `e` onto genesis, as a writer of that version did.
    fn seal(r: &mut AuditRecord, e: Encoding) {
        r.prev_hash = GENESIS.into();
        r.hash = e.hash(GENESIS, r);
    }

    fn sha256_hex(b: &[u8]) -> String {
        hex(digest::digest(&digest::SHA256, b).as_ref())
    }

    /// The fixed record's v1 bytes, hex: a change here invalidates every stored log.
    const V1_BYTES: &str = "5b5b34322c2261755f3031393066306530613162326333643465356636303731383239336134623563222c313733353638393630303132333435362c227265712d31222c2264617461222c22636c5f62616e6b222c22e69f90e69f90e993b6e8a18c222c2266696e616e6369616c5f696e737469747574696f6e222c6e756c6c2c226c656e64696e67222c2263735f31222c22474554225d2c5b222f76312f73746f7265732f706f7765722f656e7469746965732f39313335303130304d3030303130305934335c74222c22706f776572222c22656e74697479222c5b2239313335303130304d303030313030593433222c22313130313031313939303033303737373737225d2c22616c6c6f77222c6e756c6c2c7b2261646472657373223a312c2269645f6e756d626572223a327d2c3230302c313233342c353637382c393031322c223132372e302e302e31225d5d";
    const V1_BYTES_SHA256: &str =
        "1dfb804500381b3ba46b2812bf19dd21664b9c6cf9068598cdb95a5ad510a8d7";
    /// SHA-256 over the genesis hash, a newline and the bytes above.
    const V1_HASH: &str = "c4352fa6b07e189317dc3f914e7ec0f31e352c83ff1661246dd1e52947e71ce1";

    #[test]
    fn golden_v1_record() {
        let mut r = fixed();
        let bytes = Encoding::V1.canonical(&r);
        assert_eq!(hex(&bytes), V1_BYTES);
        assert_eq!(sha256_hex(&bytes), V1_BYTES_SHA256);
        assert_eq!(Encoding::V1.hash(GENESIS, &r), V1_HASH);
        // A stored v1 record verifies, in the legacy chain at its seq only.
        seal(&mut r, Encoding::V1);
        assert_eq!(r.hash, V1_HASH);
        assert!(verifies(&r));
        let mut moved = r.clone();
        moved.writer_id = "replica-a".into();
        assert!(!verifies(&moved), "a v1 record claimed by another chain");
        let mut moved = r.clone();
        moved.chain_seq = 43;
        assert!(!verifies(&moved), "a v1 record at another place");
        assert_eq!(Encoding::of_hash(V1_HASH), Some(Encoding::V1));
    }

    #[test]
    fn a_hash_in_no_known_form_or_edited_does_not_verify() {
        let mut r = fixed();
        r.hash = V1_HASH.into();
        assert!(verifies(&r));
        for bad in [
            V1_HASH.to_uppercase(),
            format!("v1:{V1_HASH}"),
            format!("v9:{V1_HASH}"),
            V1_HASH[..63].to_string(),
            "ff".into(),
            String::new(),
        ] {
            assert_eq!(Encoding::of_hash(&bad), None, "{bad}");
            r.hash = bad;
            assert!(!verifies(&r));
        }
        r.hash = V1_HASH.into();
        r.status = 201;
        assert!(!verifies(&r), "edited content");
    }

    /// SHA-256 over the genesis hash, a newline and the fixed record's v2 bytes, with a person.
    const V2_HASH: &str = "v2:28a8f49dd1e9de5d6f1d6ed8d2cd24599efd2160d4cfb879117d075289e51937";

    #[test]
    fn golden_v2_record() {
        let mut r = fixed();
        r.actor = Some("staff:alice".into());
        r.actor_org = Some("credgate-ops".into());
        let bytes = Encoding::V2.canonical(&r);
        // v1's bytes without their closing bracket, then the person.
        let v1 = Encoding::V1.canonical(&r);
        let mut expected = v1[..v1.len() - 1].to_vec();
        expected.extend_from_slice(br#",["staff:alice","credgate-ops"]]"#);
        assert_eq!(bytes, expected);
        assert_eq!(Encoding::V2.hash(GENESIS, &r), V2_HASH);
        seal(&mut r, Encoding::V2);
        assert_eq!(r.hash, V2_HASH);
        assert!(verifies(&r));
        assert_eq!(Encoding::of_hash(V2_HASH), Some(Encoding::V2));
    }

    #[test]
    fn a_person_added_to_or_removed_from_a_record_does_not_verify() {
        // Added to a v1 record, which v1's bytes do not cover.
        let mut r = fixed();
        r.hash = V1_HASH.into();
        r.actor = Some("staff:mallory".into());
        assert!(!verifies(&r));
        r.actor = None;
        r.actor_org = Some("evil".into());
        assert!(!verifies(&r));
        // Changed or removed on a v2 record.
        let mut r = fixed();
        r.actor = Some("staff:alice".into());
        r.actor_org = Some("credgate-ops".into());
        seal(&mut r, Encoding::V2);
        assert!(verifies(&r));
        let mut edited = r.clone();
        edited.actor = Some("staff:bob".into());
        assert!(!verifies(&edited));
        let mut removed = r.clone();
        removed.actor = None;
        removed.actor_org = None;
        assert!(!verifies(&removed));
        // Or passed off as v1 by rewriting the hash's form.
        let mut downgraded = removed;
        downgraded.hash = r.hash.trim_start_matches("v2:").into();
        assert!(!verifies(&downgraded));
    }

    /// SHA-256 over the genesis hash, a newline and the fixed record's v3 bytes.
    const V3_HASH: &str = "v3:029c700abd8cd85ac44e3841047169f1fec539b2303e61407970eab362b33c16";

    fn with_v3_fields(mut r: AuditRecord) -> AuditRecord {
        r.legal_basis = Some("consent".into());
        r.caller_request_id = Some("bank-req-7".into());
        r.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        r
    }

    #[test]
    fn golden_v3_record() {
        let mut r = with_v3_fields(fixed());
        let bytes = Encoding::V3.canonical(&r);
        // v2's bytes without their closing bracket, then the new group.
        let v2 = Encoding::V2.canonical(&r);
        let mut expected = v2[..v2.len() - 1].to_vec();
        expected
            .extend_from_slice(br#",["consent","bank-req-7","4bf92f3577b34da6a3ce929d0e0e4736"]]"#);
        assert_eq!(bytes, expected);
        assert!(v2.ends_with(br#",[null,null]]"#));
        assert_eq!(Encoding::V3.hash(GENESIS, &r), V3_HASH);
        seal(&mut r, Encoding::V3);
        assert_eq!(r.hash, V3_HASH);
        assert!(verifies(&r));
        assert_eq!(Encoding::of_hash(V3_HASH), Some(Encoding::V3));
    }

    #[test]
    fn new_fields_edited_added_or_removed_do_not_verify() {
        // Added to an old (v1 or v2) record, whose bytes do not cover them.
        for field in 0..3 {
            let mut r = fixed();
            r.hash = V1_HASH.into();
            assert!(verifies(&r), "an old-format record still verifies");
            let mut v2 = fixed();
            v2.actor = Some("staff:alice".into());
            v2.actor_org = Some("credgate-ops".into());
            v2.hash = V2_HASH.into();
            assert!(verifies(&v2), "an old v2 record still verifies");
            for rec in [&mut r, &mut v2] {
                match field {
                    0 => rec.legal_basis = Some("legal_duty".into()),
                    1 => rec.caller_request_id = Some("x".into()),
                    _ => rec.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                }
                assert!(!verifies(rec), "field {field} added to an old record");
            }
        }
        // Edited, removed, or passed off as v2 on a v3 record.
        let mut r = with_v3_fields(fixed());
        seal(&mut r, Encoding::V3);
        assert!(verifies(&r));
        let mut edited = r.clone();
        edited.legal_basis = Some("legal_duty".into());
        assert!(!verifies(&edited));
        let mut edited = r.clone();
        edited.trace_id = Some("00000000000000000000000000000001".into());
        assert!(!verifies(&edited));
        let mut removed = r.clone();
        removed.legal_basis = None;
        removed.caller_request_id = None;
        removed.trace_id = None;
        assert!(!verifies(&removed));
        let mut downgraded = removed;
        downgraded.hash = r.hash.replacen("v3:", "v2:", 1);
        assert!(!verifies(&downgraded));
        downgraded.hash = r.hash.trim_start_matches("v3:").into();
        assert!(!verifies(&downgraded));
    }

    #[test]
    fn golden_checkpoint() {
        let msg = checkpoint_message(42, V1_HASH, 1_735_689_600_123_456);
        assert_eq!(
            hex(&msg),
            "63726564676174652d61756469742d636865636b706f696e740a34320a\
             63343335326661366230376531383933313764633366393134653765633066333165333532633833666631363631323436646431653532393437653731636531\
             0a31373335363839363030313233343536"
        );
        // Ed25519 signatures are deterministic: a fixed key signs the message to fixed bytes.
        let kp = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
        let public = signature::KeyPair::public_key(&kp).as_ref().to_vec();
        assert_eq!(
            hex(&public),
            "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
        );
        let sig = sign_checkpoint(&kp, 42, V1_HASH, 1_735_689_600_123_456);
        assert_eq!(
            sig,
            "219c720a1d0fa2fd8fef281e6c4dbd16a00341c8b2fb9d67fcfd30455eaca1b0\
             b4b389c632e8709f1f77c792cd9d89503f0714a79250c7e70923bee1db0bcf04"
        );
        assert!(verify_checkpoint(
            &public,
            42,
            V1_HASH,
            1_735_689_600_123_456,
            &sig
        ));
        assert!(!verify_checkpoint(
            &public,
            43,
            V1_HASH,
            1_735_689_600_123_456,
            &sig
        ));
        assert!(!verify_checkpoint(
            &public,
            42,
            GENESIS,
            1_735_689_600_123_456,
            &sig
        ));
    }

    /// A record of the chain `replica-a`, at place 7 (its global `seq` is not hashed).
    fn v4_fixed() -> AuditRecord {
        let mut r = with_v3_fields(fixed());
        r.actor = Some("staff:alice".into());
        r.actor_org = Some("credgate-ops".into());
        r.writer_id = "replica-a".into();
        r.chain_seq = 7;
        r
    }

    /// SHA-256 over the genesis hash, a newline and `v4_fixed`'s v4 bytes.
    const V4_HASH: &str = "v4:a86640b377a1f22692686dfe704133cd8f5cdca1e5e068edd113da2b757600aa";

    #[test]
    fn golden_v4_record() {
        let mut r = v4_fixed();
        let bytes = Encoding::V4.canonical(&r);
        // v3's bytes with chain_seq where seq was, then the chain.
        let mut as_v3 = r.clone();
        as_v3.seq = 7;
        let v3 = Encoding::V3.canonical(&as_v3);
        let mut expected = v3[..v3.len() - 1].to_vec();
        expected.extend_from_slice(br#",["replica-a"]]"#);
        assert_eq!(bytes, expected);
        assert_eq!(Encoding::V4.hash(GENESIS, &r), V4_HASH);
        assert_eq!(Encoding::for_record(&r), Encoding::V4);
        let (place, head) = link(6, GENESIS.into(), std::slice::from_mut(&mut r));
        assert_eq!((place, head.as_str()), (7, V4_HASH));
        assert!(verifies(&r));
        assert_eq!(Encoding::of_hash(V4_HASH), Some(Encoding::V4));
        // The global seq is the database's: any value verifies.
        r.seq = 123_456;
        assert!(verifies(&r));
    }

    #[test]
    fn a_v4_record_moved_to_another_chain_or_place_or_edited_does_not_verify() {
        let mut r = v4_fixed();
        link(6, GENESIS.into(), std::slice::from_mut(&mut r));
        assert!(verifies(&r));
        let mut moved = r.clone();
        moved.writer_id = "replica-b".into();
        assert!(!verifies(&moved), "another chain");
        moved.writer_id = LEGACY_WRITER.into();
        assert!(!verifies(&moved), "the legacy chain");
        let mut moved = r.clone();
        moved.chain_seq = 8;
        assert!(!verifies(&moved), "another place");
        let mut edited = r.clone();
        edited.trace_id = None;
        assert!(!verifies(&edited));
        // Nor passed off as an older version, whose bytes do not name the chain.
        for old in ["v3:", "v2:", ""] {
            let mut downgraded = r.clone();
            downgraded.hash = format!("{old}{}", &r.hash[3..]);
            assert!(!verifies(&downgraded), "{old}");
        }
        // A v4 record cannot claim the legacy chain even if hashed for it.
        let mut legacy = v4_fixed();
        legacy.writer_id = LEGACY_WRITER.into();
        legacy.hash = Encoding::V4.hash(GENESIS, &legacy);
        assert!(!verifies(&legacy));
    }

    #[test]
    fn golden_chain_checkpoint() {
        let msg = chain_checkpoint_message("replica-a", 7, V4_HASH, 1_735_689_600_123_456);
        assert_eq!(
            String::from_utf8(msg).unwrap(),
            format!("credgate-audit-checkpoint-v2\nreplica-a\n7\n{V4_HASH}\n1735689600123456")
        );
        let kp = Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap();
        let public = signature::KeyPair::public_key(&kp).as_ref().to_vec();
        let sig = sign_chain_checkpoint(&kp, "replica-a", 7, V4_HASH, 1_735_689_600_123_456);
        assert_eq!(
            sig,
            "0d849b32ffcfa89310029d8b4998e189acc4b215b55fdc7f5bb4504f10abb4fc\
             2b9fcd907933257570d79ebb1df54c492f89bf13e20471c09a7665e002ae490d"
        );
        let ok =
            |w: &str, n: i64, h: &str, t: i64| chain_checkpoint_signed(&public, w, n, h, t, &sig);
        assert!(ok("replica-a", 7, V4_HASH, 1_735_689_600_123_456));
        assert!(!ok("replica-b", 7, V4_HASH, 1_735_689_600_123_456));
        assert!(!ok("replica-a", 8, V4_HASH, 1_735_689_600_123_456));
        assert!(!ok("replica-a", 7, V1_HASH, 1_735_689_600_123_456));
        assert!(!ok("replica-a", 7, V4_HASH, 1_735_689_600_123_457));
        // A legacy checkpoint (the old message) counts for the legacy chain only.
        let old = sign_checkpoint(&kp, 42, V1_HASH, 1);
        assert!(chain_checkpoint_signed(
            &public,
            LEGACY_WRITER,
            42,
            V1_HASH,
            1,
            &old
        ));
        assert!(!chain_checkpoint_signed(
            &public,
            "replica-a",
            42,
            V1_HASH,
            1,
            &old
        ));
    }
}
