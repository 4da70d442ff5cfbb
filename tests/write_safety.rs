//! Optimistic concurrency, idempotent retries, atomic batches, group commit and
//! crash safety, against real servers.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::process;
use common::{bad_request_field, stance, ReadExt, TestServer, PLAN};
use peace_tracker::pb;
use peace_tracker::pb::clause_tracker_client::ClauseTrackerClient;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tonic::Code;

fn change(c: pb::change::Change) -> pb::Change {
    pb::Change { change: Some(c) }
}

#[tokio::test]
async fn racing_writers_with_expected_version_lose_no_update() {
    let server = TestServer::start().await;
    const WRITERS: usize = 8;
    const EACH: usize = 5;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut aborted = 0;
            while won.len() < EACH {
                let current = c.latest_clause(PLAN, "p12").await;
                let attempt = pb::SetStanceRequest {
                    note: format!("writer {w} update {}", won.len()),
                    expected_version: current.version,
                    ..stance("p12", "russia", pb::Position::Amend)
                };
                match c.set_stance(attempt).await {
                    Ok(rev) => {
                        let rev = rev.into_inner();
                        assert_eq!(rev.clause_version, current.version + 1);
                        won.push(rev.clause_version);
                    }
                    Err(status) => {
                        assert_eq!(status.code(), Code::Aborted, "{status:?}");
                        assert!(status.message().contains("current version is"));
                        aborted += 1;
                    }
                }
            }
            (won, aborted)
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let (won, _) = t.await.unwrap();
        versions.extend(won);
    }
    // Exactly one winner per version: all distinct and contiguous.
    versions.sort();
    let first = versions[0];
    assert_eq!(
        versions,
        (first..first + (WRITERS * EACH) as u64).collect::<Vec<_>>()
    );
    // Every update is in the history: none was lost.
    let mut c = server.client().await;
    let history = c
        .list_revisions(pb::ListRevisionsRequest {
            plan_id: PLAN.into(),
            clause_id: "p12".into(),
            party_id: "russia".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    let notes: std::collections::HashSet<String> = history
        .iter()
        .filter_map(|r| r.clause.as_ref())
        .map(|c| c.stances[1].note.clone())
        .collect();
    for w in 0..WRITERS {
        for i in 0..EACH {
            assert!(
                notes.contains(&format!("writer {w} update {i}")),
                "lost writer {w} update {i}"
            );
        }
    }
}

#[tokio::test]
async fn a_retried_request_id_returns_the_first_result_and_commits_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let req = pb::SetStanceRequest {
        request_id: "desk-7-0001".into(),
        ..stance("p19", "russia", pb::Position::Support)
    };
    let first = c.set_stance(req.clone()).await.unwrap().into_inner();
    let head = server.store.head().unwrap();
    let again = c.set_stance(req.clone()).await.unwrap().into_inner();
    assert_eq!(again, first);
    assert_eq!(server.store.head().unwrap(), head);
    // Same id, different request: refused, nothing committed.
    let err = c
        .set_stance(pb::SetStanceRequest {
            position: pb::Position::Oppose as i32,
            ..req.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&err), "request_id");
    assert!(err.message().contains("different request"));
    assert_eq!(server.store.head().unwrap(), head);
    // Concurrent retries of a new id commit once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut c = server.client().await;
        let req = pb::SetStanceRequest {
            request_id: "burst-1".into(),
            ..stance("p20", "russia", pb::Position::Amend)
        };
        tasks.push(tokio::spawn(async move {
            c.set_stance(req).await.unwrap().into_inner().revision
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap());
    }
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
    assert_eq!(server.store.head().unwrap(), head + 1);
    // The record is durable: a restart still recognises the retry.
    drop(c);
    let (dir, keep) = server.stop().await;
    let server = TestServer::start_with(common::reopen_config(&dir)).await;
    let mut c = server.client().await;
    assert_eq!(c.set_stance(req).await.unwrap().into_inner(), first);
    drop(keep);
}

#[tokio::test]
async fn apply_is_all_or_nothing_with_consecutive_revisions() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();
    let create = pb::CreateClauseRequest {
        clause_id: "p29".into(),
        number: 29,
        title: "Monitoring mission".into(),
        text: "An international mission monitors the ceasefire.".into(),
        ..Default::default()
    };
    let on_new = pb::SetStanceRequest {
        plan_id: String::new(),
        ..stance("p29", "ukraine", pb::Position::Support)
    };
    // Third change names an unknown clause: the whole batch is refused.
    let bad = pb::ApplyRequest {
        plan_id: PLAN.into(),
        reason: "desk batch".into(),
        changes: vec![
            change(pb::change::Change::CreateClause(create.clone())),
            change(pb::change::Change::SetStance(on_new.clone())),
            change(pb::change::Change::SetStance(stance(
                "p404",
                "ukraine",
                pb::Position::Support,
            ))),
        ],
        ..Default::default()
    };
    let err = c.apply(bad).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("changes[2]"), "{}", err.message());
    assert_eq!(server.store.head().unwrap(), head);
    let missing = c
        .get_clause(pb::GetClauseRequest {
            plan_id: PLAN.into(),
            clause_id: "p29".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // A stale expected_version inside the batch also rejects all of it.
    let stale = pb::ApplyRequest {
        plan_id: PLAN.into(),
        changes: vec![
            change(pb::change::Change::SetStance(stance(
                "p1",
                "russia",
                pb::Position::Support,
            ))),
            change(pb::change::Change::SetStance(pb::SetStanceRequest {
                expected_version: 1,
                ..stance("p2", "russia", pb::Position::Support)
            })),
        ],
        ..Default::default()
    };
    assert_eq!(c.apply(stale).await.unwrap_err().code(), Code::Aborted);
    assert_eq!(server.store.head().unwrap(), head);
    // A good batch: later changes see earlier ones; revisions are consecutive.
    let good = pb::ApplyRequest {
        plan_id: PLAN.into(),
        reason: "desk batch".into(),
        request_id: "batch-1".into(),
        changes: vec![
            change(pb::change::Change::CreateClause(create)),
            change(pb::change::Change::SetStance(on_new)),
            change(pb::change::Change::SetClauseStatus(
                pb::SetClauseStatusRequest {
                    clause_id: "p29".into(),
                    status: pb::ClauseStatus::Negotiating as i32,
                    expected_version: 2,
                    ..Default::default()
                },
            )),
        ],
        read_mask: None,
    };
    let revs = c.apply(good.clone()).await.unwrap().into_inner().revisions;
    let numbers: Vec<u64> = revs.iter().map(|r| r.revision).collect();
    assert_eq!(numbers, vec![head + 1, head + 2, head + 3]);
    assert!(revs
        .iter()
        .all(|r| r.reason == "desk batch" && r.request_id == "batch-1"));
    assert_eq!(revs[2].clause_version, 3);
    // Retrying the batch returns the same revisions.
    let again = c.apply(good).await.unwrap().into_inner().revisions;
    assert_eq!(again, revs);
    assert_eq!(server.store.head().unwrap(), head + 3);
    // A malformed change is named by index and field.
    let err = c
        .apply(pb::ApplyRequest {
            plan_id: PLAN.into(),
            changes: vec![
                change(pb::change::Change::SetStance(stance(
                    "p1",
                    "russia",
                    pb::Position::Support,
                ))),
                change(pb::change::Change::SetStance(pb::SetStanceRequest {
                    source_url: "ftp://x".into(),
                    ..stance("p1", "russia", pb::Position::Support)
                })),
            ],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&err), "changes[1].set_stance.source_url");
}

#[tokio::test]
async fn concurrent_writes_get_gap_free_revisions() {
    let server = TestServer::start().await;
    let head = server.store.head().unwrap();
    let mut tasks = Vec::new();
    for w in 0..64u32 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            let clause = format!("p{}", w % 28 + 1);
            c.set_stance(stance(&clause, "europe", pb::Position::Conditional))
                .await
                .unwrap()
                .into_inner()
                .revision
        }));
    }
    let mut revisions = Vec::new();
    for t in tasks {
        revisions.push(t.await.unwrap());
    }
    revisions.sort();
    assert_eq!(revisions, (head + 1..=head + 64).collect::<Vec<_>>());
    assert!(server.store.check().unwrap().ok());
}

