//! Every RPC against a real in-process server over a temp sled store.

mod common;

use common::{bad_request_field, read_mask, stance, stance_at_limits, ReadExt, TestServer, PLAN};
use peace_tracker::pb;
use prost_types::FieldMask;
use tonic::{Code, Request};

#[tokio::test]
async fn seeded_plan_has_four_parties_and_28_points_in_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let plan = c
        .get_plan(pb::GetPlanRequest {
            plan_id: PLAN.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let parties: Vec<(String, bool)> = plan
        .parties
        .iter()
        .map(|p| (p.party_id.clone(), p.required))
        .collect();
    assert_eq!(
        parties,
        vec![
            ("ukraine".into(), true),
            ("russia".into(), true),
            ("united-states".into(), true),
            ("europe".into(), false)
        ]
    );
    let list = c
        .list_clauses(pb::ListClausesRequest {
            plan_id: PLAN.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.clauses.len(), 28);
    let numbers: Vec<u32> = list.clauses.iter().map(|c| c.number).collect();
    assert_eq!(numbers, (1..=28).collect::<Vec<_>>());
    assert_eq!(list.clauses[20].clause_id, "p21");
    assert_eq!(list.revision, server.store.head().unwrap());
    assert!(list.next_page_token.is_empty());
    // p21: Ukraine's red line makes it contested; every stance has a source.
    let p21 = &list.clauses[20];
    assert_eq!(p21.consensus, pb::Consensus::Contested as i32);
    assert_eq!(p21.stances.len(), 4);
    assert_eq!(p21.stances[0].position, pb::Position::RedLine as i32);
    assert!(p21
        .stances
        .iter()
        .all(|s| s.source_url.starts_with("https://")));
    // Seeding went through the write path: it is in history, by `seed`.
    let revs = c
        .list_revisions(pb::ListRevisionsRequest {
            plan_id: PLAN.into(),
            clause_id: "p21".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(revs[0].kind, pb::ChangeKind::ClauseCreated as i32);
    assert!(revs.iter().all(|r| r.author == "seed"));
}

#[tokio::test]
async fn writes_return_their_revision_with_before_and_after() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();
    let mut req = Request::new(pb::SetStanceRequest {
        note: "said at a press conference".into(),
        source_url: "https://example.org/a".into(),
        stated_at: Some(prost_types::Timestamp {
            seconds: 1_764_000_000,
            nanos: 0,
        }),
        reason: "new statement".into(),
        ..stance("p1", "russia", pb::Position::Conditional)
    });
    req.metadata_mut()
        .insert("x-author", "desk-7".parse().unwrap());
    let rev = c.set_stance(req).await.unwrap().into_inner();
    assert_eq!(rev.revision, head + 1);
    assert_eq!(rev.kind, pb::ChangeKind::StanceSet as i32);
    assert_eq!(rev.author, "desk-7");
    assert_eq!(rev.reason, "new statement");
    assert_eq!(rev.party_id, "russia");
    let after = rev.clause.unwrap();
    let before = rev.previous.unwrap();
    assert_eq!(after.version, before.version + 1);
    assert_eq!(rev.clause_version, after.version);
    assert_eq!(after.stances[1].position, pb::Position::Conditional as i32);
    assert_eq!(after.stances[1].mod_revision, rev.revision);
    assert_eq!(before.stances[1].position, pb::Position::Unknown as i32);

    // Without x-author the author is anonymous.
    let rev = c
        .set_clause_status(pb::SetClauseStatusRequest {
            plan_id: PLAN.into(),
            clause_id: "p1".into(),
            status: pb::ClauseStatus::Negotiating as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rev.author, "anonymous");
    assert_eq!(
        rev.clause.unwrap().status,
        pb::ClauseStatus::Negotiating as i32
    );
}

#[tokio::test]
async fn create_plan_party_clause_and_amend_with_a_field_mask() {
    let server = TestServer::start_empty().await;
    let mut c = server.client().await;
    let rev = c
        .create_plan(pb::CreatePlanRequest {
            plan_id: "draft".into(),
            title: "A draft".into(),
            parties: vec![pb::Party {
                party_id: "a".into(),
                name: "A".into(),
                required: true,
            }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rev.revision, 1);
    assert_eq!(rev.kind, pb::ChangeKind::PlanCreated as i32);
    assert_eq!(rev.plan.unwrap().parties.len(), 1);
    let rev = c
        .create_clause(pb::CreateClauseRequest {
            plan_id: "draft".into(),
            clause_id: "c1".into(),
            number: 1,
            title: "First".into(),
            text: "The first point.".into(),
            topics: vec!["security".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rev.revision, rev.clause_version), (2, 1));
    assert!(rev.previous.is_none());
    // A party added later shows as UNKNOWN without bumping the clause's version.
    c.add_party(pb::AddPartyRequest {
        plan_id: "draft".into(),
        party: Some(pb::Party {
            party_id: "b".into(),
            name: "B".into(),
            required: false,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let clause = c.latest_clause("draft", "c1").await;
    assert_eq!(clause.version, 1);
    assert_eq!(clause.stances.len(), 2);
    assert_eq!(clause.stances[1].party_id, "b");
    assert_eq!(clause.stances[1].position, pb::Position::Unknown as i32);
    // Later writes are validated against the plan as it now stands.
    let rev = c
        .set_stance(pb::SetStanceRequest {
            plan_id: "draft".into(),
            ..stance("c1", "b", pb::Position::Support)
        })
        .await
        .expect("a stance of the party just added is accepted")
        .into_inner();
    assert_eq!(rev.clause_version, 2);
    let again = c
        .add_party(pb::AddPartyRequest {
            plan_id: "draft".into(),
            party: Some(pb::Party {
                party_id: "b".into(),
                name: "B again".into(),
                required: false,
            }),
            ..Default::default()
        })
        .await
        .expect_err("the party exists");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    // Amend only what the mask names.
    let rev = c
        .amend_clause(pb::AmendClauseRequest {
            plan_id: "draft".into(),
            clause_id: "c1".into(),
            text: "The first point, amended.".into(),
            title: "ignored: not in the mask".into(),
            update_mask: Some(FieldMask {
                paths: vec!["text".into()],
            }),
            expected_version: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let after = rev.clause.unwrap();
    assert_eq!(after.text, "The first point, amended.");
    assert_eq!(after.title, "First");
    assert_eq!(after.version, 3);
    // ListPlans pages.
    for id in ["draft-b", "draft-c"] {
        c.create_plan(pb::CreatePlanRequest {
            plan_id: id.into(),
            title: id.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let page1 = c
        .list_plans(pb::ListPlansRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page1.plans.len(), 2);
    let page2 = c
        .list_plans(pb::ListPlansRequest {
            page_size: 2,
            page_token: page1.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = page1
        .plans
        .iter()
        .chain(&page2.plans)
        .map(|p| p.plan_id.clone())
        .collect();
    assert_eq!(ids, vec!["draft", "draft-b", "draft-c"]);
    assert!(page2.next_page_token.is_empty());
}

#[tokio::test]
async fn reads_by_version_revision_and_time() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let first = c
        .set_stance(stance("p9", "russia", pb::Position::Oppose))
        .await
        .unwrap()
        .into_inner();
    let second = c
        .set_stance(stance("p9", "russia", pb::Position::Support))
        .await
        .unwrap()
        .into_inner();
    let get = |version, at_revision, at_time| pb::GetClauseRequest {
        plan_id: PLAN.into(),
        clause_id: "p9".into(),
        version,
        at_revision,
        at_time,
    };
    let pos = |c: &pb::Clause| c.stances[1].position;
    let v = c
        .get_clause(get(first.clause_version, 0, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pos(&v), pb::Position::Oppose as i32);
    let v = c
        .get_clause(get(0, first.revision, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, first.clause_version);
    // A revision between the two writes of this clause reads the first.
    let v = c
        .get_clause(get(0, second.revision - 1, None))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, first.clause_version);
    let v = c.get_clause(get(0, 0, None)).await.unwrap().into_inner();
    assert_eq!(pos(&v), pb::Position::Support as i32);
    // Exactly at the second commit's time: the state after it.
    let v = c
        .get_clause(get(0, 0, second.commit_time))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.version, second.clause_version);
    // Before the first revision ever: nothing existed.
    let err = c
        .get_clause(get(
            0,
            0,
            Some(prost_types::Timestamp {
                seconds: 0,
                nanos: 0,
            }),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Errors: unknown version or revision, both selectors at once.
    assert_eq!(
        c.get_clause(get(99, 0, None)).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        c.get_clause(get(0, 10_000, None)).await.unwrap_err().code(),
        Code::NotFound
    );
    let err = c
        .get_clause(get(0, 5, second.commit_time))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&err), "at_time");
}

#[tokio::test]
async fn list_clauses_filters_and_pages_at_one_revision() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let list = |req: pb::ListClausesRequest| pb::ListClausesRequest {
        plan_id: PLAN.into(),
        ..req
    };
    let ids = |r: &pb::ListClausesResponse| {
        r.clauses
            .iter()
            .map(|c| c.clause_id.clone())
            .collect::<Vec<_>>()
    };
    let contested = c
        .list_clauses(list(pb::ListClausesRequest {
            consensus: vec![pb::Consensus::Contested as i32],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&contested), vec!["p6", "p7", "p14", "p21", "p25"]);
    let nato = c
        .list_clauses(list(pb::ListClausesRequest {
            topic: "nato".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&nato), vec!["p3", "p4", "p7", "p8"]);
    let ukraine_opposes = c
        .list_clauses(list(pb::ListClausesRequest {
            party_id: "ukraine".into(),
            position: pb::Position::Oppose as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ids(&ukraine_opposes), vec!["p6", "p7"]);
    let agreed = c
        .list_clauses(list(pb::ListClausesRequest {
            statuses: vec![pb::ClauseStatus::Agreed as i32],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(agreed.clauses.is_empty());

    // Paging: a write between pages does not shift the listing.
    let page1 = c
        .list_clauses(list(pb::ListClausesRequest {
            page_size: 10,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page1.clauses.len(), 10);
    c.amend_clause(pb::AmendClauseRequest {
        plan_id: PLAN.into(),
        clause_id: "p15".into(),
        number: 1,
        update_mask: Some(FieldMask {
            paths: vec!["number".into()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut all = ids(&page1);
    let mut token = page1.next_page_token;
    while !token.is_empty() {
        let page = c
            .list_clauses(list(pb::ListClausesRequest {
                page_size: 10,
                page_token: token,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.revision, page1.revision);
        all.extend(ids(&page));
        token = page.next_page_token;
    }
    assert_eq!(all, (1..=28).map(|n| format!("p{n}")).collect::<Vec<_>>());
    // A token used with other filters, or garbage, is rejected.
    let err = c
        .list_clauses(list(pb::ListClausesRequest {
            topic: "nato".into(),
            page_token: "bm9wZQ".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&err), "page_token");
    let err = c
        .list_clauses(list(pb::ListClausesRequest {
            party_id: "ukraine".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&err), "position");
}

#[tokio::test]
async fn list_revisions_filters_by_clause_and_party_and_pages() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.set_stance(stance("p2", "russia", pb::Position::Amend))
        .await
        .unwrap();
    c.set_stance(stance("p3", "russia", pb::Position::Support))
        .await
        .unwrap();
    c.set_stance(stance("p3", "ukraine", pb::Position::Support))
        .await
        .unwrap();
    let list = |req: pb::ListRevisionsRequest| pb::ListRevisionsRequest {
        plan_id: PLAN.into(),
        ..req
    };
    let russia = c
        .list_revisions(list(pb::ListRevisionsRequest {
            party_id: "russia".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert!(russia
        .iter()
        .all(|r| r.party_id == "russia" && r.kind == pb::ChangeKind::StanceSet as i32));
    assert!(russia.windows(2).all(|w| w[0].revision < w[1].revision));
    let tail: Vec<&str> = russia
        .iter()
        .rev()
        .take(2)
        .map(|r| r.clause_id.as_str())
        .collect();
    assert_eq!(tail, vec!["p3", "p2"]);
    let p3_russia = c
        .list_revisions(list(pb::ListRevisionsRequest {
            party_id: "russia".into(),
            clause_id: "p3".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(p3_russia.len(), 1);
    // Whole log, paged by 7: gap-free and complete.
    let head = server.store.head().unwrap();
    let seen: Vec<u64> = common::all_revisions(&mut c, 7)
        .await
        .iter()
        .map(|r| r.revision)
        .collect();
    assert_eq!(seen, (1..=head).collect::<Vec<_>>());
    // A range.
    let range = c
        .list_revisions(pb::ListRevisionsRequest {
            start_revision: 5,
            end_revision: 9,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(
        range.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![5, 6, 7, 8, 9]
    );
    let err = c
        .list_revisions(pb::ListRevisionsRequest {
            party_id: "russia".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&err), "plan_id");
}

#[tokio::test]
async fn every_error_code_and_rejected_writes_leave_no_trace() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();
    let p1_before = c.latest_clause(PLAN, "p1").await;

    let cases: Vec<(tonic::Status, Code)> = vec![
        (
            c.get_plan(pb::GetPlanRequest {
                plan_id: "nope".into(),
            })
            .await
            .unwrap_err(),
            Code::NotFound,
        ),
        (
            c.set_stance(stance("p99", "russia", pb::Position::Support))
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
        (
            c.set_stance(stance("p1", "china", pb::Position::Support))
                .await
                .unwrap_err(),
            Code::NotFound,
        ),
        (
            c.create_clause(pb::CreateClauseRequest {
                plan_id: PLAN.into(),
                clause_id: "p1".into(),
                number: 1,
                title: "dup".into(),
                text: "dup".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            Code::AlreadyExists,
        ),
        (
            c.create_plan(pb::CreatePlanRequest {
                plan_id: PLAN.into(),
                title: "dup".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            Code::AlreadyExists,
        ),
        (
            c.set_stance(pb::SetStanceRequest {
                expected_version: 1,
                ..stance("p1", "russia", pb::Position::Support)
            })
            .await
            .unwrap_err(),
            Code::Aborted,
        ),
        (
            c.set_stance(stance("p1", "russia", pb::Position::Unspecified))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            c.set_stance(pb::SetStanceRequest {
                position: 42,
                ..stance("p1", "russia", pb::Position::Support)
            })
            .await
            .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            c.set_stance(pb::SetStanceRequest {
                note: "x".repeat(4001),
                ..stance("p1", "russia", pb::Position::Support)
            })
            .await
            .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            c.set_stance(pb::SetStanceRequest {
                source_url: "javascript:alert(1)".into(),
                ..stance("p1", "russia", pb::Position::Support)
            })
            .await
            .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            c.set_stance(pb::SetStanceRequest {
                clause_id: "P1!".into(),
                ..stance("p1", "russia", pb::Position::Support)
            })
            .await
            .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            c.amend_clause(pb::AmendClauseRequest {
                plan_id: PLAN.into(),
                clause_id: "p1".into(),
                update_mask: Some(FieldMask {
                    paths: vec!["status".into()],
                }),
                ..Default::default()
            })
            .await
            .unwrap_err(),
            Code::InvalidArgument,
        ),
        (
            c.set_clause_status(pb::SetClauseStatusRequest {
                plan_id: PLAN.into(),
                clause_id: "p1".into(),
                status: 0,
                ..Default::default()
            })
            .await
            .unwrap_err(),
            Code::InvalidArgument,
        ),
    ];
    for (i, (status, code)) in cases.iter().enumerate() {
        assert_eq!(status.code(), *code, "case {i}: {status:?}");
        if *code == Code::InvalidArgument {
            assert!(!bad_request_field(status).is_empty(), "case {i}");
        }
    }
    assert!(
        cases[5].0.message().contains("current version is"),
        "{}",
        cases[5].0.message()
    );
    assert_eq!(
        server.store.head().unwrap(),
        head,
        "a rejected write committed something"
    );
    let p1_after = c.latest_clause(PLAN, "p1").await;
    assert_eq!(p1_before, p1_after);
}

#[tokio::test]
async fn a_clause_over_its_text_limit_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    // Each field within its own limit, about 34 KB per stance.
    let full = |party: &str| stance_at_limits("p2", party);
    for party in ["ukraine", "russia", "united-states"] {
        c.set_stance(full(party)).await.unwrap();
    }
    let head = server.store.head().unwrap();
    let before = c.latest_clause(PLAN, "p2").await;
    // The fourth takes the clause past 128 KiB of text in all.
    let err = c.set_stance(full("europe")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(bad_request_field(&err), "note");
    assert!(
        err.message().contains("the limit per clause is 131072"),
        "{}",
        err.message()
    );
    assert_eq!(
        server.store.head().unwrap(),
        head,
        "the refused write committed"
    );
    assert_eq!(c.latest_clause(PLAN, "p2").await, before);
    // A smaller stance for the same party still fits.
    c.set_stance(pb::SetStanceRequest {
        note: "short".into(),
        ..full("europe")
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn state_survives_a_restart_and_is_not_reseeded() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let rev = c
        .set_stance(stance("p26", "ukraine", pb::Position::Oppose))
        .await
        .unwrap()
        .into_inner();
    drop(c);
    let (dir, keep) = server.stop().await;
    let server = TestServer::start_with(common::reopen_config(&dir)).await;
    assert_eq!(server.store.head().unwrap(), rev.revision);
    let mut c = server.client().await;
    let p26 = c.latest_clause(PLAN, "p26").await;
    assert_eq!(p26.stances[0].position, pb::Position::Oppose as i32);
    assert!(server.store.check().unwrap().ok());
    drop(keep);
}

#[tokio::test]
async fn summary_diff_and_lineage() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let summary = |at_revision| pb::GetSummaryRequest {
        plan_id: PLAN.into(),
        at_revision,
        at_time: None,
    };
    let before = c.get_summary(summary(0)).await.unwrap().into_inner();
    assert_eq!(before.clause_count, 28);
    let contested: Vec<&str> = before
        .contested
        .iter()
        .map(|c| c.clause_id.as_str())
        .collect();
    assert_eq!(contested, vec!["p3", "p6", "p7", "p14", "p21", "p25"]);
    let p21 = &before.contested[4];
    assert_eq!(p21.opposed_by, vec!["ukraine"]);
    // Ukraine drops its red line on p21 -> no longer contested.
    c.set_stance(stance("p21", "ukraine", pb::Position::Amend))
        .await
        .unwrap();
    let after = c.get_summary(summary(0)).await.unwrap().into_inner();
    assert!(!after.contested.iter().any(|c| c.clause_id == "p21"));
    assert_eq!(after.parties[0].red_line, before.parties[0].red_line - 1);
    // The earlier revision still answers as before.
    let again = c
        .get_summary(summary(before.revision))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, before);
    // Dropping a clause takes it out of the counts but not by_status.
    c.set_clause_status(pb::SetClauseStatusRequest {
        plan_id: PLAN.into(),
        clause_id: "p14".into(),
        status: pb::ClauseStatus::Dropped as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    let dropped = c.get_summary(summary(0)).await.unwrap().into_inner();
    assert_eq!(dropped.clause_count, 27);
    assert!(dropped
        .by_status
        .iter()
        .any(|s| s.status == pb::ClauseStatus::Dropped as i32 && s.count == 1));

    // Diff across several versions of p6.
    let amend = |text: &str| pb::AmendClauseRequest {
        plan_id: PLAN.into(),
        clause_id: "p6".into(),
        text: text.into(),
        update_mask: Some(FieldMask {
            paths: vec!["text".into()],
        }),
        ..Default::default()
    };
    let first = c
        .amend_clause(amend(
            "Ukraine's armed forces are limited to 800,000 personnel.",
        ))
        .await
        .unwrap()
        .into_inner();
    c.set_stance(stance("p6", "ukraine", pb::Position::Support))
        .await
        .unwrap();
    let diff = c
        .diff_clause(pb::DiffClauseRequest {
            plan_id: PLAN.into(),
            clause_id: "p6".into(),
            from_version: 1,
            to_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let ops: Vec<(i32, &str)> = diff.text.iter().map(|e| (e.op, e.text.as_str())).collect();
    assert!(
        ops.contains(&(pb::EditOp::Delete as i32, "600,000")),
        "{ops:?}"
    );
    assert!(
        ops.contains(&(pb::EditOp::Insert as i32, "800,000")),
        "{ops:?}"
    );
    assert!(!diff.title_changed);
    // From v1 (no stances) to now: every party that has a position changed.
    let ukraine = diff
        .stances
        .iter()
        .find(|s| s.party_id == "ukraine")
        .unwrap();
    assert_eq!(
        (ukraine.from, ukraine.to),
        (pb::Position::Unknown as i32, pb::Position::Support as i32)
    );
    assert_eq!(diff.to.unwrap().version, first.clause_version + 1);
    let err = c
        .diff_clause(pb::DiffClauseRequest {
            plan_id: PLAN.into(),
            clause_id: "p6".into(),
            from_version: 1,
            to_version: 999,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A derived draft, compared with its base.
    c.create_plan(pb::CreatePlanRequest {
        plan_id: "counter".into(),
        title: "Counter-proposal".into(),
        derived_from_plan_id: PLAN.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let copy = c.latest_clause("counter", "p7").await;
    assert_eq!(copy.derived_from.as_ref().unwrap().plan_id, PLAN);
    assert!(copy
        .stances
        .iter()
        .all(|s| s.position == pb::Position::Unknown as i32));
    c.amend_clause(pb::AmendClauseRequest {
        plan_id: "counter".into(),
        clause_id: "p7".into(),
        text: "NATO accession depends on consensus of the members.".into(),
        update_mask: Some(FieldMask {
            paths: vec!["text".into()],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let rows = c
        .compare_plans(pb::ComparePlansRequest {
            base_plan_id: PLAN.into(),
            plan_id: "counter".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    let change_of = |id: &str| rows.iter().find(|r| r.base_clause_id == id).unwrap().change;
    assert_eq!(change_of("p7"), pb::LineageChange::LineageAmended as i32);
    assert_eq!(change_of("p1"), pb::LineageChange::LineageUnchanged as i32);
    assert_eq!(change_of("p14"), pb::LineageChange::LineageDropped as i32);
}

#[tokio::test]
async fn seeded_e3_counter_proposal_compares_against_the_us_plan() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let e3 = c
        .get_plan(pb::GetPlanRequest {
            plan_id: "e3-counter-proposal".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e3.derived_from_plan_id, PLAN);
    assert_eq!(e3.parties.len(), 4);
    let rows = c
        .compare_plans(pb::ComparePlansRequest {
            base_plan_id: PLAN.into(),
            plan_id: "e3-counter-proposal".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .rows;
    assert_eq!(rows.len(), 28);
    let changed = |kind: pb::LineageChange| -> Vec<String> {
        rows.iter()
            .filter(|r| r.change == kind as i32)
            .map(|r| r.base_clause_id.clone())
            .collect()
    };
    assert_eq!(changed(pb::LineageChange::LineageDropped), vec!["p3"]);
    assert_eq!(
        changed(pb::LineageChange::LineageAmended),
        vec!["p2", "p4", "p5", "p6", "p7", "p8", "p10", "p14", "p21"]
    );
    assert_eq!(changed(pb::LineageChange::LineageUnchanged).len(), 18);
    // What changed in point 6 between the drafts, in words.
    let e3_p6 = c.latest_clause("e3-counter-proposal", "p6").await;
    assert!(e3_p6.text.contains("800,000"));
    assert_eq!(e3_p6.derived_from.unwrap().clause_id, "p6");
    // Europe supports its own edits; Russia's rejection is recorded with its source.
    let europe = e3_p6
        .stances
        .iter()
        .find(|s| s.party_id == "europe")
        .unwrap();
    assert_eq!(europe.position, pb::Position::Support as i32);
    let russia = e3_p6
        .stances
        .iter()
        .find(|s| s.party_id == "russia")
        .unwrap();
    assert_eq!(russia.position, pb::Position::Oppose as i32);
    assert!(russia.source_url.contains("kyivindependent"));
}

#[tokio::test]
async fn read_mask_trims_what_writes_apply_and_list_revisions_return() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();

    let rev = c
        .set_stance(pb::SetStanceRequest {
            read_mask: read_mask(&["revision", "clause_version"]),
            ..stance("p5", "europe", pb::Position::Support)
        })
        .await
        .unwrap()
        .into_inner();
    let version = c.latest_clause(PLAN, "p5").await.version;
    assert_eq!(
        rev,
        pb::Revision {
            revision: head + 1,
            clause_version: version,
            ..Default::default()
        }
    );
    // The mask trims the answer, not the commit: the revision is whole in the log.
    let logged = c
        .list_revisions(pb::ListRevisionsRequest {
            start_revision: head + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(logged.len(), 1);
    assert!(logged[0].clause.is_some() && logged[0].previous.is_some());
    assert_eq!(logged[0].party_id, "europe");

    // "*" is every field.
    let rev = c
        .set_clause_status(pb::SetClauseStatusRequest {
            plan_id: PLAN.into(),
            clause_id: "p5".into(),
            status: pb::ClauseStatus::Negotiating as i32,
            read_mask: read_mask(&["*"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rev.clause.is_some() && rev.previous.is_some() && rev.commit_time.is_some());

    // Apply masks every revision it returns.
    let applied = c
        .apply(pb::ApplyRequest {
            plan_id: PLAN.into(),
            changes: ["p6", "p7"]
                .into_iter()
                .map(|clause| pb::Change {
                    change: Some(pb::change::Change::SetStance(stance(
                        clause,
                        "russia",
                        pb::Position::Oppose,
                    ))),
                })
                .collect(),
            read_mask: read_mask(&["revision", "clause_id", "party_id"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    let want: Vec<pb::Revision> = [("p6", head + 3), ("p7", head + 4)]
        .into_iter()
        .map(|(clause, revision)| pb::Revision {
            revision,
            clause_id: clause.into(),
            party_id: "russia".into(),
            ..Default::default()
        })
        .collect();
    assert_eq!(applied, want);

    // ListRevisions takes a mask too.
    let listed = c
        .list_revisions(pb::ListRevisionsRequest {
            start_revision: head + 1,
            read_mask: read_mask(&["revision", "kind"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revisions;
    let kinds: Vec<(u64, i32)> = listed.iter().map(|r| (r.revision, r.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (head + 1, pb::ChangeKind::StanceSet as i32),
            (head + 2, pb::ChangeKind::StatusChanged as i32),
            (head + 3, pb::ChangeKind::StanceSet as i32),
            (head + 4, pb::ChangeKind::StanceSet as i32),
        ]
    );
    assert!(listed
        .iter()
        .all(|r| r.clause.is_none() && r.plan_id.is_empty()));
}

#[tokio::test]
async fn a_bad_read_mask_is_invalid_and_commits_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();

    let err = c
        .set_stance(pb::SetStanceRequest {
            read_mask: read_mask(&["revision", "clauseVersion"]),
            ..stance("p5", "europe", pb::Position::Support)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&err), "read_mask.paths[1]");
    assert!(
        err.message().contains("clause_version"),
        "{}",
        err.message()
    );

    // In Apply, the mask belongs on the batch, not on a change.
    let err = c
        .apply(pb::ApplyRequest {
            plan_id: PLAN.into(),
            changes: vec![pb::Change {
                change: Some(pb::change::Change::SetStance(pb::SetStanceRequest {
                    read_mask: read_mask(&["revision"]),
                    ..stance("p5", "europe", pb::Position::Support)
                })),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&err), "changes[0].set_stance.read_mask");

    let err = c
        .list_revisions(pb::ListRevisionsRequest {
            read_mask: read_mask(&["clause.title"]),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&err), "read_mask.paths[0]");

    assert_eq!(server.store.head().unwrap(), head, "nothing was committed");
}
