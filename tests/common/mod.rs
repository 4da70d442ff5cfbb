//! Starts a real server in-process on 127.0.0.1:0 over a temp sled store.
#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use peace_tracker::hub::Hub;
use peace_tracker::pb;
use peace_tracker::pb::clause_tracker_client::ClauseTrackerClient;
use peace_tracker::server::{Config, Server};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const PLAN: &str = "us-28-point";

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    pub store: peace_tracker::store::Store,
    pub data_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A seeded server over a fresh temp dir.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::new(dir.path().join("data"));
        let mut server = TestServer::start_with(config).await;
        server._dir = Some(dir);
        server
    }

    /// An unseeded server over a fresh temp dir.
    pub async fn start_empty() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path().join("data"));
        config.seed = false;
        let mut server = TestServer::start_with(config).await;
        server._dir = Some(dir);
        server
    }

    pub async fn start_with(config: Config) -> TestServer {
        let data_dir = config.data_dir.clone();
        let server = Server::open(config).await.expect("server opens");
        let hub = server.hub();
        let store = server.store();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            hub,
            store,
            data_dir,
            stop: Some(stop),
            task: Some(task),
            _dir: None,
        }
    }

    pub async fn client(&self) -> ClauseTrackerClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connects");
        ClauseTrackerClient::new(channel)
    }

    /// Graceful shutdown; returns the data dir's owner so it can be reopened.
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.stop.take().unwrap().send(()).ok();
        self.task
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("clean shutdown");
        (self.data_dir.clone(), self._dir.take())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The store's sled database opened directly (the server must be stopped).
pub fn raw_sled(dir: &Path) -> sled::Db {
    peace_tracker::store::open_raw(dir).unwrap()
}

pub fn reopen_config(dir: &Path) -> Config {
    Config::new(dir.to_path_buf())
}

pub fn stance(clause: &str, party: &str, position: pb::Position) -> pb::SetStanceRequest {
    pb::SetStanceRequest {
        plan_id: PLAN.into(),
        clause_id: clause.into(),
        party_id: party.into(),
        position: position as i32,
        ..Default::default()
    }
}

/// A stance whose note and quote are at the 4,000-character limit in 4-byte
/// characters (16,000 bytes each), with a ~2 KB source URL: about 34 KB.
pub fn stance_at_limits(clause: &str, party: &str) -> pb::SetStanceRequest {
    pb::SetStanceRequest {
        note: "\u{1D11E}".repeat(4000),
        quote: "\u{1D11E}".repeat(4000),
        source_url: format!("https://example.org/{}", "a".repeat(2000)),
        ..stance(clause, party, pb::Position::Amend)
    }
}

pub fn bad_request_field(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let bad = details.bad_request().expect("a BadRequest detail");
    bad.field_violations[0].field.clone()
}

/// A `read_mask` naming these `Revision` fields.
pub fn read_mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// Every revision in the log, oldest first, read page by page.
pub async fn all_revisions(
    client: &mut ClauseTrackerClient<Channel>,
    page_size: i32,
) -> Vec<pb::Revision> {
    let request = pb::ListRevisionsRequest {
        page_size,
        ..Default::default()
    };
    every_page_of_revisions(client, request).await
}

/// Every revision `request` lists, following its pages to the end.
pub async fn every_page_of_revisions(
    client: &mut ClauseTrackerClient<Channel>,
    mut request: pb::ListRevisionsRequest,
) -> Vec<pb::Revision> {
    let mut all = Vec::new();
    loop {
        let page = client
            .list_revisions(request.clone())
            .await
            .unwrap()
            .into_inner();
        all.extend(page.revisions);
        if page.next_page_token.is_empty() {
            return all;
        }
        request.page_token = page.next_page_token;
    }
}

/// Reads that many tests share.
#[allow(async_fn_in_trait)]
pub trait ReadExt {
    /// The clause's latest version; panics on any error.
    async fn latest_clause(&mut self, plan_id: &str, clause_id: &str) -> pb::Clause;
}

impl ReadExt for ClauseTrackerClient<Channel> {
    async fn latest_clause(&mut self, plan_id: &str, clause_id: &str) -> pb::Clause {
        self.get_clause(pb::GetClauseRequest {
            plan_id: plan_id.into(),
            clause_id: clause_id.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("GetClause {plan_id}/{clause_id}: {e}"))
        .into_inner()
    }
}
