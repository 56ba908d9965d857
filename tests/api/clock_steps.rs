//! Clock steps (issue 19): a replica whose clock jumps back does not break chains or deadlines.
//! The tests step the core's clock (`Clock::step_back`, `Clock::step_forward`; `Clock::advance` lets time pass), which every record,
//! checkpoint, token, deadline and session time reads; `credgate_core::clock` states the
//! rules held here. Under parallel clients the fault case's promises hold too: no data
//! released without an audit id, every audit id a client received is in the log, every chain
//! verifies (through `GET /admin/audit/verify`), and no 5xx.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use credgate::{audit::store, domain::SubjectType, sample_store};
use serde_json::{Value, json};

use crate::{
    faults_support::{Outcome, assert_nothing_unaudited, tally},
    helpers::{TestApp, wait_until},
    signin,
};

const HOUR: Duration = Duration::from_secs(3600);

fn usccs(n: usize) -> Vec<String> {
    sample_store::data::generate(42, n)
        .entities
        .iter()
        .map(|e| e["uscc"].as_str().unwrap().to_string())
        .collect()
}

/// A client as a real institution runs one: reads entities with its token, and asks for a new
/// token when the gateway answers 401 (a token that expired). Token-only clients just ask for
/// tokens.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    id: String,
    secret: String,
    reads: bool,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
}

impl Client {
    async fn run(self, seed: usize) {
        let usccs = usccs(60);
        let mut token: Option<String> = None;
        let mut i = seed * 7;
        while !self.stop.load(Ordering::SeqCst) {
            let Some(t) = token.clone().filter(|_| self.reads) else {
                let (o, body) = self.token().await;
                token = body.and_then(|b| b["access_token"].as_str().map(str::to_string));
                self.push(o).await;
                continue;
            };
            i += 1;
            let req = self
                .http
                .get(format!(
                    "{}/v1/stores/power/entities/{}",
                    self.url,
                    usccs[i % usccs.len()]
                ))
                .bearer_auth(&t)
                .header("X-Purpose", "supervision");
            let (o, _) = observe(req, "entity").await;
            if o.status == Some(401) {
                token = None;
            }
            self.push(o).await;
        }
    }

