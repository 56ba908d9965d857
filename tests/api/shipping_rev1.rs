//! Hostile review (rev1) of audit shipping. Each test asserts the behaviour the feature should
//! have; those that FAIL on the merged code are the evidence of a finding (named in the doc
//! comment). No rsyslog needed: the sink is a TCP listener in the test that keeps every byte.

use std::time::{Duration, Instant};

use credgate::{audit::ship, audit::store, storage::shipping};
use serde_json::Value;

use crate::helpers::{self, TestApp, serially};
use crate::sink::{
    Captured, ShippingProcess, audit_public_key, capture, captured_text, capturing_sink, cut_tail,
    keep, sequential_requests, ship_to, shipping_app, unique_name, verify_with_sink_file,
};

/// A checkpoint line as a receiver writes it (`%rawmsg%`), from its JSON.
fn checkpoint_line(writer: &str, json: &Value) -> String {
    format!(
        "<133>1 2026-11-30T00:00:00Z gw credgate 1 checkpoint [credgate@32473 writer_id=\"{writer}\"] \u{feff}{json}\n"
    )
}

/// FINDING (forged sink lines): anyone who can send syslog to the collector can add a
/// "checkpoint" line. `witnesses_in` keeps each chain's highest `chain_seq` WITHOUT checking
/// its signature, so one forged line (a) displaces the genuine newest checkpoint (which is then
/// never checked) and (b) makes `audit verify --sink-file` fail a whole, untouched log.
/// Expected: forged (unsigned) lines are counted and ignored; the genuine witness is used.
#[tokio::test]
async fn rev1_a_forged_checkpoint_line_in_the_sink_file_is_ignored() {
    use crate::cli::{config_file, explain, text};
    serially().await;
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 3).await;
    let writer = app.state.audit.writer_id().to_string();
    let (_, token) = app.token("regulator").await;
    sequential_requests(&app, &token, 9).await;
    helpers::wait_until(
        "a checkpoint of this chain",
        Duration::from_secs(30),
        || async {
            store::checkpoints(&app.state.db)
                .await
                .unwrap()
                .iter()
                .any(|c| c.writer_id == writer)
        },
    )
    .await;
    let cps = store::checkpoints(&app.state.db).await.unwrap();
    let genuine = cps
        .iter()
        .filter(|c| c.writer_id == writer)
        .max_by_key(|c| c.chain_seq)
        .unwrap();
    let good = serde_json::json!({"writer_id": writer, "chain_seq": genuine.chain_seq,
        "seq": genuine.seq, "time_us": genuine.time_us, "hash": genuine.hash,
        "key_id": genuine.key_id, "signature": genuine.signature});
    let mut forged = good.clone();
    forged["chain_seq"] = Value::from(genuine.chain_seq + 1_000_000);
    forged["signature"] = Value::from("00".repeat(64));
    let file = format!(
        "{}{}",
        checkpoint_line(&writer, &good),
        checkpoint_line(&writer, &forged)
    );
    // Adjusted (shipfix): signatures can only be checked with the log's public key, so
    // `witnesses_in` takes it; the assertion is unchanged.
    let found = ship::witnesses_in(file.as_bytes(), &audit_public_key(&app).await);
    assert_eq!(found.unsigned, 1, "the forged line is counted as unsigned");
    let cfg = config_file(&app);
    let path = app.dir.path().join("sink.log");
    std::fs::write(&path, &file).unwrap();
    let out = verify_with_sink_file(&path, &cfg);
    let (stdout, stderr) = text(&out);
    eprintln!(
        "REV1 forged line: witness chosen chain_seq {:?} (genuine {}); verify exit {:?}: {stdout}{stderr}",
        found.witnesses[0].chain_seq,
        genuine.chain_seq,
        out.status.code()
    );
    assert_eq!(
        found.witnesses[0].chain_seq,
        Some(genuine.chain_seq),
        "the forged line displaced the genuine newest checkpoint"
    );
    assert!(
        out.status.success(),
        "an untouched log fails verification because of one forged sink line: {}",
        explain(&out)
    );
    assert!(
        stderr.contains("1 checkpoint lines NOT signed"),
        "the forged line is reported: {}",
        explain(&out)
    );
}

