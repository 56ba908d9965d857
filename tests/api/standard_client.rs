//! Issue 16's "Done when": a standard OAuth client library (Python's Authlib) obtains a token
//! over HTTPS from `credgate demo --tls` with nothing but the metadata URL (and the CA and a
//! client's credentials), and a standard JWT library (PyJWT) verifies it from the JWKS. The
//! client is tests/oauth_client/standard_client.py: none of credgate's code.

use std::{path::Path, process::Stdio, time::Duration};

use serde_json::Value;

use crate::helpers::{serially, skip_unless_ci};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/oauth_client/standard_client.py"
);

/// Whether python3 with Authlib, PyJWT (with cryptography) and requests is here (.ci/run
/// installs them).
fn python_ready() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import authlib, jwt, requests, cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `demo.json` once the demo has written it and answers over HTTPS.
async fn demo_ready(dir: &Path) -> Value {
    let demo_json = dir.join("demo/demo.json");
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(&demo_json)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the demo wrote no demo.json");
}

#[tokio::test]
async fn a_standard_oauth_library_gets_a_token_from_the_metadata_and_pyjwt_verifies_it() {
    if !python_ready() {
        skip_unless_ci(
            "standard_client",
            "python3 with authlib, pyjwt[crypto] and requests is missing",
        );
        return;
    }
    serially().await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_credgate"))
        .current_dir(dir.path())
        .args(["demo", "--tls", "--dir", "demo", "--listen", "127.0.0.1:0"])
        .args([
            "--store-listen",
            "127.0.0.1:0",
            "--idp-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let demo = demo_ready(dir.path()).await;
    let url = demo["gateway_url"].as_str().unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let config =
        credgate::config::Config::load(Some(Path::new(demo["config"].as_str().unwrap()))).unwrap();
    let regulator = demo["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "regulator")
        .unwrap();
    let run = |secret: &str| {
        std::process::Command::new("python3")
            .arg(SCRIPT)
            .args([
                "--metadata",
                &format!("{url}/.well-known/oauth-authorization-server"),
            ])
            .args(["--ca", demo["ca_file"].as_str().unwrap()])
            .arg(format!(
                "--client-id={}",
                regulator["client_id"].as_str().unwrap()
            ))
            // `=`: a generated secret may start with `-`, which argparse takes for an option
            // when it stands as its own argument (CI failed once on that).
            .arg(format!("--client-secret={secret}"))
            .args(["--audience", &config.auth.audience])
            .output()
            .unwrap()
    };
    let out = run(regulator["client_secret"].as_str().unwrap());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["ok"], true);
    let methods: Vec<&str> = report["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["client_secret_basic", "client_secret_post"]);
    // The demo's issuer is its public URL: the metadata and every token say the same.
    assert_eq!(report["issuer"], url, "{report}");
    for t in report["tokens"].as_array().unwrap() {
        assert_eq!(t["iss"], url, "{report}");
    }
    // The same client with a wrong secret gets no token: the library reports the refusal.
    let out = run("not-the-secret");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_client"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    child.kill().await.unwrap();
}
