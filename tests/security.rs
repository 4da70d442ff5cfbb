//! Tokens and roles, author binding, TLS, safe defaults and hostile input.

mod common;

use std::path::Path;

use common::{bad_request_field, process, stance, TestServer, PLAN};
use peace_tracker::grpc::auth::hash_token;
use peace_tracker::pb;
use peace_tracker::pb::clause_tracker_client::ClauseTrackerClient;
use peace_tracker::server::{Config, Server};
use prost_types::FieldMask;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Code, Request};

const ROLES: [(&str, &str, Option<&str>); 4] = [
    ("admin-token", "admin", None),
    ("editor-token", "editor", None),
    ("ua-token", "delegate", Some("ukraine")),
    ("reader-token", "reader", None),
];

fn write_auth_file(dir: &Path, anonymous_read: bool) -> std::path::PathBuf {
    let mut text = format!("anonymous_read = {anonymous_read}\n");
    for (token, role, party) in ROLES {
        let name = format!("{role}-desk");
        text.push_str(&format!(
            "\n[[tokens]]\ntoken_sha256 = \"{}\"\nname = \"{name}\"\nrole = \"{role}\"\n",
            hash_token(token)
        ));
        if let Some(p) = party {
            text.push_str(&format!("party = \"{p}\"\n"));
        }
    }
    let path = dir.join("auth.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn server_with_auth(anonymous_read: bool) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.auth_file = Some(write_auth_file(dir.path(), anonymous_read));
    (TestServer::start_with(config).await, dir)
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    // A client-supplied author is never trusted when tokens are on.
    req.metadata_mut()
        .insert("x-author", "mallory".parse().unwrap());
    req
}

/// Runs write number `op` as `token`; `n` keeps created ids unique.
async fn write_op(
    c: &mut ClauseTrackerClient<Channel>,
    op: &str,
    token: Option<&str>,
    n: usize,
) -> Result<Vec<pb::Revision>, tonic::Status> {
    let one = |r: tonic::Response<pb::Revision>| vec![r.into_inner()];
    match op {
        "CreatePlan" => c
            .create_plan(with_token(
                pb::CreatePlanRequest {
                    plan_id: format!("plan-{n}"),
                    title: "t".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(one),
        "AddParty" => c
            .add_party(with_token(
                pb::AddPartyRequest {
                    plan_id: PLAN.into(),
                    party: Some(pb::Party {
                        party_id: format!("party-{n}"),
                        name: "P".into(),
                        required: false,
                    }),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(one),
        "CreateClause" => c
            .create_clause(with_token(
                pb::CreateClauseRequest {
                    plan_id: PLAN.into(),
                    clause_id: format!("x{n}"),
                    number: 100,
                    title: "t".into(),
                    text: "x".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(one),
        "AmendClause" => c
            .amend_clause(with_token(
                pb::AmendClauseRequest {
                    plan_id: PLAN.into(),
                    clause_id: "p1".into(),
                    title: format!("title {n}"),
                    update_mask: Some(FieldMask {
                        paths: vec!["title".into()],
                    }),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(one),
        "SetStance(ukraine)" => c
            .set_stance(with_token(
                stance("p1", "ukraine", pb::Position::Amend),
                token,
            ))
            .await
            .map(one),
        "SetStance(russia)" => c
            .set_stance(with_token(
                stance("p1", "russia", pb::Position::Amend),
                token,
            ))
            .await
            .map(one),
        "SetClauseStatus" => c
            .set_clause_status(with_token(
                pb::SetClauseStatusRequest {
                    plan_id: PLAN.into(),
                    clause_id: "p1".into(),
                    status: pb::ClauseStatus::Negotiating as i32,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(one),
        "Apply" => c
            .apply(with_token(
                pb::ApplyRequest {
                    plan_id: PLAN.into(),
                    changes: vec![pb::Change {
                        change: Some(pb::change::Change::SetStance(stance(
                            "p2",
                            "ukraine",
                            pb::Position::Amend,
                        ))),
                    }],
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(|r| r.into_inner().revisions),
        other => panic!("unknown op {other}"),
    }
}

#[tokio::test]
async fn every_role_against_every_write() {
    let (server, _dir) = server_with_auth(true).await;
    let mut c = server.client().await;
    let ops = [
        "CreatePlan",
        "AddParty",
        "CreateClause",
        "AmendClause",
        "SetStance(ukraine)",
        "SetStance(russia)",
        "SetClauseStatus",
        "Apply",
    ];
    // (token, author, allowed ops)
    let callers: [(Option<&str>, &str, &[&str]); 6] = [
        (Some("admin-token"), "admin-desk", &ops),
        (
            Some("editor-token"),
            "editor-desk",
            &[
                "CreateClause",
                "AmendClause",
                "SetStance(ukraine)",
                "SetStance(russia)",
                "SetClauseStatus",
                "Apply",
            ],
        ),
        (Some("ua-token"), "delegate-desk", &["SetStance(ukraine)"]),
        (Some("reader-token"), "reader-desk", &[]),
        (None, "", &[]),
        (Some("forged-token"), "", &[]),
    ];
    let mut n = 0;
    for (token, author, allowed) in callers {
        for op in ops {
            n += 1;
            let head = server.store.head().unwrap();
            let result = write_op(&mut c, op, token, n).await;
            if allowed.contains(&op) {
                let revs = result.unwrap_or_else(|e| panic!("{token:?} {op}: {e:?}"));
                assert!(
                    revs.iter().all(|r| r.author == author),
                    "{token:?} {op}: author bound to the token"
                );
            } else {
                let status = result.expect_err(&format!("{token:?} must not {op}"));
                let expected = if matches!(
                    token,
                    Some("admin-token" | "editor-token" | "ua-token" | "reader-token")
                ) {
                    Code::PermissionDenied
                } else {
                    Code::Unauthenticated
                };
                assert_eq!(status.code(), expected, "{token:?} {op}: {status:?}");
                if expected == Code::PermissionDenied {
                    assert!(status.message().contains("role"), "{}", status.message());
                }
                assert_eq!(
                    server.store.head().unwrap(),
                    head,
                    "{token:?} {op} committed something"
                );
            }
        }
    }
    // Reads need no token when anonymous_read = true.
    let read = c
        .get_clause(pb::GetClauseRequest {
            plan_id: PLAN.into(),
            clause_id: "p1".into(),
            ..Default::default()
        })
        .await;
    assert!(read.is_ok());
}

#[tokio::test]
async fn reads_need_a_token_without_anonymous_read() {
    let (server, _dir) = server_with_auth(false).await;
    let mut c = server.client().await;
    let get = pb::GetPlanRequest {
        plan_id: PLAN.into(),
    };
    let err = c.get_plan(get.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c.watch(pb::WatchRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(c
        .get_plan(with_token(get, Some("reader-token")))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_bad_auth_file_stops_startup_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth.toml");
    std::fs::write(&path, "anonymous_read = true\n\n[[tokens]]\ntoken_sha256 = \"abc\"\nname = \"x\"\nrole = \"admin\"\n").unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.auth_file = Some(path);
    let err = Server::open(config).await.err().unwrap();
    assert!(err.contains("line 3"), "{err}");
}

#[tokio::test]
async fn tls_serves_with_a_ca_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = Config::new(dir.path().join("data"));
    config.tls = Some((cert_path.clone(), key_path));
    let server = TestServer::start_with(config).await;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert.cert.pem()))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = ClauseTrackerClient::new(channel);
    let plan = c
        .get_plan(pb::GetPlanRequest {
            plan_id: PLAN.into(),
        })
        .await
        .unwrap();
    assert_eq!(plan.into_inner().parties.len(), 4);

    // Plaintext HTTP/2 against the TLS port fails.
    let plain = async {
        let mut p = ClauseTrackerClient::connect(format!("http://{}", server.addr))
            .await
            .ok()?;
        p.get_plan(pb::GetPlanRequest {
            plan_id: PLAN.into(),
        })
        .await
        .ok()
    };
    assert!(plain.await.is_none(), "plaintext must be refused");

    // grpcurl with -cacert works; -plaintext does not.
    let grpcurl = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    let addr = format!("localhost:{}", server.addr.port());
    let ok = tokio::process::Command::new(&grpcurl)
        .args(["-cacert"])
        .arg(&cert_path)
        .args([&addr, "grpc.health.v1.Health/Check"])
        .output()
        .await
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let plain = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &addr, "grpc.health.v1.Health/Check"])
        .output()
        .await
        .unwrap();
    assert!(!plain.status.success());
}

#[tokio::test]
async fn open_mode_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::open(Config::new(dir.path().join("data")))
        .await
        .unwrap();
    let err = server
        .check_exposure("0.0.0.0:50051".parse().unwrap())
        .unwrap_err();
    assert!(
        err.contains("--auth-file") && err.contains("--insecure-allow-open"),
        "{err}"
    );
    assert!(server
        .check_exposure("127.0.0.1:50051".parse().unwrap())
        .is_ok());
    assert!(server
        .check_exposure("[::1]:50051".parse().unwrap())
        .is_ok());
    // The binary refuses to start, and says why.
    let out = tokio::process::Command::new(process::BIN)
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("other"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--auth-file"));
}

#[tokio::test]
async fn hostile_input_gets_the_right_code_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let head = server.store.head().unwrap();
    let base = || stance("p1", "russia", pb::Position::Support);
    let stance_cases: Vec<(&str, pb::SetStanceRequest, &str)> = vec![
        (
            "oversized note",
            pb::SetStanceRequest {
                note: "n".repeat(4001),
                ..base()
            },
            "note",
        ),
        (
            "oversized quote",
            pb::SetStanceRequest {
                quote: "q".repeat(4001),
                ..base()
            },
            "quote",
        ),
        (
            "empty plan",
            pb::SetStanceRequest {
                plan_id: String::new(),
                ..base()
            },
            "plan_id",
        ),
        (
            "empty clause",
            pb::SetStanceRequest {
                clause_id: String::new(),
                ..base()
            },
            "clause_id",
        ),
        (
            "malformed id",
            pb::SetStanceRequest {
                party_id: "Rus sia".into(),
                ..base()
            },
            "party_id",
        ),
        (
            "path id",
            pb::SetStanceRequest {
                clause_id: "../p1".into(),
                ..base()
            },
            "clause_id",
        ),
        (
            "javascript url",
            pb::SetStanceRequest {
                source_url: "javascript:alert(1)".into(),
                ..base()
            },
            "source_url",
        ),
        (
            "data url",
            pb::SetStanceRequest {
                source_url: "data:text/html,x".into(),
                ..base()
            },
            "source_url",
        ),
        (
            "long url",
            pb::SetStanceRequest {
                source_url: format!("https://x.org/{}", "a".repeat(2100)),
                ..base()
            },
            "source_url",
        ),
        (
            "unknown enum",
            pb::SetStanceRequest {
                position: 77,
                ..base()
            },
            "position",
        ),
        (
            "unspecified",
            pb::SetStanceRequest {
                position: 0,
                ..base()
            },
            "position",
        ),
        (
            "control chars",
            pb::SetStanceRequest {
                note: "a\u{0}b".into(),
                ..base()
            },
            "note",
        ),
        (
            "bad timestamp",
            pb::SetStanceRequest {
                stated_at: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..base()
            },
            "stated_at",
        ),
        (
            "long reason",
            pb::SetStanceRequest {
                reason: "r".repeat(2001),
                ..base()
            },
            "reason",
        ),
    ];
    for (name, req, field) in stance_cases {
        let err = c.set_stance(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}");
        assert_eq!(bad_request_field(&err), field, "{name}");
    }
    let amend = |paths: Vec<&str>| pb::AmendClauseRequest {
        plan_id: PLAN.into(),
        clause_id: "p1".into(),
        title: "t".into(),
        update_mask: Some(FieldMask {
            paths: paths.into_iter().map(String::from).collect(),
        }),
        ..Default::default()
    };
    for paths in [vec!["status"], vec!["*"], vec!["title", "stances"], vec![]] {
        let err = c.amend_clause(amend(paths.clone())).await.unwrap_err();
        assert_eq!(bad_request_field(&err), "update_mask", "{paths:?}");
    }
    let err = c
        .list_revisions(pb::ListRevisionsRequest {
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&err), "page_token");
    let err = c
        .create_clause(pb::CreateClauseRequest {
            plan_id: PLAN.into(),
            clause_id: "p99".into(),
            number: 99,
            title: "t".into(),
            text: "x".repeat(20_001),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&err), "text");
    let err = c
        .create_clause(pb::CreateClauseRequest {
            plan_id: PLAN.into(),
            clause_id: "p99".into(),
            number: 99,
            title: "t".into(),
            text: "x".into(),
            topics: (0..33).map(|i| format!("t{i}")).collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad_request_field(&err), "topics");
    // Over the 1 MiB request limit: RESOURCE_EXHAUSTED.
    let huge = pb::CreateClauseRequest {
        plan_id: PLAN.into(),
        clause_id: "p99".into(),
        number: 99,
        title: "t".into(),
        text: "x".into(),
        reason: "r".repeat(1_100_000),
        ..Default::default()
    };
    assert_eq!(
        c.create_clause(huge).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    assert_eq!(
        server.store.head().unwrap(),
        head,
        "hostile input committed something"
    );
    assert!(server.store.check().unwrap().ok());
}
