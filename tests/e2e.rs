//! End to end: the built binary driven by the real grpcurl 1.8.6 (which speaks
//! reflection v1alpha), plus reflection v1 from a Rust client.

mod common;

use std::process::{Output, Stdio};

use common::process;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn grpcurl_bin() -> String {
    std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into())
}

async fn grpcurl(args: &[&str]) -> Output {
    Command::new(grpcurl_bin())
        .args(args)
        .output()
        .await
        .expect("grpcurl is installed (scripts/test.sh installs it)")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn grpcurl_lists_describes_reads_writes_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = process::spawn(&dir.path().join("data"), &[]).await;
    let addr = server.addr.to_string();
    let version = grpcurl(&["-version"]).await;
    assert!(
        String::from_utf8_lossy(&version.stderr).contains("1.8.6")
            || stdout(&version).contains("1.8.6"),
        "expected grpcurl 1.8.6"
    );

    let list = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(list.status.success());
    for service in ["peace.v1.ClauseTracker", "grpc.health.v1.Health"] {
        assert!(stdout(&list).contains(service), "{}", stdout(&list));
    }
    let describe = grpcurl(&["-plaintext", &addr, "describe", "peace.v1.ClauseTracker"]).await;
    assert!(describe.status.success());
    assert!(stdout(&describe)
        .contains("rpc Watch ( .peace.v1.WatchRequest ) returns ( stream .peace.v1.WatchEvent )"));
    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
    assert!(stdout(&health).contains("SERVING"), "{}", stdout(&health));

    let read = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"plan_id":"us-28-point","clause_id":"p21"}"#,
        &addr,
        "peace.v1.ClauseTracker/GetClause",
    ])
    .await;
    assert!(read.status.success());
    let clause: serde_json::Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(clause["number"], 21);
    assert_eq!(clause["stances"][0]["position"], "POSITION_RED_LINE");
    assert_eq!(clause["consensus"], "CONSENSUS_CONTESTED");

    let write = grpcurl(&[
        "-plaintext",
        "-H",
        "x-author: e2e-desk",
        "-d",
        r#"{"plan_id":"us-28-point","clause_id":"p21","party_id":"europe","position":"POSITION_OPPOSE","note":"e2e"}"#,
        &addr,
        "peace.v1.ClauseTracker/SetStance",
    ])
    .await;
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    let rev: serde_json::Value = serde_json::from_slice(&write.stdout).unwrap();
    assert_eq!(rev["author"], "e2e-desk");
    assert_eq!(rev["kind"], "CHANGE_KIND_STANCE_SET");

    // A read mask (grpcurl 1.8.6 takes a FieldMask as {"paths": [...]}) trims the answer.
    let slim = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"plan_id":"us-28-point","clause_id":"p21","party_id":"europe","position":"POSITION_AMEND","read_mask":{"paths":["revision","clause_version"]}}"#,
        &addr,
        "peace.v1.ClauseTracker/SetStance",
    ])
    .await;
    assert!(
        slim.status.success(),
        "{}",
        String::from_utf8_lossy(&slim.stderr)
    );
    let slim: serde_json::Value = serde_json::from_slice(&slim.stdout).unwrap();
    let mut fields: Vec<&String> = slim.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["clauseVersion", "revision"], "{slim}");
    let next = rev["revision"].as_str().unwrap().parse::<u64>().unwrap() + 1;
    assert_eq!(slim["revision"], next.to_string());

    // grpcurl exits 64 + the status code: NOT_FOUND (5) -> 69, INVALID_ARGUMENT (3) -> 67.
    let missing = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"plan_id":"us-28-point","clause_id":"p99"}"#,
        &addr,
        "peace.v1.ClauseTracker/GetClause",
    ])
    .await;
    assert_eq!(missing.status.code(), Some(69));
    let invalid = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"plan_id":"us-28-point","clause_id":"p1","party_id":"russia","position":"POSITION_SUPPORT","source_url":"javascript:alert(1)"}"#,
        &addr,
        "peace.v1.ClauseTracker/SetStance",
    ])
    .await;
    assert_eq!(invalid.status.code(), Some(67));
    let err = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        err.contains("google.rpc.BadRequest") && err.contains("source_url"),
        "{err}"
    );
}

#[tokio::test]
async fn grpcurl_watch_prints_replayed_then_live_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let server = process::spawn(&dir.path().join("data"), &[]).await;
    let addr = server.addr.to_string();
    let mut watch = Command::new(grpcurl_bin())
        .args([
            "-plaintext",
            "-d",
            r#"{"plan_id":"us-28-point","clause_ids":["p21"],"start_revision":1}"#,
            &addr,
            "peace.v1.ClauseTracker/Watch",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // Replay: p21's seeded history, then the caught-up progress.
    let mut replayed = 0;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("\"clauseVersion\"") {
            replayed += 1;
        }
        if line.contains("\"caughtUp\": true") {
            break;
        }
    }
    assert!(replayed >= 4, "replayed {replayed} revisions of p21");
    // Live: a new write shows up.
    let write = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"plan_id":"us-28-point","clause_id":"p21","party_id":"russia","position":"POSITION_AMEND","note":"live-marker"}"#,
        &addr,
        "peace.v1.ClauseTracker/SetStance",
    ])
    .await;
    assert!(write.status.success());
    let mut seen_live = false;
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("live-marker") {
            seen_live = true;
            break;
        }
    }
    assert!(seen_live);
    watch.start_kill().unwrap();
}

#[tokio::test]
async fn reflection_v1_lists_every_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let server = common::TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in ["peace.v1.ClauseTracker", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == service), "{names:?}");
    }
}

/// Every single-line grpcurl command of the README's cookbook works verbatim
/// against a freshly seeded server (Watch commands must print before we stop them).
#[tokio::test]
async fn the_readme_cookbook_works_verbatim() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = process::spawn(&dir.path().join("data"), &[]).await;
    let port = server.addr.port().to_string();
    let mut in_sh = false;
    let mut ran = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        let line = line.trim();
        if !in_sh
            || !line.starts_with("grpcurl ")
            || line.contains("$TOKEN")
            || line.ends_with('\\')
        {
            continue;
        }
        let command = line.replace("localhost:50051", &format!("localhost:{port}"));
        let grpcurl = grpcurl_bin();
        let command = command.replacen("grpcurl", &grpcurl, 1);
        ran += 1;
        if command.contains("/Watch") {
            let mut child = Command::new("bash")
                .args(["-c", &format!("exec {command}")])
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let first = lines.next_line().await.unwrap();
            assert_eq!(first.as_deref(), Some("{"), "{line}");
            child.start_kill().unwrap();
            continue;
        }
        let out = Command::new("bash")
            .args(["-c", &command])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "README command failed: {line}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(ran >= 40, "only {ran} cookbook commands found");
}