/// What a writer saw acknowledged: revision -> (clause, note).
type Acked = Arc<Mutex<HashMap<u64, (String, String)>>>;

/// sled 0.34 never fsyncs the files it puts under `blobs/` (records over a
/// quarter of a segment), so an acknowledged write must never land in one:
/// with sled's default 512 KiB segments this test finds about ten of them.
#[tokio::test]
async fn large_stances_stay_in_sleds_fsynced_log_never_in_blob_files() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    // Stances at the field limits in 4-byte characters, about 34 KB each, on
    // every clause: about 2.9 MB in 84 revisions, in groups of 1 to 3.
    let mut tasks = Vec::new();
    for party in ["ukraine", "russia", "united-states"] {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            for clause in 1..=28 {
                c.set_stance(common::stance_at_limits(&format!("p{clause}"), party))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let blobs: Vec<String> = match std::fs::read_dir(server.data_dir.join("blobs")) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{e}"),
    };
    assert!(blobs.is_empty(), "sled wrote blob files: {blobs:?}");
    let conf = std::fs::read(server.data_dir.join("conf")).unwrap();
    assert!(
        String::from_utf8_lossy(&conf).contains("segment_size: 16777216"),
        "{}",
        String::from_utf8_lossy(&conf)
    );
    // Everything written reads back.
    let last = c.latest_clause(PLAN, "p28").await;
    assert_eq!(
        last.stances
            .iter()
            .filter(|s| s.quote.len() == 16_000)
            .count(),
        3
    );
}