    async fn token(&self) -> (Outcome, Option<Value>) {
        let req = self.http.post(format!("{}/oauth/token", self.url)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", self.id.as_str()),
            ("client_secret", self.secret.as_str()),
        ]);
        observe(req, "token").await
    }

    async fn push(&self, o: Outcome) {
        let refused = o.status != Some(200);
        self.outcomes.lock().unwrap().push(o);
        if refused {
            // A refused client backs off a little, as a real one would.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One request's fate (the fault suite's `Outcome`), and the body of a 200.
async fn observe(req: reqwest::RequestBuilder, what: &'static str) -> (Outcome, Option<Value>) {
    let started = Instant::now();
    let mut o = Outcome {
        target: 0,
        what,
        started,
        ended: started,
        status: None,
        audit_id: None,
        problem_json: false,
        refusal: String::new(),
    };
    let mut body = None;
    if let Ok(res) = req.send().await {
        o.status = Some(res.status().as_u16());
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        o.audit_id = header("x-audit-id");
        o.problem_json = header("content-type").as_deref() == Some("application/problem+json");
        let bytes = res.bytes().await.unwrap_or_default();
        if o.status == Some(200) {
            body = serde_json::from_slice(&bytes).ok();
        } else {
            o.refusal = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
        }
    }
    o.ended = Instant::now();
    (o, body)
}

/// How many entity reads were released (200) among those started after `since`.
fn released_since(outcomes: &Mutex<Vec<Outcome>>, since: Instant) -> usize {
    outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.what == "entity" && o.status == Some(200) && o.started >= since)
        .count()
}

/// `GET /admin/audit/verify` with a fresh officer token: the report.
async fn verify_over_http(app: &TestApp) -> Value {
    let (_, officer) = app.token("security_officer").await;
    let res = app
        .http
        .get(format!("{}/admin/audit/verify", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-audit-id"));
    res.json().await.unwrap()
}

/// Waits until this gateway's own chain is wholly signed (its idle tick signs the tail).
async fn wait_until_signed(app: &TestApp, what: &str, bound: Duration) {
    let writer = app.state.audit.writer_id().to_string();
    wait_until(what, bound, || async {
        let head = store::chain_head(&app.state.db, &writer).await.unwrap();
        head.chain_seq > 0 && head.unsigned_since_us.is_none()
    })
    .await;
}

/// Eight clients (six readers, two token requesters) through a step back of an hour and a
/// step forward again, each step taken once 30 reads were released since the one before:
/// every outcome, and when each step was taken.
async fn load_through_steps(app: &TestApp) -> (Vec<Outcome>, Instant, Instant) {
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for n in 0..8 {
        let (id, secret) = app.add_client("regulator").await;
        let client = Client {
            http: app.http.clone(),
            url: app.url.clone(),
            id,
            secret,
            // Six readers, two token requesters.
            reads: n < 6,
            outcomes: outcomes.clone(),
            stop: stop.clone(),
        };
        workers.push(tokio::spawn(client.run(n)));
    }
    let bound = Duration::from_secs(60);
    let started = Instant::now();
    wait_until("reads released before the step", bound, || async {
        released_since(&outcomes, started) >= 30
    })
    .await;
    let stepped_back = Instant::now();
    app.state.clock.step_back(HOUR);
    wait_until("reads released after the step back", bound, || async {
        released_since(&outcomes, stepped_back) >= 30
    })
    .await;
    let stepped_forward = Instant::now();
    app.state.clock.step_forward(HOUR);
    wait_until("reads released after the step forward", bound, || async {
        released_since(&outcomes, stepped_forward) >= 30
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("a client panicked");
    }
    let outcomes = outcomes.lock().unwrap().clone();
    (outcomes, stepped_back, stepped_forward)
}

#[tokio::test]
async fn parallel_clients_run_through_a_step_back_and_forward_and_every_promise_holds() {
    let app = TestApp::spawn_with(|c| {
        c.audit.checkpoint_secs = 1;
        // At each step all six readers ask for a token at once, beside the two token clients:
        // on a loaded two-core machine the argon2 slots' default wait sheds some of them with
        // a (clean) 503. That shedding is `faults_db`'s subject; here every request is served.
        c.rate_limits.token_hash_wait_ms = 20_000;
    })
    .await;
    let (outcomes, _, _) = load_through_steps(&app).await;
    eprintln!("clock steps: {}", tally(&outcomes));

    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status.is_none_or(|s| s >= 500))
        .collect();
    assert!(failed.is_empty(), "5xx or no answer: {failed:?}");
    // The tokens held at each step went on working: they live on the clock that never goes
    // back (`Clock::steady`), and an hour back and forward again is no time in real time.
    let refused: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.what == "entity" && o.status == Some(401))
        .collect();
    assert!(
        refused.is_empty(),
        "a token refused across a step: {refused:?}"
    );
    let records =
        assert_nothing_unaudited(&app.state.db, &app.state.audit_public_key, &outcomes).await;
    assert!(records >= 90);

    // The log really holds the step: a record after another, an hour earlier by its time.
    let log = store::page_after(&app.state.db, 0, 1_000_000)
        .await
        .unwrap();
    let stepped = log
        .windows(2)
        .any(|w| w[1].time_us < w[0].time_us - 50 * 60 * 1_000_000);
    assert!(
        stepped,
        "no record in the log is stamped an hour before the one before it"
    );

    // Checkpoints kept being signed, and the chain verifies over HTTP, signed through its tail.
    wait_until_signed(
        &app,
        "the tail is signed after the load",
        Duration::from_secs(60),
    )
    .await;
    let writer = app.state.audit.writer_id().to_string();
    let head = store::chain_head(&app.state.db, &writer).await.unwrap();
    let report = verify_over_http(&app).await;
    assert_eq!(report["ok"], true, "{report}");
    let chain = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["writer_id"] == writer.as_str())
        .unwrap()
        .clone();
    assert!(
        chain["signed_through"].as_i64().unwrap() >= head.chain_seq,
        "{chain}"
    );
}

#[tokio::test]
async fn the_idle_tick_signs_a_tail_stamped_before_a_step_back_at_once() {
    // Checkpoints by time only (every 3 s), never by count here.
    let app = TestApp::spawn_with(|c| {
        c.audit.checkpoint_secs = 3;
        c.audit.checkpoint_every = 1_000_000;
    })
    .await;
    let (_, token) = app.token("regulator").await;
    let path = format!("/v1/stores/power/entities/{}", usccs(1)[0]);
    wait_until_signed(&app, "the first tail is signed", Duration::from_secs(30)).await;
    let first = store::checkpoints(&app.state.db).await.unwrap().len();

    // A tail stamped now, then the clock goes back an hour before it falls due.
    assert_eq!(app.data(&token, &path).await.status(), 200);
    let writer = app.state.audit.writer_id().to_string();
    let head = store::chain_head(&app.state.db, &writer).await.unwrap();
    assert!(
        head.unsigned_since_us.is_some(),
        "the tail is unsigned at the step"
    );
    app.state.clock.step_back(HOUR);
    // Within the checkpoint period and a margin, not an hour later.
    let took = wait_until(
        "the tail stamped before the step back is signed",
        Duration::from_secs(20),
        || async {
            store::chain_head(&app.state.db, &writer)
                .await
                .unwrap()
                .unsigned_since_us
                .is_none()
        },
    )
    .await;
    eprintln!("tail signed {took:?} after the step back");

    // Records stamped on the stepped-back clock are signed on the normal schedule after it.
    let (_, token) = app.token("regulator").await;
    for _ in 0..3 {
        assert_eq!(app.data(&token, &path).await.status(), 200);
    }
    wait_until_signed(
        &app,
        "the tail after the step is signed",
        Duration::from_secs(20),
    )
    .await;
    let cps = store::checkpoints(&app.state.db).await.unwrap();
    // One for the tail from before the step, one (two if the requests straddled a period) for
    // the records after it: not one per batch, as when the tail's age was taken from another
    // clock than the checkpoints' (every batch then looked an hour old).
    let signed = cps.len() - first;
    assert!(
        (2..=3).contains(&signed),
        "{signed} checkpoints since the step back"
    );
    let newest = cps.iter().max_by_key(|c| c.seq).unwrap();
    let older = cps
        .iter()
        .filter(|c| c.seq < newest.seq)
        .map(|c| c.time_us)
        .max()
        .unwrap();
    assert!(
        newest.time_us < older,
        "the newest checkpoint is stamped on the stepped-back clock"
    );

    // Verify passes, its witness is the newest checkpoint (stamped an hour before the one
    // before it), and that witness verifies against the log.
    let report = credgate::audit::verify::verify(&app.state.db, &app.state.audit_public_key)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    let witness = report.last_checkpoint.clone().unwrap();
    assert_eq!((witness.seq, witness.time_us), (newest.seq, newest.time_us));
    let again = credgate::audit::verify::verify_against(
        &app.state.db,
        &app.state.audit_public_key,
        &witness,
    )
    .await
    .unwrap();
    assert!(again.ok, "{again:?}");
    assert_eq!(verify_over_http(&app).await["ok"], true);
}

/// The gateway's tokens live on the clock that never goes back (`Clock::steady`): a step back
/// neither refuses a good token nor revives a spent one, and a token still ends a lifetime
/// after it was issued, in real time.
#[tokio::test]
async fn a_token_lives_its_lifetime_through_steps_back_and_a_spent_one_stays_spent() {
    let app = TestApp::spawn().await;
    let ttl = app.state.config.auth.token_ttl_secs;
    let leeway = app.state.config.auth.leeway_secs;
    let path = format!("/v1/stores/power/entities/{}", usccs(1)[0]);
    let (id, secret) = app.add_client("regulator").await;
    let fresh = || async {
        let body: Value = app.token_for(&id, &secret).await.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_string()
    };
    let before = fresh().await;

    // An hour back: the token issued before the step still works, and so does a new one.
    app.state.clock.step_back(HOUR);
    assert_eq!(app.data(&before, &path).await.status(), 200, "a step back");
    let during = fresh().await;
    assert_eq!(
        app.data(&during, &path).await.status(),
        200,
        "issued after it"
    );

    // The wall clock comes back and runs on past both tokens' lifetimes: both end.
    app.state.clock.step_forward(HOUR);
    app.state
        .clock
        .advance(Duration::from_secs(ttl + leeway + 1));
    let res = app.data(&before, &path).await;
    assert!(res.headers().contains_key("x-audit-id"));
    let problem = crate::helpers::assert_problem(res, 401).await;
    assert!(!problem.to_string().contains(&before), "{problem}");
    assert_problem_status(&app, &during, &path, 401).await;

    // A step back by more than their age does not bring them back (on the wall clock it did:
    // an expired token worked again after a step back of its lifetime).
    app.state
        .clock
        .step_back(Duration::from_secs(ttl + leeway + 60));
    assert_problem_status(&app, &before, &path, 401).await;
    assert_problem_status(&app, &during, &path, 401).await;
    let after = fresh().await;
    assert_eq!(
        app.data(&after, &path).await.status(),
        200,
        "a new one works"
    );
}

async fn assert_problem_status(app: &TestApp, token: &str, path: &str, status: u16) {
    let res = app.data(token, path).await;
    crate::helpers::assert_problem(res, status).await;
}

/// An objection's deadlines are absolute times: a step back neither makes it overdue nor
/// takes "overdue" from one an hour or more past its deadline; an alert raised stays raised,
/// once.
#[tokio::test]
async fn a_step_back_neither_makes_nor_unmakes_an_overdue_objection() {
    let app = TestApp::spawn_with(|c| c.workflows.poll_ms = 50).await;
    let filed = file_objection(&app).await;
    let id = filed["id"].as_str().unwrap().to_string();
    let get = || handler_get(&app, format!("/admin/objections/{id}"));
    let overdue_ids = || async {
        let v = handler_get(&app, "/admin/objections?overdue=true".into()).await;
        let items = v["items"].as_array().unwrap().iter();
        items.map(|o| o["id"].clone()).collect::<Vec<_>>()
    };
    let due = get().await["due_at"].clone();
    assert!(due.is_string());

    app.state.clock.step_back(HOUR);
    let o = get().await;
    assert_eq!((&o["due_at"], &o["overdue"]), (&due, &json!(false)), "{o}");
    assert!(overdue_ids().await.is_empty());

    // Six days on (from the hour stepped back): past the acceptance deadline; alerted once.
    app.state.clock.step_forward(HOUR);
    app.state.clock.advance_days(6);
    assert_eq!(get().await["overdue"], true);
    let (_, officer) = app.token("security_officer").await;
    wait_until(
        "the overdue objection is alerted",
        Duration::from_secs(30),
        || async { alerts_for(&app, &officer, &id).await == 1 },
    )
    .await;

    // An hour back: still overdue (days past its deadline), deadline unchanged, listed.
    app.state.clock.step_back(HOUR);
    let o = get().await;
    assert_eq!((&o["due_at"], &o["overdue"]), (&due, &json!(true)), "{o}");
    assert_eq!(overdue_ids().await, vec![json!(id)]);
    // Its alert stays, once (the officer's token is a fresh one: the old one is "not yet valid").
    let (_, officer) = app.token("security_officer").await;
    assert_eq!(alerts_for(&app, &officer, &id).await, 1);
    // Worked while the clock is back: accepted, its deadline is now the decision's, not overdue.
    let (_, handler) = app.token("objection_handler").await;
    let res = app
        .http
        .post(format!("{}/admin/objections/{id}/transitions", app.url))
        .bearer_auth(&handler)
        .json(&json!({"to": "accepted", "note": "accepted with the clock an hour back"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let o = get().await;
    assert_eq!(
        (&o["due_at"], &o["overdue"]),
        (&o["decide_due_at"], &json!(false)),
        "{o}"
    );
    assert_eq!(o["decide_due_at"], filed["decide_due_at"]);
}

/// A subject's objection to its first entity's registered capital, as filed (201).
async fn file_objection(app: &TestApp) -> Value {
    let uscc = app.sample().entities[0]["uscc"]
        .as_str()
        .unwrap()
        .to_string();
    let subject = app.subject_token(&uscc, SubjectType::Legal);
    let res = app
        .http
        .post(format!("{}/subject/objections", app.url))
        .bearer_auth(&subject)
        .json(
            &json!({"store": "power", "dataset": "entity", "record_ref": uscc,
                      "field": "registered_capital", "reason": "注册资本已于2025年变更",
                      "requested_correction": "50000000"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

/// A GET by an objection handler with a fresh token: tokens follow the clock, so each look
/// takes one on the clock as it reads then.
async fn handler_get(app: &TestApp, path: String) -> Value {
    let (_, handler) = app.token("objection_handler").await;
    let res = app
        .http
        .get(format!("{}{path}", app.url))
        .bearer_auth(&handler)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// How many `objection-overdue` alerts name objection `id`.
async fn alerts_for(app: &TestApp, officer: &str, id: &str) -> usize {
    let v: Value = app
        .http
        .get(format!("{}/admin/alerts", app.url))
        .bearer_auth(officer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "objection-overdue" && a["detail"].as_str().unwrap().contains(id))
        .count()
}

/// A page session on a step back: not dead at once (the person stays signed in), not immortal
/// (its idle timeout still ends it, counted from its last use as stored: at most the step
/// later), and one in use lives on.
#[tokio::test]
async fn a_page_session_survives_a_step_back_and_still_ends_when_idle() {
    let s = signin::site().await;
    let clock = &s.app.state.clock;
    let used = signin::sign_in(&s.app, &s.idp, "officer").await;
    let left = signin::sign_in(&s.app, &s.idp, "officer").await;
    assert_eq!(used.get("/console/").await.status(), 200);
    assert_eq!(left.get("/console/").await.status(), 200);

    clock.step_back(HOUR);
    assert_eq!(
        used.get("/console/").await.status(),
        200,
        "not dead at once"
    );
    // In use every 14 minutes (staff idle: 15) through the hour and past it.
    for _ in 0..6 {
        clock.advance(Duration::from_secs(14 * 60));
        assert_eq!(used.get("/console/").await.status(), 200, "in use, alive");
    }
    // `left` was last used an hour and 24 minutes ago (real time): dead, and for good.
    let r = left.get("/console/").await;
    assert_eq!(r.status(), 303, "an idle session ended");
    assert_eq!(left.get("/console/").await.status(), 303);
    // `used`, idle 16 minutes from its last use: dead.
    clock.advance(Duration::from_secs(16 * 60));
    assert_eq!(used.get("/console/").await.status(), 303, "not immortal");
}