/// FINDING (progress row is trusted): the audit_shipping row lives in the very database the
/// sink is meant to check. One UPDATE by someone who can write the database (the adversary of
/// the tail-cut check) before a restart sets the place past the head: the shipper then ships
/// nothing of this chain ever again, and `/readyz` and the lag gauge say "up, lag 0"
/// (`refresh_lag` clamps head - place at 0). Expected: a place past the head is refused
/// (alarm, ship from the head or 0), never reported as caught up.
#[tokio::test]
async fn rev1_a_shipping_place_past_the_head_does_not_silence_the_sink() {
    serially().await;
    let (port, got) = capturing_sink(false).await;
    let mut process = ShippingProcess::prepare(20).await;
    let sink = unique_name("r1");
    let writer = format!("rev1-{sink}");
    process.ship(
        &format!("writer_id = \"{writer}\"\ncheckpoint_every = 4"),
        port,
        &sink,
    );
    let db = process.db.clone();
    // The tamper: done while the gateway is stopped (a deploy, a crash, a maintenance window).
    let far = shipping::Progress {
        records_through: 1_000_000_000,
        checkpoints_through: 1_000_000_000,
    };
    shipping::save(&db, &writer, &sink, far, 0).await.unwrap();
    let client = process.regulator().await;
    process.gateway.start("error", None).await;
    let token = process.token(&client).await;
    process.requests(&token, 8).await;
    let head = shipping::head(&db, &writer).await.unwrap();
    assert!(head >= 8, "records committed: {head}");
    // Give the shipper ample time (its idle poll is 500 ms, the sink is up throughout): wait
    // for the whole chain and the report, not for the first line of it (a first session may
    // carry only part of the chain, and stopping there failed under load).
    let started = Instant::now();
    let mut ready = Value::Null;
    let mut shipped = 0;
    while started.elapsed() < Duration::from_secs(20) {
        ready = process.readyz().await;
        shipped = captured_text(&got).matches(" audit [").count();
        if shipped >= head as usize && ready["audit_shipping"]["place_corrupt"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "REV1 tampered place: head {head}, sink received {shipped} records of the chain; \
         /readyz audit_shipping = {}",
        ready["audit_shipping"]
    );
    process.gateway.kill();
    // Adjusted (shipfix): /readyz now says a coarse `lag` (L4), so "caught up" is read from
    // it; the test now also demands both halves: the chain is shipped again AND the
    // corruption is reported (not merely one of them).
    assert!(
        shipped >= head as usize,
        "the sink got {shipped} of {head} records after the place was set past the head: {ready}"
    );
    assert_eq!(
        ready["audit_shipping"]["place_corrupt"], true,
        "/readyz must say the saved place was corrupt: {ready}"
    );
}

/// MEASURE (chatty sink): a receiver that sends bytes makes `idle` return at once on every
/// read, so every few bytes cost a round (3 queries). Prints the gateway's CPU seconds over
/// 5 s idle with a silent sink, a chatty sink, and a sink that is down.
#[tokio::test]
async fn rev1_measure_idle_cpu_with_silent_chatty_and_down_sinks() {
    serially().await;
    let mut rows = Vec::new();
    for kind in ["silent", "chatty", "down"] {
        let port = match kind {
            "silent" => capturing_sink(false).await.0,
            "chatty" => capturing_sink(true).await.0,
            _ => helpers::dead_addr().port(),
        };
        let mut process = ShippingProcess::prepare(5).await;
        process.ship(
            &format!("writer_id = \"rev1-cpu-{kind}\""),
            port,
            &format!("cpu-{kind}"),
        );
        let pg = process.gateway.config.storage_url.starts_with("postgres");
        let db = process.db.clone();
        process.gateway.start("error", None).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let xacts = || async {
            if !pg {
                return 0;
            }
            sqlx::query_scalar::<_, i64>(
                "SELECT xact_commit::bigint FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(db.pool())
            .await
            .unwrap()
        };
        let cpu = |pid: u32| -> f64 {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            let f: Vec<&str> = s.rsplit_once(')').unwrap().1.split_whitespace().collect();
            (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
        };
        let pid = process.gateway.pid();
        let (before, x0) = (cpu(pid), xacts().await);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let used = cpu(pid) - before;
        let tx = xacts().await - x0;
        process.gateway.kill();
        rows.push((kind, used, tx));
    }
    for (kind, used, tx) in &rows {
        eprintln!(
            "MEASURE rev1 idle 5 s, sink {kind}: gateway CPU {used:.2} s, PostgreSQL commits {tx} (0: SQLite)"
        );
    }
    // Made an assertion (shipfix, M4): generous bounds, an order of magnitude under the
    // busy loop's 3.4 s and thousands of commits.
    // PostgreSQL counts every statement of the idle gateway (storage probe, pollers) as a
    // commit, so the chatty sink is compared with the silent one.
    let silent_tx = rows[0].2;
    for (kind, used, tx) in &rows {
        // 0.7 s, five times under the busy loop. Measured alone: the chatty sink 0.37 s at
        // f15f4a3 and 0.46-0.48 s with the serving threads (b80018f on; the extra 0.1 s is not
        // explained yet, issue 18's note), and one run over 0.5 s in a suite at 4 test threads.
        assert!(*used < 0.7, "sink {kind}: {used:.2} s of CPU in 5 s idle");
        assert!(
            *tx <= 2 * silent_tx + 50,
            "sink {kind}: {tx} PostgreSQL commits in 5 s idle (silent sink: {silent_tx})"
        );
    }
}

/// FINDING (a receiver that stops reading): "shipped" means "accepted by the local kernel".
/// A receiver that accepts and never reads (rsyslog with a full queue or a stuck disk) gets
/// records into socket buffers (megabytes on loopback) while `/readyz` says up, lag 0, and the
/// place is saved past them; when that receiver's connection resets, they are gone: the
/// replacement receiver never gets them (a gap, not a duplicate). Expected: the gap is closed
/// (e.g. resend from the last place the receiver is known to hold, a bounded SO_SNDBUF, or
/// RELP acknowledgements) and the lag does not read 0 while nothing was read.
#[tokio::test]
async fn rev1_a_receiver_that_never_reads_loses_nothing_when_it_is_replaced() {
    serially().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mute = tokio::spawn(async move {
        let (conn, _) = listener.accept().await.unwrap();
        let _ = stop_rx.await;
        // Unread data in the receive buffer: the close is a reset.
        drop(conn);
        drop(listener);
    });
    let app = shipping_app(ship_to(port, &unique_name("r1m")), None).await;
    let writer = app.state.audit.writer_id().to_string();
    let (_, token) = app.token("regulator").await;
    sequential_requests(&app, &token, 40).await;
    helpers::wait_until(
        "the shipper says caught up",
        Duration::from_secs(30),
        || async {
            let s = app.state.shipping.report().unwrap();
            s.up && s.lag_records == 0
        },
    )
    .await;
    let claimed = app.state.shipping.report().unwrap();
    // The receiver read nothing; it is replaced by one that reads, on the same port.
    stop_tx.send(()).unwrap();
    mute.await.unwrap();
    let l2 = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let got = capture(l2, false);
    sequential_requests(&app, &token, 3).await;
    let head = shipping::head(&app.state.db, &writer).await.unwrap();
    let last = format!("chain_seq=\"{head}\"");
    helpers::wait_until(
        "the newest record reaches the new receiver",
        Duration::from_secs(60),
        || {
            let has = captured_text(&got).contains(&last);
            async move { has }
        },
    )
    .await;
    let text = captured_text(&got);
    let first =
        text.contains("audit [credgate@32473 writer_id=\"") && text.contains("chain_seq=\"1\"");
    let received = text.matches(" audit [").count();
    eprintln!(
        "REV1 mute receiver: before the swap the shipper claimed up={} lag={} records_through={} \
         with 0 bytes read; after the swap the new receiver got {received} records of {head}, \
         chain_seq 1 among them: {first}",
        claimed.up, claimed.lag_records, claimed.records_through
    );
    assert!(
        first,
        "records 1..{} were lost in a dead socket buffer: a gap",
        claimed.records_through
    );
}

/// TLS: a certificate the configured CA signed, but for another name, gets nothing (and a
/// certificate for 127.0.0.1 from the same CA does, so the harness itself works).
#[tokio::test]
async fn rev1_tls_refuses_a_same_ca_certificate_for_another_name() {
    serially().await;
    let pki = crate::edge_tls::Pki::new();
    let ca = pki.ca_file();
    let mut rows = Vec::new();
    for names in [&["evil.example"][..], &["127.0.0.1"][..]] {
        let issued = pki.ca.server(names, 30).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_file, key_file) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        std::fs::write(&cert_file, &issued.cert_pem).unwrap();
        std::fs::write(&key_file, &issued.key_pem).unwrap();
        let config = credgate::web::edge::TlsHolder::load(credgate::config::TlsConfig {
            cert_file,
            key_file,
            client_ca_file: None,
        })
        .unwrap()
        .current();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Captured::default();
        let g = got.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let (acceptor, g) = (acceptor.clone(), g.clone());
                tokio::spawn(async move {
                    if let Ok(s) = acceptor.accept(tcp).await {
                        keep(s, g).await;
                    }
                });
            }
        });
        let mut cfg = ship_to(port, &unique_name("r1t"));
        cfg.tls = true;
        cfg.ca_file = Some(ca.clone());
        let app = shipping_app(cfg, None).await;
        let (_, token) = app.token("regulator").await;
        sequential_requests(&app, &token, 1).await;
        let good = names[0] == "127.0.0.1";
        helpers::wait_until("the shipper decided", Duration::from_secs(30), || async {
            let s = app.state.shipping.report().unwrap();
            if good {
                s.up && s.lag_records == 0
            } else {
                s.last_error.is_some()
            }
        })
        .await;
        let s = app.state.shipping.report().unwrap();
        let n = got.lock().unwrap().len();
        eprintln!(
            "REV1 tls cert for {names:?}: up={} bytes received {n} error {:?}",
            s.up, s.last_error
        );
        rows.push((good, n, s.up));
    }
    assert!(
        rows[0].1 == 0 && !rows[0].2,
        "wrong-name certificate accepted: {rows:?}"
    );
    assert!(
        rows[1].1 > 0 && rows[1].2,
        "right-name certificate refused: {rows:?}"
    );
}