async fn client_for(addr: std::net::SocketAddr) -> ClauseTrackerClient<Channel> {
    ClauseTrackerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let acked: Acked = Arc::default();
    // Kill at several different moments: right after start, mid-storm, later.
    for (round, kill_after) in [5usize, 60, 200].into_iter().enumerate() {
        let mut server = process::spawn(&data, &[]).await;
        let (enough_tx, mut enough_rx) = tokio::sync::mpsc::channel::<()>(1);
        let mut writers = Vec::new();
        for w in 0..8 {
            let addr = server.addr;
            let acked = Arc::clone(&acked);
            let enough_tx = enough_tx.clone();
            writers.push(tokio::spawn(async move {
                let mut c = client_for(addr).await;
                for i in 0.. {
                    let clause = format!("p{}", (w * 3 + i) % 28 + 1);
                    let note = format!("round {round} writer {w} write {i}");
                    let req = pb::SetStanceRequest {
                        note: note.clone(),
                        ..stance(&clause, "europe", pb::Position::Amend)
                    };
                    match c.set_stance(req).await {
                        Ok(rev) => {
                            let mut acked = acked.lock().await;
                            acked.insert(rev.into_inner().revision, (clause, note));
                            if acked.len() >= kill_after * (round + 1) {
                                let _ = enough_tx.try_send(());
                            }
                        }
                        Err(_) => return, // the server died under us
                    }
                }
            }));
        }
        drop(enough_tx);
        enough_rx.recv().await;
        server.child.start_kill().unwrap(); // SIGKILL
        server.child.wait().await.unwrap();
        for w in writers {
            w.await.unwrap();
        }
        // Restart and verify every acknowledged revision is there, unchanged.
        let mut restarted = process::spawn(&data, &[]).await;
        let mut c = client_for(restarted.addr).await;
        let acked_now = acked.lock().await.clone();
        let all = common::all_revisions(&mut c, 1000).await;
        let numbers: Vec<u64> = all.iter().map(|r| r.revision).collect();
        assert_eq!(
            numbers,
            (1..=numbers.len() as u64).collect::<Vec<_>>(),
            "history has a gap"
        );
        let by_number: HashMap<u64, &pb::Revision> = all.iter().map(|r| (r.revision, r)).collect();
        for (rev, (clause, note)) in &acked_now {
            let found = by_number
                .get(rev)
                .unwrap_or_else(|| panic!("acknowledged revision {rev} lost"));
            assert_eq!(&found.clause_id, clause);
            assert_eq!(&found.clause.as_ref().unwrap().stances[3].note, note);
        }
        restarted.child.start_kill().unwrap();
        restarted.child.wait().await.unwrap();
        let (ok, report) = process::check(&data).await;
        assert!(ok, "check failed: {report}");
    }
}

/// Reads during write-backs: a record moves from memory to sled while readers
/// look, and must never be seen older than before, nor missing. (With the
/// write-back forgetting records before writing them, this fails at once.)
#[tokio::test]
async fn reads_never_go_back_while_records_are_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::reopen_config(&dir.path().join("data"));
    config.write_back = std::time::Duration::from_millis(20);
    let server = TestServer::start_with(config).await;
    let mut writer = server.client().await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut c = server.client().await;
        let done = Arc::clone(&done);
        readers.push(tokio::spawn(async move {
            let (mut last_version, mut last_history, mut reads) = (0u64, 0usize, 0u32);
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                let clause = c.latest_clause(PLAN, "p3").await;
                assert!(
                    clause.version >= last_version,
                    "{} after {last_version}",
                    clause.version
                );
                last_version = clause.version;
                let history = c
                    .list_revisions(pb::ListRevisionsRequest {
                        plan_id: PLAN.into(),
                        clause_id: "p3".into(),
                        page_size: 1000,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .revisions
                    .len();
                assert!(history >= last_history, "{history} after {last_history}");
                last_history = history;
                reads += 1;
            }
            reads
        }));
    }
    for i in 0..150 {
        writer
            .set_stance(pb::SetStanceRequest {
                note: format!("step {i}"),
                ..stance("p3", "russia", pb::Position::Amend)
            })
            .await
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    let clause = writer.latest_clause(PLAN, "p3").await;
    assert_eq!(clause.stances[1].note, "step 149");
    assert!(server.store.check().unwrap().ok());
}

