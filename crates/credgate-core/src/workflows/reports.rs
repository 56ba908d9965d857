//! Whistleblower reports: anyone may file one without a token. The reporter's contact is sealed
//! with AES-256-GCM (a fresh nonce each time, the report id as associated data, padded to one
//! size) and opened only for objection handlers; it never enters logs, audit records, metrics
//! or error messages. The reporter follows the report with a receipt code, stored only as a
//! hash.

use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::{Value, json};

use std::sync::Arc;

use super::{
    WorkflowError,
    events::{self, Table},
    machine::{self, Actor, Machine},
    text::{self, Field},
};
use crate::{
    audit::Deferred,
    services::Core,
    storage::{self, Db, StorageError, micros_to_rfc3339},
};

pub use crate::auth::sealer::Sealer;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Received,
    Investigating,
    Closed,
}

impl machine::Status for Status {
    const ALL: &'static [Self] = &[Status::Received, Status::Investigating, Status::Closed];

    fn as_str(self) -> &'static str {
        Status::as_str(self)
    }
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Investigating => "investigating",
            Status::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        <Self as machine::Status>::parse(s)
    }
}

/// received -> investigating -> closed, or closed at once; by a handler.
pub static MACHINE: Machine<Status> = {
    use Actor::Handler;
    use Status::*;
    Machine {
        kind: "report",
        table: Table::Reports,
        moves: &[
            (Received, Investigating, Handler),
            (Investigating, Closed, Handler),
            (Received, Closed, Handler),
        ],
    }
};

pub const CATEGORIES: &[&str] = &["fraud", "false_records", "data_abuse", "safety", "other"];

pub const ABOUT: Field = Field::one("about", 200);
pub const DESCRIPTION: Field = Field::many("description", 8000);
pub const CONTACT: Field = Field::one("the contact", 500);

#[derive(Debug, Clone)]
pub struct WhistleblowerReport {
    pub id: String,
    pub about: String,
    pub category: String,
    pub description: String,
    /// The contact, sealed for handlers (see `Sealer`); never shown in lists.
    pub contact_sealed: Option<String>,
    pub status: Status,
    pub created_at: i64,
    pub updated_at: i64,
}

impl WhistleblowerReport {
    /// The handlers' view, without the contact.
    pub fn view(&self) -> Value {
        json!({
            "id": self.id,
            "about": self.about,
            "category": self.category,
            "description": self.description,
            "status": self.status.as_str(),
            "created_at": micros_to_rfc3339(self.created_at),
            "updated_at": micros_to_rfc3339(self.updated_at),
        })
    }

    /// The reporter's view: status only.
    pub fn follow_view(&self) -> Value {
        json!({"status": self.status.as_str(), "updated_at": micros_to_rfc3339(self.updated_at)})
    }

    /// The contact as filed, opened for a handler.
    pub fn contact(&self, sealer: &Sealer) -> Option<String> {
        self.contact_sealed
            .as_deref()
            .and_then(|s| sealer.open(&self.id, s))
            .map(unpad_contact)
    }
}

/// A report as filed (the body of `POST /public/reports`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filing {
    pub about: String,
    pub category: String,
    pub description: String,
    #[serde(default)]
    pub reporter_contact: Option<String>,
}

pub fn receipt_hash(receipt: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, receipt.as_bytes()).as_ref())
}

/// A checked filing: the report (its contact sealed) and the receipt the reporter follows it
/// with, which is stored only as its hash.
pub fn prepare(state: &Core, req: Filing) -> Result<(WhistleblowerReport, String), WorkflowError> {
    let about = ABOUT.clean(&req.about)?;
    if !CATEGORIES.contains(&req.category.as_str()) {
        return Err(WorkflowError::BadRequest(format!(
            "category is one of: {}",
            CATEGORIES.join(", ")
        )));
    }
    let description = DESCRIPTION.clean(&req.description)?;
    let contact = CONTACT.clean_opt(req.reporter_contact.as_deref())?;
    let id = format!("rp_{}", uuid::Uuid::now_v7().simple());
    let mut raw = [0u8; 16];
    SystemRandom::new()
        .fill(&mut raw)
        .expect("the OS random source works");
    let now = state.clock.now();
    let report = WhistleblowerReport {
        contact_sealed: contact.map(|c| state.report_sealer.seal(&id, &pad_contact(&c))),
        id,
        about,
        category: req.category,
        description,
        status: Status::Received,
        created_at: now,
        updated_at: now,
    };
    Ok((report, hex::encode(raw)))
}

/// The filing and its first history row, deferred to its audit record's transaction.
pub fn filing(report: WhistleblowerReport, receipt: &str) -> Deferred {
    let filed = Arc::new((report, receipt_hash(receipt)));
    Deferred::new(move |conn| {
        let filed = filed.clone();
        Box::pin(async move {
            let (r, receipt_hash) = &*filed;
            storage::reports::insert_in(conn, r, receipt_hash).await?;
            let step = events::Step {
                kind: MACHINE.kind,
                id: &r.id,
                at: r.created_at,
                actor: "reporter",
                from: None,
                to: r.status.as_str(),
                note: None,
            };
            Ok(events::record(conn, &step).await?)
        })
    })
}

