//! Hostile-input tests: see mod.rs. Here: exports, alerts, replicas' reloads, the authorization
//! matrix and tampering with the audit log.

use crate::helpers::TestApp;

/// Payloads a spreadsheet would run as formulas, with either separator.
const FORMULAS: &[&str] = &[
    "x;=cmd|'/C calc'!A0",
    "x,=cmd|'/C calc'!A0",
    "=HYPERLINK(\"http://evil\")",
    "a; +1+2",
    "b,\"@SUM(1)",
    "-2+3",
];

/// Reads `raw` as a spreadsheet would under `sep`: once honouring quotes (what Excel and
/// LibreOffice do), once splitting every line on `sep` blindly. No cell may start a formula.
fn assert_no_formula_cell(raw: &str, what: &str) {
    for sep in [b',', b';'] {
        let mut r = csv::ReaderBuilder::new()
            .delimiter(sep)
            .has_headers(false)
            .flexible(true)
            .from_reader(raw.as_bytes());
        let mut cells: Vec<String> = Vec::new();
        for rec in r.records() {
            cells.extend(rec.unwrap().iter().map(str::to_string));
        }
        for line in raw.lines() {
            cells.extend(line.split(sep as char).map(str::to_string));
        }
        for cell in &cells {
            let start = cell.trim_start_matches([' ', '"']);
            assert!(
                !start.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{what}: under `{}` the cell {cell:?} is a formula",
                sep as char
            );
        }
    }
}

#[tokio::test]
async fn csv_exports_carry_no_formula_under_either_separator() {
    let app = TestApp::spawn().await;
    for payload in FORMULAS {
        // A client id an attacker chose (a failed login records it) and a path they sent.
        app.token_for(payload, "x").await;
    }
    let (_, bank) = app.token("financial_institution").await;
    app.data(&bank, "/v1/stores/power/a;=1+2;@x,-3").await;
    let (_, officer) = app.token("security_officer").await;
    let csv = app
        .http
        .get(format!("{}/admin/audit/export?format=csv", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.contains("cmd|"), "the payloads are in the export");
    assert_no_formula_cell(&csv, "GET /admin/audit/export");
    // Officers still read the value: one quoted cell, defused, under `,`.
    let rows: Vec<csv::StringRecord> = csv::Reader::from_reader(csv.as_bytes())
        .records()
        .map(|r| r.unwrap())
        .collect();
    assert!(
        rows.iter().any(|r| &r[5] == "x;'=cmd|'/C calc'!A0"),
        "the client id stays one cell"
    );

    let cfg = crate::cli::config_file(&app);
    let out = crate::cli::credgate(&["audit", "export", "--format", "csv", "--config", &cfg]);
    let (stdout, stderr) = crate::cli::text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("cmd|"));
    assert_no_formula_cell(&stdout, "credgate audit export");
}