/// The head of the log and `meta/derived-through`, read from a stopped store.
fn log_head_and_derived_through(data: &std::path::Path) -> (u64, u64) {
    use peace_tracker::store::keys;
    let db = common::raw_sled(data);
    let (key, block) = db.scan_prefix(keys::LOG).next_back().unwrap().unwrap();
    let head = keys::trailing_u64(&key) + log_block_entries(&block).len() as u64 - 1;
    let through = db.get(keys::DERIVED_THROUGH).unwrap().unwrap();
    (
        head,
        u64::from_be_bytes(through.as_ref().try_into().unwrap()),
    )
}

#[tokio::test]
async fn latest_states_and_indexes_not_yet_written_back_are_rebuilt_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Nothing is written back for an hour: every latest state and index chunk,
    // the seed's included, exists only in the server's memory when it dies.
    let mut server = process::spawn(&data, &["--write-back-ms", "3600000"]).await;
    let mut c = client_for(server.addr).await;
    write_history(&mut c).await;
    c.create_clause(pb::CreateClauseRequest {
        plan_id: PLAN.into(),
        clause_id: "p29".into(),
        number: 29,
        title: "Added after the seed".into(),
        text: "A clause whose every record is unwritten at the kill.".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.set_stance(stance("p29", "ukraine", pb::Position::Support))
        .await
        .unwrap();
    let reads = index_backed_reads(&mut c).await;
    let mut latest = Vec::new();
    for n in 1..=29 {
        latest.push(c.latest_clause(PLAN, &format!("p{n}")).await);
    }
    server.child.start_kill().unwrap(); // SIGKILL
    server.child.wait().await.unwrap();
    let (head, through) = log_head_and_derived_through(&data);
    assert_eq!(
        through, 0,
        "records were written back before the kill (head {head})"
    );

    let mut restarted = process::spawn(&data, &[]).await;
    let mut c = client_for(restarted.addr).await;
    assert_eq!(index_backed_reads(&mut c).await, reads);
    for (n, clause) in (1..=29).zip(&latest) {
        assert_eq!(
            &c.latest_clause(PLAN, &format!("p{n}")).await,
            clause,
            "p{n}"
        );
    }
    drop(c);
    assert!(process::terminate(&mut restarted).await.success());
    // The rebuild and the clean stop left sled's records complete.
    assert_eq!(log_head_and_derived_through(&data), (head, head));
    let (ok, report) = process::check(&data).await;
    assert!(ok, "check failed: {report}");
}

#[tokio::test]
async fn an_inconsistent_store_is_refused_at_startup_and_reported_by_check() {
    let server = TestServer::start().await;
    let (dir, keep) = server.stop().await;
    // Tamper with p7's latest-state record so it no longer matches its revision.
    {
        let db = common::raw_sled(&dir);
        let key = peace_tracker::store::keys::clause(PLAN, "p7");
        let mut clause: peace_tracker::domain::Clause =
            postcard::from_bytes(&db.get(&key).unwrap().unwrap()).unwrap();
        clause.text = "tampered".into();
        db.insert(&key, postcard::to_stdvec(&clause).unwrap())
            .unwrap();
        // And punch a hole in the log: rewrite the block holding revision 3
        // as the revisions before it and those after it.
        use peace_tracker::store::keys;
        let (key, block) = db
            .range(keys::LOG.to_vec()..=keys::log_block(3))
            .next_back()
            .unwrap()
            .unwrap();
        let first = keys::trailing_u64(&key);
        let entries = log_block_entries(&block);
        let join = |entries: &[Vec<u8>]| -> Vec<u8> {
            entries
                .iter()
                .flat_map(|e| {
                    (e.len() as u32)
                        .to_be_bytes()
                        .into_iter()
                        .chain(e.iter().copied())
                })
                .collect()
        };
        let hole = (3 - first) as usize;
        let (before, after) = (&entries[..hole], &entries[hole + 1..]);
        if before.is_empty() {
            db.remove(&key).unwrap();
        } else {
            db.insert(&key, join(before)).unwrap();
        }
        if !after.is_empty() {
            db.insert(keys::log_block(4), join(after)).unwrap();
        }
        db.flush().unwrap();
    }
    let err = peace_tracker::server::Server::open(common::reopen_config(&dir))
        .await
        .err()
        .expect("startup must refuse an inconsistent store");
    assert!(err.contains("inconsistent") && err.contains("p7"), "{err}");
    let (ok, report) = process::check(&dir).await;
    assert!(!ok);
    assert!(
        report.contains("log gap: expected revision 3, found 4"),
        "{report}"
    );
    assert!(
        report.contains("us-28-point/p7: latest state differs"),
        "{report}"
    );
    drop(keep);
}

#[tokio::test]
async fn relaxed_durability_keeps_writes_across_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = peace_tracker::server::Config::new(dir.path().join("data"));
    config.durability = peace_tracker::store::Durability::Relaxed;
    let server = TestServer::start_with(config.clone()).await;
    let mut c = server.client().await;
    let rev = c
        .set_stance(stance("p27", "russia", pb::Position::Conditional))
        .await
        .unwrap()
        .into_inner();
    drop(c);
    server.stop().await;
    let server = TestServer::start_with(config).await;
    assert_eq!(server.store.head().unwrap(), rev.revision);
    assert!(server.store.check().unwrap().ok());
}

