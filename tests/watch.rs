//! Watch streams against a real server: hand-off, resume, filters, slow
//! consumers, cleanup and shutdown.

mod common;

use common::{bad_request_field, read_mask, stance, TestServer, PLAN};
use peace_tracker::pb;
use peace_tracker::pb::watch_event::Event;
use peace_tracker::server::Config;
use tonic::{Code, Streaming};

fn watch(start_revision: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        start_revision,
        ..Default::default()
    }
}

async fn next(stream: &mut Streaming<pb::WatchEvent>) -> Event {
    stream
        .message()
        .await
        .expect("stream healthy")
        .expect("stream open")
        .event
        .expect("an event")
}

/// Reads until a revision >= `last` arrives; returns revision numbers and the
/// positions (in the sequence) of caught-up progress messages.
async fn collect_until(
    stream: &mut Streaming<pb::WatchEvent>,
    last: u64,
) -> (Vec<u64>, Vec<usize>) {
    let mut revs = Vec::new();
    let mut caught_up_at = Vec::new();
    loop {
        match next(stream).await {
            Event::Revision(r) => {
                revs.push(r.revision);
                if r.revision >= last {
                    return (revs, caught_up_at);
                }
            }
            Event::Progress(p) => {
                if p.caught_up {
                    caught_up_at.push(revs.len());
                }
            }
        }
    }
}

#[tokio::test]
async fn from_now_starts_with_progress_then_live_revisions() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();
    let mut stream = c.watch(watch(0)).await.unwrap().into_inner();
    match next(&mut stream).await {
        Event::Progress(p) => assert_eq!((p.revision, p.caught_up), (head, true)),
        other => panic!("expected progress first, got {other:?}"),
    }
    let rev = c
        .set_stance(stance("p4", "russia", pb::Position::Support))
        .await
        .unwrap()
        .into_inner();
    match next(&mut stream).await {
        Event::Revision(r) => {
            assert_eq!(r.revision, rev.revision);
            assert_eq!(*r, rev, "the watched revision equals the write's answer");
        }
        other => panic!("expected the revision, got {other:?}"),
    }
}

#[tokio::test]
async fn a_watcher_starting_mid_storm_sees_every_revision_once_in_order() {
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let mut c = server.client().await;
        tasks.push(tokio::spawn(async move {
            for i in 0..50u32 {
                let clause = format!("p{}", (w * 7 + i) % 28 + 1);
                c.set_stance(stance(&clause, "europe", pb::Position::Amend))
                    .await
                    .unwrap();
            }
        }));
    }
    // Start replaying from 1 while the writers are still going.
    let mut c = server.client().await;
    let mut stream = c.watch(watch(1)).await.unwrap().into_inner();
    for t in tasks {
        t.await.unwrap();
    }
    let last = server.store.head().unwrap();
    let (revs, caught_up_at) = collect_until(&mut stream, last).await;
    assert_eq!(revs, (1..=last).collect::<Vec<_>>());
    assert_eq!(
        caught_up_at.len(),
        1,
        "one hand-off progress: {caught_up_at:?}"
    );
}

#[tokio::test]
async fn resuming_from_last_plus_one_yields_exactly_what_was_missed() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut stream = c.watch(watch(0)).await.unwrap().into_inner();
    next(&mut stream).await;
    let first = c
        .set_stance(stance("p1", "russia", pb::Position::Support))
        .await
        .unwrap()
        .into_inner();
    let seen = match next(&mut stream).await {
        Event::Revision(r) => r.revision,
        other => panic!("{other:?}"),
    };
    assert_eq!(seen, first.revision);
    drop(stream);
    // Missed while disconnected:
    let mut missed = Vec::new();
    for clause in ["p2", "p3", "p4"] {
        missed.push(
            c.set_stance(stance(clause, "russia", pb::Position::Amend))
                .await
                .unwrap()
                .into_inner()
                .revision,
        );
    }
    let mut stream = c.watch(watch(seen + 1)).await.unwrap().into_inner();
    let mut got = Vec::new();
    loop {
        match next(&mut stream).await {
            Event::Revision(r) => got.push(r.revision),
            Event::Progress(p) => {
                assert!(p.caught_up);
                assert_eq!(p.revision, *missed.last().unwrap());
                break;
            }
        }
    }
    assert_eq!(got, missed);
}

