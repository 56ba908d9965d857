//! The serving threads (`io_threads`, issue 18 decision 4): every connection is served on one
//! of several single-threaded event loops. What must hold whatever thread a request lands on:
//! the gateway's connection caps are global (`hostile::edge`'s cap test runs on 4 threads), a
//! graceful shutdown answers and records every request in flight on every thread, and a
//! gateway whose future is dropped leaves no thread serving its port.

use std::{collections::HashSet, time::Duration};

use credgate::{audit::store, config::Config, web::App};
use tokio::sync::oneshot;

use crate::helpers::{TestApp, serially, wait_until};

/// CPU time (ns) of each serving thread of the gateway on `port`, by thread name.
fn serving_threads(port: u16) -> Vec<(String, u64)> {
    assert!(
        std::path::Path::new("/proc/self/schedstat").exists(),
        "the kernel reports no thread CPU time (schedstat): these tests cannot run here"
    );
    let prefix = format!("cg-io-{port}-");
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let name = name.trim().to_string();
        if name.starts_with(&prefix) {
            // A thread ending meanwhile has no schedstat any more: not counted.
            let Ok(sched) = std::fs::read_to_string(path.join("schedstat")) else {
                continue;
            };
            let ns = sched
                .split_whitespace()
                .next()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0);
            found.push((name, ns));
        }
    }
    found.sort();
    found
}

/// A second gateway on `app`'s storage with `threads` serving threads, not yet running.
async fn gateway_with_threads(app: &TestApp, threads: usize) -> App {
    serially().await;
    let mut config = (*app.state.config).clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.io_threads = threads;
    App::build(config).await.unwrap()
}

#[test]
fn io_threads_is_bounded_and_zero_means_a_thread_a_core() {
    let parse = |text: &str| Config::parse(text, "t").unwrap();
    let e = parse("io_threads = 257\n")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("io_threads") && e.contains("256"), "{e}");
    let c = parse("io_threads = 3\n");
    c.validate().unwrap();
    assert_eq!(c.io_threads(), 3);
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(parse("").io_threads(), cores);
    assert!(Config::parse("io_threads = -1\n", "t").is_err());
}

/// Requests in flight on every thread when the shutdown comes are answered, and each answered
/// one's record is in the log once `run_until` returns; after it, the port is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_answers_and_records_what_every_thread_has_in_flight() {
    let app = TestApp::spawn().await;
    let gateway = gateway_with_threads(&app, 3).await;
    let addr = gateway.local_addr();
    let url = format!("http://{addr}");
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(gateway.run_until(async move {
        let _ = stopped.await;
    }));
    let (_, token) = app.token("regulator").await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        // A client of its own each: its own connections, spread over the threads.
        let (url, token) = (url.clone(), token.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut ids = Vec::new();
            loop {
                let sent = http
                    .get(format!("{url}/v1/stores/power/entities?page_size=2"))
                    .bearer_auth(&token)
                    .header("X-Purpose", "supervision")
                    .send()
                    .await;
                let Ok(res) = sent else { return ids };
                if res.status() != 200 {
                    return ids;
                }
                let id = res.headers().get("x-audit-id").cloned();
                // A response is received when its body is: only then does the client hold it.
                if res.bytes().await.is_err() {
                    return ids;
                }
                ids.push(id.expect("a released answer names its record"));
            }
        }));
    }
    // Each thread serves: a thread given no connection spends well under a millisecond. Waited
    // for, not sampled once: a loaded machine may give the threads their time late.
    let port = addr.port();
    wait_until(
        "every serving thread has served",
        Duration::from_secs(30),
        || async move {
            let threads = serving_threads(port);
            threads.len() == 3 && threads.iter().all(|(_, ns)| *ns > 20_000_000)
        },
    )
    .await;
    // Requests the store takes 400 ms to time out: in flight when the shutdown comes, each
    // is answered (504) rather than cut off.
    let before = app.fake.hits();
    let mut slow = Vec::new();
    for _ in 0..6 {
        let (url, token) = (url.clone(), token.clone());
        slow.push(tokio::spawn(async move {
            let http = reqwest::Client::builder().no_proxy().build().unwrap();
            http.get(format!("{url}/v1/stores/fake/slow"))
                .bearer_auth(&token)
                .header("X-Purpose", "supervision")
                .send()
                .await
                .map(|r| (r.status().as_u16(), r.headers().get("x-audit-id").cloned()))
        }));
    }
    // In flight: the store has been asked six times (the other clients read the sample store).
    let fake = app.fake.clone();
    wait_until(
        "six slow requests at the store",
        Duration::from_secs(30),
        || {
            let fake = fake.clone();
            async move { fake.hits() >= before + 6 }
        },
    )
    .await;
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    // A joined thread may linger in /proc/self/task for a moment.
    wait_until(
        "no thread left after the shutdown",
        Duration::from_secs(10),
        || async move { serving_threads(port).is_empty() },
    )
    .await;
    let mut released = Vec::new();
    for s in slow {
        let (status, id) = s.await.unwrap().expect("answered, not cut off");
        assert_eq!(status, 504);
        // Answered after the shutdown began: its record is kept all the same.
        released.push(id.expect("a timed-out answer names its record"));
    }
    for c in clients {
        released.extend(c.await.unwrap());
    }
    assert!(released.len() >= 18, "{} answered", released.len());
    let stored: HashSet<String> = store::page_after(&app.state.db, 0, 10_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    for id in &released {
        assert!(stored.contains(id.to_str().unwrap()), "{id:?} not recorded");
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting after the shutdown"
    );
}

/// A gateway whose future is dropped (a test's end, a caller giving up) ends its threads and
/// closes its port. Threads left running would hold the router, the store pools and the
/// database connections of every gateway a process ever started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_gateway_ends_its_threads_and_closes_its_port() {
    let app = TestApp::spawn().await;
    let gateway = gateway_with_threads(&app, 4).await;
    let addr = gateway.local_addr();
    let running = tokio::spawn(gateway.run_until(std::future::pending()));
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..8 {
        let res = http
            .get(format!("http://{addr}/healthz"))
            .header("Connection", "close")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    assert_eq!(serving_threads(addr.port()).len(), 4);
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    wait_until("the threads end", Duration::from_secs(10), || async move {
        serving_threads(addr.port()).is_empty()
    })
    .await;
    wait_until(
        "the port is closed",
        Duration::from_secs(10),
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
}
