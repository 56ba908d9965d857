//! SQLite's WAL is checkpointed beside the writers, never inside a commit (issue 18: a
//! checkpoint inside the audit writer's commit held that batch's requests): no connection
//! checkpoints on its own, and the gateway's task copies the WAL into the database.

use std::{path::Path, time::Duration};

use credgate::storage::Backend;

use crate::helpers::{TestApp, wait_until};
use crate::indexer::{append_records, data_record};

/// (frames in the WAL, frames copied into the database), read from the WAL index in `-shm`
/// (SQLite's `WalIndexHdr.mxFrame` at byte 16, `WalCkptInfo.nBackfill` at byte 96) without a
/// connection, so that reading it checkpoints nothing.
fn wal_state(dir: &Path) -> (u32, u32) {
    let shm = std::fs::read(dir.join("credgate.db-shm")).unwrap();
    let at = |i: usize| u32::from_ne_bytes(shm[i..i + 4].try_into().unwrap());
    (at(16), at(96))
}

#[tokio::test]
async fn no_commit_checkpoints_and_the_gateway_copies_the_wal_into_the_database() {
    let app = TestApp::spawn().await;
    if app.state.db.backend() != Backend::Sqlite {
        return;
    }
    let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap();
    assert_eq!(
        auto, 0,
        "a pooled connection would checkpoint inside its commits"
    );
    let writer = app.state.db.own_connection().await.unwrap();
    let mut writer = writer;
    let auto: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(&mut writer)
        .await
        .unwrap();
    assert_eq!(
        auto, 0,
        "the audit writer's connection would checkpoint inside a batch"
    );
    drop(writer);

    let now = credgate::storage::now_micros();
    let records = (0..1500)
        .map(|i| data_record("wal-writer", now, i, vec![format!("s-{}", i % 7)]))
        .collect();
    append_records(&app, "wal-writer", records).await;
    let (frames, _) = wal_state(app.dir.path());
    assert!(frames > 0, "the appends went into the WAL");
    wait_until(
        "the checkpoint task copied every frame",
        Duration::from_secs(5),
        || async {
            let (frames, copied) = wal_state(app.dir.path());
            frames > 0 && copied == frames
        },
    )
    .await;
}