/// FINDING (a chain left behind): each process ships only its own `writer_id`'s chain. A
/// process stopped while its sink was down (or behind) and started again under another
/// writer id (the default id is the host name and listen address: a new pod name, a new
/// port) leaves its unshipped records and checkpoints in the database for ever: nobody ships
/// them, no lag counts them, no `/readyz` names them. Expected: every chain with records past
/// its saved place is shipped (or at least reported as lag).
#[tokio::test]
async fn rev1_a_chain_left_by_a_changed_writer_id_is_still_shipped() {
    serially().await;
    let (port, got) = capturing_sink(false).await;
    let mut process = ShippingProcess::prepare(20).await;
    let sink = unique_name("r1w");
    let tag = &sink[4..];
    let down = helpers::dead_addr().port();
    let db = process.db.clone();
    let client = process.regulator().await;
    let mut writers: Vec<String> = Vec::new();
    for (round, sink_port) in [(0, down), (1, port)] {
        let writer = format!("rev1-w{round}-{tag}");
        // The storage is the `--storage` flag (`on_storage`): the file keeps its own line.
        process.ship(&format!("writer_id = \"{writer}\""), sink_port, &sink);
        process.gateway.start("error", None).await;
        let token = process.token(&client).await;
        process.requests(&token, 5).await;
        if round == 1 {
            let head = shipping::head(&db, &writer).await.unwrap();
            let want = format!("writer_id=\"{writer}\" chain_seq=\"{head}\"");
            helpers::wait_until("the new chain arrives", Duration::from_secs(30), || {
                let has = captured_text(&got).contains(&want);
                async move { has }
            })
            .await;
            // Adjusted (shipfix): the behaviour chosen is adoption by lease: the old chain's
            // lease (10 s, renewed every 3 s by its shipper) must run out before another
            // process ships it, so the old chain is awaited (30 s bound) instead of a 3 s
            // sleep. Meanwhile /readyz must name it as a chain behind.
            let behind = process.readyz().await;
            let old_writer: String = writers[0].clone();
            let old_head = shipping::head(&db, &old_writer).await.unwrap();
            let old_last = format!("writer_id=\"{old_writer}\" chain_seq=\"{old_head}\"");
            helpers::wait_until("the old chain arrives", Duration::from_secs(30), || {
                let has = captured_text(&got).contains(&old_last);
                async move { has }
            })
            .await;
            eprintln!(
                "REV1 changed writer id: /readyz before adoption: {}",
                behind["audit_shipping"]
            );
            assert!(
                behind["audit_shipping"]["chains_behind"].as_u64() >= Some(1),
                "the old chain is reported behind: {behind}"
            );
            // And the count is truthful the other way: once both chains are shipped and the
            // receiver confirmed them (an orderly close), nothing is behind.
            helpers::wait_until("no chain behind", Duration::from_secs(30), || async {
                process.readyz().await["audit_shipping"]["chains_behind"] == 0
            })
            .await;
        }
        process.gateway.kill();
        writers.push(writer);
    }
    let text = captured_text(&got);
    let old = shipping::head(&db, &writers[0]).await.unwrap();
    let old_shipped = text
        .matches(&format!("writer_id=\"{}\"", writers[0]))
        .count();
    eprintln!(
        "REV1 changed writer id: old chain has {old} records in the database, the sink got \
         {old_shipped} messages of it; new chain's messages: {}",
        text.matches(&format!("writer_id=\"{}\"", writers[1]))
            .count()
    );
    assert!(
        old_shipped >= old as usize,
        "the old chain's {old} records never leave"
    );
}

