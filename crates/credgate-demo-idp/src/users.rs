//! The demo users: one per staff role, each with a one-time-code secret, and data subjects
//! taken from the sample store's data so that their records exist.

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;

use crate::totp::base32_encode;

/// The staff roles credgate's policies know, with the demo user's name for each.
pub const STAFF: &[(&str, &str, &str)] = &[
    ("officer", "security_officer", "Demo Security Officer"),
    ("handler", "objection_handler", "Demo Objection Handler"),
    ("admin", "system_admin", "Demo System Administrator"),
    ("auditor", "auditor", "Demo Auditor"),
];
/// The organisation every demo staff member works for (the demo's own operator).
pub const STAFF_ORG: &str = "credgate-ops";
/// The sample store's defaults (`credgate sample-store`): the data the demo serves.
const SAMPLE_SEED: u64 = 42;
const SAMPLE_ENTITIES: usize = 200;

/// One demo user, in the shape `demo.json` lists them (DESIGN.md, "People signing in").
#[derive(Debug, Clone, Serialize)]
pub struct DemoUser {
    pub username: String,
    pub password: String,
    /// `staff` or `subject`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// `legal` or `natural`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_type: Option<&'static str>,
    /// Base32, for an authenticator app (or `totp::code_now`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp_secret: Option<String>,
    #[serde(skip)]
    pub display_name: String,
}

/// Fresh users with random passwords and secrets: a demo left running is not an open door.
pub fn generate(rng: &SystemRandom) -> Vec<DemoUser> {
    let secret = |n: usize| {
        let mut b = vec![0u8; n];
        rng.fill(&mut b).expect("the system RNG works");
        base32_encode(&b)
    };
    let mut users: Vec<DemoUser> = STAFF
        .iter()
        .map(|(username, role, name)| DemoUser {
            username: username.to_string(),
            password: secret(10).to_lowercase(),
            kind: "staff",
            role: Some(role.to_string()),
            subject_id: None,
            subject_type: None,
            totp_secret: Some(secret(20)),
            display_name: name.to_string(),
        })
        .collect();
    let data = credgate_sample_store::data::generate(SAMPLE_SEED, SAMPLE_ENTITIES);
    let companies = data
        .entities
        .iter()
        .filter_map(|e| e["uscc"].as_str())
        .take(2);
    let persons = data
        .persons
        .iter()
        .filter_map(|p| p["id_number"].as_str())
        .take(2);
    let subjects = companies
        .map(|id| ("company", "legal", id))
        .chain(persons.map(|id| ("person", "natural", id)));
    let mut counts = std::collections::HashMap::new();
    for (prefix, kind, id) in subjects {
        let n = counts.entry(prefix).or_insert(0);
        *n += 1;
        users.push(DemoUser {
            username: format!("{prefix}{n}"),
            password: secret(10).to_lowercase(),
            kind: "subject",
            role: None,
            subject_id: Some(id.to_string()),
            subject_type: Some(kind),
            totp_secret: None,
            display_name: format!("{prefix} {id}"),
        });
    }
    users
}