#[tokio::test]
async fn hash_token_prints_the_sha256_of_stdin() {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(process::BIN)
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"test\n")
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}

/// sled's snapshot files in a data dir (named after the log position they cover).
fn snapshot_files(data: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap.") && !name.ends_with(".generating"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_clean_stop_writes_a_checkpoint_covering_the_last_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = process::spawn(&data, &[]).await;
    // sled wrote a snapshot while opening; writes after it are only in the log.
    let at_start = snapshot_files(&data);
    let rev = client_for(server.addr)
        .await
        .set_stance(stance("p12", "ukraine", pb::Position::Amend))
        .await
        .unwrap()
        .into_inner();
    assert!(process::terminate(&mut server).await.success());
    let at_stop = snapshot_files(&data);
    assert!(
        at_stop.iter().any(|name| !at_start.contains(name)),
        "no new snapshot after a clean stop: {at_start:?} then {at_stop:?}"
    );
    let (ok, report) = process::check(&data).await;
    assert!(ok, "{report}");
    let mut restarted = process::spawn(&data, &[]).await;
    let clause = client_for(restarted.addr)
        .await
        .latest_clause(PLAN, "p12")
        .await;
    assert_eq!(clause.mod_revision, rev.revision);
    restarted.child.start_kill().unwrap();
}

#[tokio::test]
async fn sigterm_right_after_the_serving_line_still_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for _ in 0..5 {
        // `spawn` returns the moment the serving line is printed.
        let mut server = process::spawn(&data, &[]).await;
        let status = process::terminate(&mut server).await;
        assert!(
            status.success(),
            "a SIGTERM just after start killed the server instead of stopping it: {status}"
        );
    }
}