/// FINDING (fail open): `--sink-file` naming a file with no credgate checkpoint (the wrong
/// file, a rotated-away file, a receiver that wrote nothing, a path typo to an empty file)
/// verifies like `audit verify` alone: exit 0, the tail-cut check silently not done.
/// Expected: a sink file that witnesses no chain of this log fails (or at least exits non-zero).
#[tokio::test]
async fn rev1_a_sink_file_witnessing_nothing_does_not_pass() {
    use crate::cli::{config_file, explain, text};
    serially().await;
    let app = TestApp::spawn_with(|c| c.audit.checkpoint_every = 3).await;
    let (_, token) = app.token("regulator").await;
    sequential_requests(&app, &token, 6).await;
    let cfg = config_file(&app);
    let path = app.dir.path().join("empty-sink.log");
    std::fs::write(&path, "some other program's line\n").unwrap();
    let out = verify_with_sink_file(&path, &cfg);
    let (stdout, stderr) = text(&out);
    eprintln!(
        "REV1 empty sink file: exit {:?}; stderr: {stderr}",
        out.status.code()
    );
    assert!(
        !out.status.success(),
        "a sink file with no checkpoint verified: {}",
        explain(&out)
    );
    let writer = app.state.audit.writer_id().to_string();
    assert!(
        stdout.contains("no_witness") && stderr.contains(&format!("chain `{writer}`")),
        "the verdict says the file witnesses nothing and names the unwitnessed chain: {}",
        explain(&out)
    );
}