#[tokio::test]
async fn filters_by_plan_clause_and_party() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let start = server.store.head().unwrap() + 1;
    let mut by_clause = c
        .watch(pb::WatchRequest {
            plan_id: PLAN.into(),
            clause_ids: vec!["p7".into()],
            start_revision: start,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut by_party = c
        .watch(pb::WatchRequest {
            plan_id: PLAN.into(),
            party_ids: vec!["ukraine".into()],
            start_revision: start,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut other_plan = c
        .watch(pb::WatchRequest {
            plan_id: "other".into(),
            start_revision: start,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let a = c
        .set_stance(stance("p7", "russia", pb::Position::Support))
        .await
        .unwrap()
        .into_inner();
    let b = c
        .set_stance(stance("p8", "ukraine", pb::Position::Oppose))
        .await
        .unwrap()
        .into_inner();
    let d = c
        .set_stance(stance("p7", "ukraine", pb::Position::RedLine))
        .await
        .unwrap()
        .into_inner();
    let status = c
        .set_clause_status(pb::SetClauseStatusRequest {
            plan_id: PLAN.into(),
            clause_id: "p7".into(),
            status: pb::ClauseStatus::Bracketed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (clause_revs, _) = collect_until(&mut by_clause, status.revision).await;
    assert_eq!(clause_revs, vec![a.revision, d.revision, status.revision]);
    let (party_revs, _) = collect_until(&mut by_party, d.revision).await;
    assert_eq!(party_revs, vec![b.revision, d.revision]);
    // The other plan's watcher sees only progress (it caught up at start - 1).
    match next(&mut other_plan).await {
        Event::Progress(p) => assert_eq!(p.revision, start - 1),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn heartbeat_progress_tells_a_narrow_watcher_the_current_revision() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut stream = c
        .watch(pb::WatchRequest {
            plan_id: PLAN.into(),
            clause_ids: vec!["p1".into()],
            progress_interval: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    next(&mut stream).await;
    let rev = c
        .set_stance(stance("p2", "russia", pb::Position::Support))
        .await
        .unwrap()
        .into_inner();
    // No matching event: the next message is a heartbeat at the new head.
    loop {
        match next(&mut stream).await {
            Event::Progress(p) if p.revision == rev.revision => {
                assert!(p.caught_up);
                break;
            }
            Event::Progress(_) => continue, // a heartbeat before the write landed
            other => panic!("{other:?}"),
        }
    }
    let err = c
        .watch(pb::WatchRequest {
            progress_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 5_000_000,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_slow_consumer_gets_everything_and_never_blocks_writers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.hub_capacity = 16; // far fewer than the writes below
    let server = TestServer::start_with(config).await;
    let mut c = server.client().await;
    let start = server.store.head().unwrap() + 1;
    let mut stream = c.watch(watch(start)).await.unwrap().into_inner();
    // Do not read. Writers must finish anyway.
    let mut writer = server.client().await;
    for i in 0..300u32 {
        let clause = format!("p{}", i % 28 + 1);
        writer
            .set_stance(stance(&clause, "russia", pb::Position::Amend))
            .await
            .unwrap();
    }
    let last = server.store.head().unwrap();
    assert_eq!(last, start + 299);
    let mut revs = Vec::new();
    while revs.last() != Some(&last) {
        if let Event::Revision(r) = next(&mut stream).await {
            revs.push(r.revision);
        }
    }
    assert_eq!(revs, (start..=last).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_client_that_goes_away_frees_its_watcher() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = c.watch(watch(0)).await.unwrap().into_inner();
        next(&mut s).await;
        streams.push(s);
    }
    server.hub.wait_for_watchers(3).await;
    assert_eq!(server.hub.watcher_count(), 3);
    drop(streams);
    server.hub.wait_for_watchers(0).await;
    assert_eq!(server.hub.watcher_count(), 0);
}

#[tokio::test]
async fn start_beyond_the_head_is_out_of_range_and_watchers_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.max_watchers = 1;
    let server = TestServer::start_with(config).await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();
    let err = c.watch(watch(head + 2)).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    // head + 1 is fine: "everything from the next revision on".
    let mut first = c.watch(watch(head + 1)).await.unwrap().into_inner();
    next(&mut first).await;
    let err = c.watch(watch(0)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    drop(first);
    server.hub.wait_for_watchers(0).await;
    let mut again = c.watch(watch(0)).await.unwrap().into_inner();
    next(&mut again).await;
}

#[tokio::test]
async fn shutdown_ends_open_watches_with_unavailable_naming_the_last_revision() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut s = c.watch(watch(0)).await.unwrap().into_inner();
        next(&mut s).await;
        streams.push(s);
    }
    // Graceful stop returns although five streams are open.
    let stopping = tokio::spawn(server.stop());
    for mut s in streams {
        let status = s
            .message()
            .await
            .expect_err("the stream ends with an error");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status
                .message()
                .contains(&format!("last revision sent: {head}")),
            "{}",
            status.message()
        );
    }
    stopping.await.unwrap();
}

#[tokio::test]
async fn each_watcher_gets_events_in_its_own_read_mask_live_and_replayed() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let seeded_head = server.store.head().unwrap();
    let mut full = c.watch(watch(0)).await.unwrap().into_inner();
    let mut slim = c
        .watch(pb::WatchRequest {
            read_mask: read_mask(&["revision", "clause_id", "kind"]),
            ..watch(0)
        })
        .await
        .unwrap()
        .into_inner();
    for stream in [&mut full, &mut slim] {
        assert!(matches!(next(stream).await, Event::Progress(_)));
    }
    for party in ["ukraine", "russia"] {
        c.set_stance(stance("p3", party, pb::Position::Amend))
            .await
            .unwrap();
    }
    let live_revisions = [seeded_head + 1, seeded_head + 2];
    for want in live_revisions {
        let Event::Revision(f) = next(&mut full).await else {
            panic!("expected a revision")
        };
        let Event::Revision(s) = next(&mut slim).await else {
            panic!("expected a revision")
        };
        assert_eq!((f.revision, s.revision), (want, want));
        assert!(f.clause.is_some() && f.previous.is_some());
        assert_eq!(
            f.party_id,
            if want == seeded_head + 1 {
                "ukraine"
            } else {
                "russia"
            }
        );
        // The masked watcher gets exactly the named fields.
        assert_eq!(
            *s,
            pb::Revision {
                revision: want,
                clause_id: "p3".into(),
                kind: pb::ChangeKind::StanceSet as i32,
                ..Default::default()
            }
        );
    }

    // A replay from the store honours the mask too, and so does its Progress hand-off.
    let mut replay = c
        .watch(pb::WatchRequest {
            read_mask: read_mask(&["revision", "clause"]),
            ..watch(seeded_head + 1)
        })
        .await
        .unwrap()
        .into_inner();
    for want in live_revisions {
        let Event::Revision(r) = next(&mut replay).await else {
            panic!("expected a revision")
        };
        assert_eq!(r.revision, want);
        assert!(r.clause.is_some(), "clause was asked for");
        assert!(r.previous.is_none() && r.plan_id.is_empty() && r.commit_time.is_none());
    }
    assert!(matches!(next(&mut replay).await, Event::Progress(p) if p.caught_up));
}

#[tokio::test]
async fn a_bad_read_mask_on_watch_is_refused_before_any_event() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let err = c
        .watch(pb::WatchRequest {
            read_mask: read_mask(&["revision", "clause.stances"]),
            ..watch(0)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&err), "read_mask.paths[1]");
    assert!(err.message().contains("top-level"), "{}", err.message());
}

#[tokio::test]
async fn a_watcher_catching_up_stops_at_shutdown_without_finishing_its_replay() {
    use peace_tracker::grpc::watch::{self as feeder, WatchLimits, WatchSpec};
    use tokio_stream::StreamExt;

    let server = TestServer::start().await;
    let mut c = server.client().await;
    // More history than two catch-up chunks (256 revisions each).
    let positions = [pb::Position::Support, pb::Position::Oppose];
    c.apply(pb::ApplyRequest {
        plan_id: PLAN.into(),
        changes: (0..600)
            .map(|i| pb::Change {
                change: Some(pb::change::Change::SetStance(stance(
                    "p1",
                    "ukraine",
                    positions[i % 2],
                ))),
            })
            .collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(server.store.head().unwrap() > 512);
    // A replay of the whole log that matches nothing, so it sends nothing
    // until it has caught up, started after the server began to shut down.
    let limits = WatchLimits::new(10);
    let spec = WatchSpec::from_request(
        &pb::WatchRequest {
            plan_id: PLAN.into(),
            party_ids: vec!["nobody".into()],
            start_revision: 1,
            ..Default::default()
        },
        &limits,
    )
    .unwrap();
    server.hub.close();
    let stream = feeder::start(spec, server.store.clone(), server.hub.clone(), &limits).unwrap();
    tokio::pin!(stream);
    let status = stream
        .next()
        .await
        .expect("the stream says why it ends")
        .expect_err("it ends before its caught-up progress");
    assert_eq!(status.code(), Code::Unavailable);
    // It stopped after its first chunk, not at the end of the log.
    assert!(
        status.message().contains("last revision sent: 256;"),
        "{}",
        status.message()
    );
    assert!(stream.next().await.is_none());
}