pub async fn by_receipt(db: &Db, receipt: &str) -> Result<WhistleblowerReport, WorkflowError> {
    storage::reports::by_receipt(db, &receipt_hash(receipt))
        .await?
        .ok_or_else(|| WorkflowError::NotFound("no report with that receipt".into()))
}

pub async fn get(db: &Db, id: &str) -> Result<WhistleblowerReport, WorkflowError> {
    storage::reports::get(db, id)
        .await?
        .ok_or_else(|| WorkflowError::NotFound("no such report".into()))
}

pub async fn history(db: &Db, id: &str) -> Result<Vec<Value>, StorageError> {
    events::history(db, MACHINE.kind, id).await
}

/// A handler's move of a report (the body of its transitions route).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitionRequest {
    pub to: String,
    #[serde(default)]
    pub note: Option<String>,
}

/// Checks a handler's move and defers it to the audit record's transaction. Returns what the
/// handler is answered.
pub fn decide(
    state: &Core,
    r: &WhistleblowerReport,
    req: TransitionRequest,
    actor: String,
) -> Result<(Value, Deferred), WorkflowError> {
    let to = MACHINE.parse(&req.to)?;
    let note = text::NOTE.clean_or_none(req.note.as_deref())?;
    MACHINE.check(r.status, to, Actor::Handler)?;
    let mv = machine::Move {
        id: r.id.clone(),
        from: r.status,
        to,
        by: Actor::Handler,
        actor,
        note,
        at: state.clock.now(),
    };
    let answer = json!({"id": r.id, "status": to.as_str()});
    Ok((answer, MACHINE.deferred(mv, None)))
}

/// Every sealed contact is this many bytes before sealing, whatever its length: the longest
/// contact (500 characters of up to 4 bytes) and the marker fit, so the ciphertext's length
/// tells nothing about the contact.
const CONTACT_BUCKET: usize = 2048;

/// Marks a padded contact. Contacts sealed before padding lack it and open as they were.
const PADDED: &str = "\u{1}pad1\u{1}";

/// The contact, marked and padded with NULs to `CONTACT_BUCKET` bytes.
fn pad_contact(contact: &str) -> String {
    let mut padded = String::with_capacity(CONTACT_BUCKET);
    padded.push_str(PADDED);
    padded.push_str(contact);
    let fill = CONTACT_BUCKET.saturating_sub(padded.len());
    padded.extend(std::iter::repeat_n('\0', fill));
    padded
}

/// The contact as filed: the marker and padding removed (an old, unpadded one as it is).
fn unpad_contact(opened: String) -> String {
    match opened.strip_prefix(PADDED) {
        Some(rest) => rest.trim_end_matches('\0').to_string(),
        None => opened,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Actor::Handler;
    use Status::*;
    use base64::{Engine, engine::general_purpose::STANDARD};

    #[test]
    fn the_report_machine_allows_exactly_its_table() {
        machine::assert_exactly(
            &MACHINE,
            &[
                (Received, Investigating, Handler),
                (Investigating, Closed, Handler),
                (Received, Closed, Handler),
            ],
        );
    }

    #[test]
    fn sealing_hides_the_contact_uses_fresh_nonces_and_binds_the_report() {
        let s = Sealer::new(&[7u8; 32]);
        let a = s.seal("rp_1", "whistle@example.cn");
        let b = s.seal("rp_1", "whistle@example.cn");
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!String::from_utf8_lossy(&STANDARD.decode(&a).unwrap()).contains("whistle"));
        assert_eq!(s.open("rp_1", &a).as_deref(), Some("whistle@example.cn"));
        assert_eq!(
            s.open("rp_2", &a),
            None,
            "moved to another report, it does not open"
        );
        assert_eq!(Sealer::new(&[8u8; 32]).open("rp_1", &a), None);
    }

    #[test]
    fn padded_contacts_are_one_size_and_open_as_filed() {
        let s = Sealer::new(&[7u8; 32]);
        let short = s.seal("rp_1", &pad_contact("a@b.cn"));
        let long = s.seal("rp_1", &pad_contact(&"长".repeat(500)));
        assert_eq!(short.len(), long.len());
        let open = |c: &str| s.open("rp_1", c).map(unpad_contact);
        assert_eq!(open(&short).as_deref(), Some("a@b.cn"));
        assert_eq!(open(&long), Some("长".repeat(500)));
        // Sealed before padding existed: opens unchanged.
        let old = s.seal("rp_1", "old@example.cn");
        assert_eq!(open(&old).as_deref(), Some("old@example.cn"));
    }
}
