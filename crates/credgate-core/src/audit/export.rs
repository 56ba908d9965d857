//! Exports for officers, streamed page by page with constant memory. Text fields are escaped so
//! that no control character can forge a line (CSV and NDJSON alike), and CSV cells that a
//! spreadsheet would run as formulas are defused.

use super::AuditRecord;

/// What a spreadsheet takes as the start of a formula (TAB and CR are escaped before this).
const FORMULA: [char; 4] = ['=', '+', '-', '@'];
/// The separators a spreadsheet may split on, whatever this file was written with: `,` in most
/// locales, `;` where the decimal mark is a comma.
const SEPARATORS: [char; 2] = [',', ';'];

/// Control characters become visible `\u{..}` escapes, and no cell can be read as a formula
/// under a `,` or a `;` locale (OWASP CSV injection): a cell that starts with a formula
/// character gets a leading `'`, and so does every formula character that follows a separator
/// (past spaces and quotes), since a spreadsheet splitting on the other separator would make it
/// the start of a cell of its own (`x;=cmd|'/C calc'!A0`).
pub fn defang(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    // True at the start of the cell and after a separator, until something other than a space
    // or a quote comes: that is where a spreadsheet could start a cell.
    let mut cell_start = true;
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
            cell_start = false;
            continue;
        }
        if cell_start && FORMULA.contains(&c) {
            out.push('\'');
        }
        out.push(c);
        if SEPARATORS.contains(&c) {
            cell_start = true;
        } else if c != ' ' && c != '"' {
            cell_start = false;
        }
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
    // Appended, so that a reader of the first 26 columns reads them as before.
    "actor",
    "actor_org",
    "legal_basis",
    "caller_request_id",
    "trace_id",
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
        o(&r.actor),
        o(&r.actor_org),
        o(&r.legal_basis),
        // The caller's own words (visible ASCII, so `=`, `+`, `-` and `@` may lead): defused.
        o(&r.caller_request_id),
        o(&r.trace_id),
    ]
}

pub fn csv_bytes(rows: &[Vec<String>]) -> Vec<u8> {
    // Every field quoted: a cell holding `;` must stay one cell where `;` separates.
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
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
        assert_eq!(defang("x;=cmd|'/C calc'!A0"), "x;'=cmd|'/C calc'!A0");
        assert_eq!(defang("a, \"+1"), "a, \"'+1");
        assert_eq!(defang(" @SUM(1)"), " '@SUM(1)");
        assert_eq!(defang("\t=1"), "\\u{9}=1");
        assert_eq!(defang("a-b;c"), "a-b;c");
        let r = AuditRecord {
            path: "/x\n{\"forged\":1}".into(),
            ..Default::default()
        };
        let line = ndjson_line(&r);
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(csv_row(&r).len(), CSV_HEADER.len());
        let r2 = AuditRecord {
            caller_request_id: Some("=cmd|'/C calc'!A0".into()),
            ..Default::default()
        };
        assert!(csv_row(&r2).contains(&"'=cmd|'/C calc'!A0".to_string()));
        let csv = csv_bytes(&[csv_row(&r)]);
        assert_eq!(csv.iter().filter(|b| **b == b'\n').count(), 1);
    }
}
