//! `credgate demo` as a new user runs it: start it, then paste the printed lines into a shell.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

#[test]
fn the_demo_starts_and_its_printed_lines_work() {
    if Command::new("curl").arg("--version").output().is_err() {
        // CI installs curl (.ci/run): there a missing prerequisite is a failure, not a skip.
        crate::helpers::skip_unless_ci(
            "the_demo_starts_and_its_printed_lines_work",
            "curl is not installed",
        );
        return;
    }
    crate::helpers::serially_blocking();
    let dir = tempfile::tempdir().unwrap();
    // A relative --dir, as the README's command uses by default.
    let mut child = Command::new(env!("CARGO_BIN_EXE_credgate"))
        .current_dir(dir.path())
        .args([
            "demo",
            "--dir",
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--store-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);

    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let done = line.contains("Bearer $AUDITOR");
        printed.push(line);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let demo: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("demo/demo.json")).unwrap())
            .unwrap();
    let roles: Vec<&str> = demo["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["role"].as_str().unwrap())
        .collect();
    for role in [
        "regulator",
        "government_agency",
        "financial_institution",
        "credit_agency",
        "security_officer",
        "objection_handler",
        "system_admin",
        "auditor",
    ] {
        assert!(roles.contains(&role), "demo.json has a {role} client");
    }
    assert!(
        demo["gateway_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:")
    );
    assert!(dir.path().join("demo/credgate.toml").exists());

    // Run every printed command line, in order, in one shell, as a user pasting them would.
    let mut script = String::from("set -u\n");
    for l in &printed {
        let t = l.trim_start();
        if t.starts_with("curl ") {
            script.push_str(&format!(
                "echo \"== $({} -o /dev/null -w '%{{http_code}}' 2>/dev/null; true)\"\n",
                t
            ));
            script.push_str(t);
            script.push_str("; echo\n");
        } else if [
            "TOKEN=",
            "OFFICER=",
            "SUBJECT=",
            "REGULATOR=",
            "ADMIN=",
            "AUDITOR=",
            "PERSON=",
            "CONSENT=",
        ]
        .iter()
        .any(|v| t.starts_with(v))
        {
            script.push_str(t);
            script.push('\n');
        }
    }
    // From another directory than the demo's, as a second terminal would be.
    let out = Command::new("bash")
        .current_dir(std::env::temp_dir())
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    let codes: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("== ")).collect();
    assert_eq!(
        codes,
        [
            "200", "200", "200", "403", "200", "200", "200", "401", "400", "400", "404", "403",
            "403", "200", "200", "201", "200", "200", "200", "200", "403", "200"
        ],
        "{out}"
    );
    let uscc = demo["samples"]["usccs"][0].as_str().unwrap();
    assert!(out.contains(&format!("\"uscc\":\"{uscc}\"")), "{out}");
    assert!(
        out.contains("consent-required") && out.contains("\"records\""),
        "{out}"
    );
    assert!(
        out.contains("\"annual_revenue\""),
        "the regulator sees revenue: {out}"
    );
    for c in demo["clients"].as_array().unwrap() {
        assert!(c["purposes"].is_array(), "each client lists its purposes");
    }
    assert_eq!(
        demo["public_purposes"],
        serde_json::json!(["public_disclosure"])
    );
    assert!(out.contains("\"subject_type\":\"legal\""), "{out}");
    assert!(
        out.contains("\"org\":\"demo-bank\""),
        "the company sees the bank in its access log: {out}"
    );
    assert!(
        out.contains("\"ok\":true"),
        "the audit chain verifies: {out}"
    );
    assert!(
        out.to_lowercase().contains("x-objection: pending") && out.contains("_objections"),
        "the mark: {out}"
    );
    assert!(
        out.contains("consent-required") && out.contains("\"records\""),
        "{out}"
    );
    assert!(
        out.contains("\"annual_revenue\""),
        "the regulator sees revenue: {out}"
    );
    for c in demo["clients"].as_array().unwrap() {
        assert!(c["purposes"].is_array(), "each client lists its purposes");
    }
    assert_eq!(
        demo["public_purposes"],
        serde_json::json!(["public_disclosure"])
    );
}