/// What the index-backed reads answer, to compare across an upgrade.
async fn index_backed_reads(c: &mut ClauseTrackerClient<Channel>) -> Vec<String> {
    let mut out = Vec::new();
    let filters = [
        ("", "", "", 0),
        (PLAN, "", "", 0),
        (PLAN, "", "", 100),
        (PLAN, "p2", "", 0),
        (PLAN, "p2", "", 120),
        (PLAN, "", "russia", 0),
        (PLAN, "", "russia", 150),
        (PLAN, "p2", "russia", 0),
        ("e3-counter-proposal", "", "", 0),
    ];
    for (plan, clause, party, start) in filters {
        let request = pb::ListRevisionsRequest {
            plan_id: plan.into(),
            clause_id: clause.into(),
            party_id: party.into(),
            start_revision: start,
            page_size: 37,
            ..Default::default()
        };
        let numbers: Vec<u64> = common::every_page_of_revisions(c, request)
            .await
            .iter()
            .map(|r| r.revision)
            .collect();
        out.push(format!("{plan}/{clause}/{party} from {start}: {numbers:?}"));
    }
    let head = c.latest_clause(PLAN, "p2").await;
    for version in [1, 2, 63, 64, 65, 66, 128, 129, head.version] {
        let clause = c
            .get_clause(pb::GetClauseRequest {
                plan_id: PLAN.into(),
                clause_id: "p2".into(),
                version,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.push(format!("p2 v{version}: rev {}", clause.mod_revision));
    }
    for at_revision in [1, 60, 130, 200, head.mod_revision] {
        let clause = c
            .get_clause(pb::GetClauseRequest {
                plan_id: PLAN.into(),
                clause_id: "p2".into(),
                at_revision,
                ..Default::default()
            })
            .await;
        out.push(format!(
            "p2 at {at_revision}: {:?}",
            clause.map(|c| c.into_inner().version).map_err(|e| e.code())
        ));
    }
    out
}

/// The entries of a schema-3 log block: `[u32be length][record]`, repeated.
fn log_block_entries(mut block: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !block.is_empty() {
        let len = u32::from_be_bytes(block[..4].try_into().unwrap()) as usize;
        out.push(block[4..4 + len].to_vec());
        block = &block[4 + len..];
    }
    out
}

/// Rewrites the store's log as schema 2 wrote it: one `rev/` key per revision.
/// A schema-3 store: derived records always complete, no `meta/derived-through`.
fn downgrade_to_schema_3(db: &sled::Db) {
    use peace_tracker::store::keys;
    db.remove(keys::DERIVED_THROUGH).unwrap();
    db.insert(keys::SCHEMA, &3u32.to_be_bytes()[..]).unwrap();
}

fn downgrade_to_schema_2(db: &sled::Db) {
    use peace_tracker::store::keys;
    downgrade_to_schema_3(db);
    for item in db.scan_prefix(keys::LOG) {
        let (key, block) = item.unwrap();
        let first = keys::trailing_u64(&key);
        for (number, entry) in (first..).zip(log_block_entries(&block)) {
            db.insert(keys::v2::rev(number), entry).unwrap();
        }
        db.remove(key).unwrap();
    }
    db.insert(keys::SCHEMA, &2u32.to_be_bytes()[..]).unwrap();
}

/// Rewrites the store as schema 1 wrote it: schema 2's log, and one key per
/// index entry.
fn downgrade_to_schema_1(db: &sled::Db) {
    use peace_tracker::store::keys;
    downgrade_to_schema_2(db);
    let entries = |packed: &[u8]| -> Vec<u64> {
        packed
            .chunks_exact(8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
            .collect()
    };
    for (new, old, by_version) in [
        (keys::VERSION_LISTS, keys::v1::VERSION, true),
        (keys::PLAN_REV_LISTS, keys::v1::PLAN_REVS, false),
        (keys::PARTY_REV_LISTS, keys::v1::PARTY_REVS, false),
    ] {
        for item in db.scan_prefix(new) {
            let (key, packed) = item.unwrap();
            let list = &key[new.len()..key.len() - 8];
            let start = keys::trailing_u64(&key);
            for (i, rev) in entries(&packed).into_iter().enumerate() {
                let mut old_key = old.to_vec();
                old_key.extend_from_slice(list);
                if by_version {
                    old_key.extend_from_slice(&(start + i as u64).to_be_bytes());
                    db.insert(old_key, &rev.to_be_bytes()[..]).unwrap();
                } else {
                    old_key.extend_from_slice(&rev.to_be_bytes());
                    db.insert(old_key, &[][..]).unwrap();
                }
            }
            db.remove(&key).unwrap();
        }
    }
    db.insert(keys::SCHEMA, &1u32.to_be_bytes()[..]).unwrap();
}

#[tokio::test]
async fn a_schema_1_store_is_upgraded_on_open_and_answers_the_same() {
    upgraded_on_open_answers_the_same(1).await;
}

#[tokio::test]
async fn a_schema_2_store_is_upgraded_on_open_and_answers_the_same() {
    upgraded_on_open_answers_the_same(2).await;
}

#[tokio::test]
async fn a_schema_3_store_is_upgraded_on_open_and_answers_the_same() {
    upgraded_on_open_answers_the_same(3).await;
}

/// Commits `stances` in one Apply.
async fn apply_stances(
    c: &mut ClauseTrackerClient<Channel>,
    stances: impl IntoIterator<Item = pb::SetStanceRequest>,
) {
    c.apply(pb::ApplyRequest {
        plan_id: PLAN.into(),
        changes: stances
            .into_iter()
            .map(|s| change(pb::change::Change::SetStance(s)))
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// 200 stance changes in Apply batches of 50: p2 gets enough versions to fill
/// several index chunks and log blocks, and russia's timeline too.
async fn write_history(c: &mut ClauseTrackerClient<Channel>) {
    let positions = [pb::Position::Oppose, pb::Position::Amend];
    for round in 0..4 {
        let stances = (0..50).map(|i| pb::SetStanceRequest {
            note: format!("round {round} step {i}"),
            ..stance(
                if i % 5 == 0 { "p9" } else { "p2" },
                if i % 2 == 0 { "russia" } else { "europe" },
                positions[i % 2],
            )
        });
        apply_stances(c, stances).await;
    }
}

/// Writes enough history to fill several index chunks and log blocks,
/// rewrites the store as schema `from` wrote it, reopens it, and compares
/// every index-backed read.
async fn upgraded_on_open_answers_the_same(from: u32) {
    use peace_tracker::store::keys;
    let server = TestServer::start().await;
    let mut c = server.client().await;
    write_history(&mut c).await;
    assert!(c.latest_clause(PLAN, "p2").await.version > 129);
    let before = index_backed_reads(&mut c).await;
    drop(c);
    let (dir, keep) = server.stop().await;
    let mut scratch = keys::plan_rev_list(PLAN);
    scratch.extend_from_slice(&999_999u64.to_be_bytes());

    let scratch_block = keys::log_block(999_999);
    {
        let db = common::raw_sled(&dir);
        match from {
            1 => {
                downgrade_to_schema_1(&db);
                // Scratch left by an interrupted upgrade must not survive the next one.
                db.insert(&scratch, &999_999u64.to_be_bytes()[..]).unwrap();
                assert!(db.scan_prefix(keys::v1::VERSION).next().is_some());
            }
            2 => downgrade_to_schema_2(&db),
            _ => downgrade_to_schema_3(&db),
        }
        if from < 3 {
            db.insert(&scratch_block, &b"scratch"[..]).unwrap();
            assert!(db.scan_prefix(keys::v2::REV).count() > 2 * 64);
        }
        assert!(db.get(keys::DERIVED_THROUGH).unwrap().is_none());
        db.flush().unwrap();
    }
    let server = TestServer::start_with(common::reopen_config(&dir)).await;
    let mut c = server.client().await;
    assert_eq!(index_backed_reads(&mut c).await, before);
    assert!(server.store.check().unwrap().ok());
    // Writes after the upgrade extend the rebuilt chunks.
    let rev = c
        .set_stance(stance("p2", "russia", pb::Position::RedLine))
        .await
        .unwrap()
        .into_inner();
    let timeline = c
        .list_revisions(pb::ListRevisionsRequest {
            plan_id: PLAN.into(),
            party_id: "russia".into(),
            start_revision: rev.revision,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(timeline.len(), 1);
    assert_eq!(timeline[0].revision, rev.revision);
    drop(c);
    let store = server.store.clone();
    assert!(store.check().unwrap().ok());
    drop(store);
    server.stop().await;

    // Nothing of the older schemas or of the scratch is left, the log is in
    // blocks, and the schema record says the current schema.
    let db = common::raw_sled(&dir);
    assert!(db.get(&scratch).unwrap().is_none());
    assert!(db.get(&scratch_block).unwrap().is_none());
    for prefix in [
        keys::v1::VERSION,
        keys::v1::PLAN_REVS,
        keys::v1::PARTY_REVS,
        keys::v2::REV,
    ] {
        assert!(db.scan_prefix(prefix).next().is_none(), "{prefix:?} left");
    }
    assert!(db.scan_prefix(keys::LOG).count() > 2);
    assert_eq!(
        db.get(keys::SCHEMA).unwrap().unwrap().as_ref(),
        &peace_tracker::store::SCHEMA_VERSION.to_be_bytes()[..]
    );
    drop(db);
    // The derived records are complete through the head after the clean stop.
    let (head, through) = log_head_and_derived_through(&dir);
    assert_eq!(through, head);
    assert_eq!(head, rev.revision);
    drop(keep);
}

/// Sizes of the files under `dir`, as the file system reports them.
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| match e.metadata().unwrap() {
            m if m.is_dir() => dir_size(&e.path()),
            m => m.len(),
        })
        .sum()
}

/// Starts a server on `dir` and checks that it answers `before` (see
/// [`index_backed_reads`]) and passes the full check.
async fn reopened_answers_the_same(dir: &std::path::Path, before: &[String]) {
    let server = TestServer::start_with(common::reopen_config(dir)).await;
    let mut c = server.client().await;
    assert_eq!(index_backed_reads(&mut c).await, before);
    assert!(server.store.check().unwrap().ok());
    drop(c);
    server.stop().await;
}

/// The dir `peace-tracker compact` keeps the old store in.
fn kept_by_compact(dir: &std::path::Path) -> std::path::PathBuf {
    dir.with_file_name(format!(
        "{}.before-compact",
        dir.file_name().unwrap().to_string_lossy()
    ))
}

/// About 40 MB of log: 400 revisions of clauses holding three ~34 KB stances.
async fn write_bulk(c: &mut ClauseTrackerClient<Channel>) {
    let parties = ["ukraine", "russia", "united-states"];
    for round in 0..16 {
        let stances = (0..25).map(|i| pb::SetStanceRequest {
            note: format!("{round}/{i} {}", "\u{1D11E}".repeat(3990)),
            ..common::stance_at_limits(&format!("p{}", 3 + i % 3), parties[i % 3])
        });
        apply_stances(c, stances).await;
    }
}

#[tokio::test]
async fn compact_rewrites_an_upgraded_store_smaller_and_it_answers_the_same() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    write_history(&mut c).await;
    write_bulk(&mut c).await;
    let before = index_backed_reads(&mut c).await;
    drop(c);
    let (dir, keep) = server.stop().await;
    // An upgrade removes every old log key, and sled keeps their space.
    downgrade_to_schema_2(&common::raw_sled(&dir));
    TestServer::start_with(common::reopen_config(&dir))
        .await
        .stop()
        .await;
    let upgraded = dir_size(&dir);

    let (ok, out) = process::tool("compact", &dir).await;
    assert!(ok, "{out}");
    let kept = kept_by_compact(&dir);
    assert!(out.contains("before-compact"), "{out}");
    let (ok, report) = process::check(&kept).await;
    assert!(ok, "the old dir is kept, whole: {report}");
    let compacted = dir_size(&dir);
    assert!(compacted < upgraded, "{compacted} >= {upgraded}");
    reopened_answers_the_same(&dir, &before).await;

    // A second compaction will not overwrite the kept dir, and changes nothing.
    let (ok, out) = process::tool("compact", &dir).await;
    assert!(!ok);
    assert!(out.contains("remove it first"), "{out}");
    let (ok, report) = process::check(&dir).await;
    assert!(ok, "{report}");
    drop(keep);
}

#[tokio::test]
async fn a_store_with_sleds_default_segments_opens_and_compact_converts_it() {
    use peace_tracker::store::{segment_size_of, LEGACY_SEGMENT_SIZE, SEGMENT_SIZE};
    // A store made by an earlier release, with sled's default segment size.
    let keep = tempfile::tempdir().unwrap();
    let dir = keep.path().join("data");
    drop(sled::open(&dir).unwrap());
    assert_eq!(segment_size_of(&dir).unwrap(), LEGACY_SEGMENT_SIZE);
    let server = TestServer::start_with(common::reopen_config(&dir)).await;
    let mut c = server.client().await;
    write_history(&mut c).await;
    let before = index_backed_reads(&mut c).await;
    drop(c);
    server.stop().await;
    assert_eq!(segment_size_of(&dir).unwrap(), LEGACY_SEGMENT_SIZE);
    // check passes (nothing is inconsistent) but tells the operator what to run.
    let (ok, report) = process::check(&dir).await;
    assert!(ok, "{report}");
    assert!(
        report.contains("warning: this store uses sled's default 512 KiB segments")
            && report.contains("peace-tracker compact"),
        "{report}"
    );

    let (ok, out) = process::tool("compact", &dir).await;
    assert!(ok, "{out}");
    assert_eq!(
        segment_size_of(&kept_by_compact(&dir)).unwrap(),
        LEGACY_SEGMENT_SIZE
    );
    assert_eq!(segment_size_of(&dir).unwrap(), SEGMENT_SIZE);
    let (ok, report) = process::check(&dir).await;
    assert!(ok && !report.contains("warning"), "{report}");
    reopened_answers_the_same(&dir, &before).await;
}

#[tokio::test]
async fn schema_2_log_keys_left_by_an_interrupted_upgrade_are_removed_on_open() {
    use peace_tracker::store::keys;
    leftover_is_removed_on_open(keys::v2::rev(5), keys::v2::REV).await;
}

#[tokio::test]
async fn schema_1_keys_left_by_an_interrupted_upgrade_are_removed_on_open() {
    use peace_tracker::store::keys;
    let mut leftover = keys::v1::PLAN_REVS.to_vec();
    leftover.extend_from_slice(PLAN.as_bytes());
    leftover.push(0);
    leftover.extend_from_slice(&3u64.to_be_bytes());
    leftover_is_removed_on_open(leftover, keys::v1::PLAN_REVS).await;
}

/// Plants `key` in a current store, as an upgrade interrupted after its flip
/// leaves it, and checks that the next open removes everything under `prefix`.
async fn leftover_is_removed_on_open(key: Vec<u8>, prefix: &[u8]) {
    use peace_tracker::store::keys;
    let server = TestServer::start().await;
    let (dir, keep) = server.stop().await;
    {
        let db = common::raw_sled(&dir);
        assert_eq!(
            db.get(keys::SCHEMA).unwrap().unwrap().as_ref(),
            &peace_tracker::store::SCHEMA_VERSION.to_be_bytes()[..]
        );
        db.insert(key, &b"stale"[..]).unwrap();
        db.flush().unwrap();
    }
    let server = TestServer::start_with(common::reopen_config(&dir)).await;
    assert!(server.store.check().unwrap().ok());
    server.stop().await;
    let db = common::raw_sled(&dir);
    assert!(db.scan_prefix(prefix).next().is_none(), "{prefix:?} left");
    drop(keep);
}