/// RFC 6587 octet-counted stream to one message a line (what rsyslog's `%rawmsg%\n` writes).
fn unframe(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(sp) = rest.iter().position(|&b| b == b' ') {
        let Some(len) = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if rest.len() < sp + 1 + len {
            break;
        }
        out.extend_from_slice(&rest[sp + 1..sp + 1 + len]);
        out.push(b'\n');
        rest = &rest[sp + 1 + len..];
    }
    out
}

/// FINDING (the shipped records are not used): the sink holds every record with its hash and
/// place, but `--sink-file` only uses checkpoints. The records after the newest checkpoint
/// (up to `checkpoint_every` = 1000 records or `checkpoint_secs` = 60 s of them by default)
/// can be cut from the database and `verify --sink-file` passes, though the sink's file holds
/// them. Expected: the newest shipped record of each chain is a witness too (the log must
/// still hold that place with that hash, or an archive must cover it).
#[tokio::test]
async fn rev1_records_shipped_after_the_last_checkpoint_are_not_cut_silently() {
    use crate::cli::{config_file, explain, text};
    serially().await;
    let (port, got) = capturing_sink(false).await;
    let app = shipping_app(ship_to(port, &unique_name("r1c")), Some(5)).await;
    let writer = app.state.audit.writer_id().to_string();
    let (_, token) = app.token("regulator").await;
    sequential_requests(&app, &token, 12).await;
    let head = shipping::head(&app.state.db, &writer).await.unwrap();
    let want = format!("chain_seq=\"{head}\"");
    helpers::wait_until("the head is shipped", Duration::from_secs(30), || {
        let has = captured_text(&got).contains(&want);
        async move { has }
    })
    .await;
    let file = unframe(&got.lock().unwrap());
    let found = ship::witnesses_in(&file, &audit_public_key(&app).await);
    let newest_cp = found.witnesses[0].chain_seq.unwrap();
    assert!(
        newest_cp < head,
        "records after the newest checkpoint: {newest_cp} < {head}"
    );
    let path = app.dir.path().join("sink.log");
    std::fs::write(&path, &file).unwrap();
    cut_tail(&app.state.db, &writer, newest_cp).await;
    let cfg = config_file(&app);
    let out = verify_with_sink_file(&path, &cfg);
    let (stdout, _) = text(&out);
    eprintln!(
        "REV1 cut after the last checkpoint: sink holds {} records (head {head}), newest \
         checkpoint {newest_cp}; cut {}..={head}; verify --sink-file exit {:?}",
        found.records,
        newest_cp + 1,
        out.status.code()
    );
    assert!(
        !out.status.success(),
        "records the sink holds were cut and verify passed: {}",
        explain(&out)
    );
    assert!(
        stdout.contains("unsigned_witness_not_held"),
        "the failure from an unsigned witness is its own verdict: {}",
        explain(&out)
    );
}
