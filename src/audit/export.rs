//! Exports for officers, streamed page by page with constant memory. Text fields are escaped so
//! that no control character can forge a line (CSV and NDJSON alike), and CSV cells that a
//! spreadsheet would run as formulas are defused.

use super::AuditRecord;

/// Control characters become visible `\u{..}` escapes.
pub fn defang(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    if out.starts_with(['=', '+', '-', '@']) {
        out.insert(0, '\'');
    }
    out
}

pub const CSV_HEADER: &[&str] = &[
    "seq",
    "id",
    "time",
    "request_id",
    "kind",
    "client_id",
    "org",
    "role",
    "actor_subject",
    "purpose",
    "consent_id",
    "method",
    "path",
    "store",
    "dataset",
    "subjects",
    "decision",
    "rule",
    "masked",
    "status",
    "bytes_out",
    "upstream_us",
    "total_us",
    "client_addr",
    "prev_hash",
    "hash",
];

pub fn csv_row(r: &AuditRecord) -> Vec<String> {
    let o = |v: &Option<String>| defang(v.as_deref().unwrap_or(""));
    vec![
        r.seq.to_string(),
        defang(&r.id),
        crate::storage::micros_to_rfc3339(r.time_us),
        defang(&r.request_id),
        defang(&r.kind),
        o(&r.client_id),
        o(&r.org),
        o(&r.role),
        o(&r.actor_subject),
        o(&r.purpose),
        o(&r.consent_id),
        defang(&r.method),
        defang(&r.path),
        o(&r.store),
        o(&r.dataset),
        defang(&r.subjects.join(" ")),
        defang(&r.decision),
        o(&r.rule),
        defang(&serde_json::to_string(&r.masked).unwrap_or_default()),
        r.status.to_string(),
        r.bytes_out.to_string(),
        r.upstream_us.map(|v| v.to_string()).unwrap_or_default(),
        r.total_us.to_string(),
        defang(&r.client_addr),
        r.prev_hash.clone(),
        r.hash.clone(),
    ]
}

pub fn csv_bytes(rows: &[Vec<String>]) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        let _ = w.write_record(r);
    }
    w.into_inner().unwrap_or_default()
}

/// NDJSON: serde_json escapes every control character, so one record is always one line.
pub fn ndjson_line(r: &AuditRecord) -> Vec<u8> {
    let mut v = serde_json::to_vec(r).expect("a record serialises");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_forge_lines_and_formulas_are_defused() {
        assert_eq!(defang("a\nb\r\u{1b}"), "a\\u{a}b\\u{d}\\u{1b}");
        assert_eq!(defang("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        let r = AuditRecord {
            path: "/x\n{\"forged\":1}".into(),
            ..Default::default()
        };
        let line = ndjson_line(&r);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let csv = csv_bytes(&[csv_row(&r)]);
        assert_eq!(csv.iter().filter(|b| **b == b'\n').count(), 1);
    }
}
