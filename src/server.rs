//! Wiring: open the store, seed it if empty, start the committer and the hub,
//! and serve `peace.v1.ClauseTracker`, health and reflection (v1 and v1alpha)
//! until the shutdown future completes.
//!
//! Shutdown order: health goes NOT_SERVING, open watch streams end with
//! `UNAVAILABLE` naming their last revision, tonic drains in-flight requests,
//! then the committer finishes its queue and flushes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::transport::{Identity, ServerTlsConfig};
use tracing::info;

use crate::coalesce::CoalescingStream;
use crate::domain::limits;
use crate::grpc::auth::Auth;
use crate::grpc::service::Tracker;
use crate::grpc::watch::WatchLimits;
use crate::hub::{self, Hub};
use crate::pb;
use crate::store::{Committer, CommitterHandle, Durability, Store, RELAXED_FLUSH_MS};

/// The encoded descriptor set of our protos, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("peace_descriptor");

/// Everything needed to open and serve a store.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the sled store lives.
    pub data_dir: PathBuf,
    /// Load the seeded plans into an empty store.
    pub seed: bool,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// How often derived records are written to sled behind the log.
    pub write_back: std::time::Duration,
    /// Auth file (TOML); `None` = open mode.
    pub auth_file: Option<PathBuf>,
    /// TLS certificate and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve open mode on a non-loopback address anyway.
    pub insecure_allow_open: bool,
    /// Most concurrent watch streams.
    pub max_watchers: usize,
    /// Revisions the hub keeps in memory.
    pub hub_capacity: usize,
}

impl Config {
    /// Defaults for a data dir: seeded, sync durability, open mode.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            seed: true,
            durability: Durability::Sync,
            write_back: crate::store::WRITE_BACK_EVERY,
            auth_file: None,
            tls: None,
            insecure_allow_open: false,
            max_watchers: 20_000,
            hub_capacity: hub::DEFAULT_CAPACITY,
        }
    }
}

/// An opened store with its committer and hub, ready to serve.
pub struct Server {
    config: Config,
    store: Store,
    hub: Hub,
    committer: Committer,
    handle: CommitterHandle,
    auth: Arc<Auth>,
    tls: Option<ServerTlsConfig>,
}

impl Server {
    /// Opens the store (checking it), seeds an empty one, starts the committer.
    pub async fn open(config: Config) -> Result<Server, String> {
        let auth = match &config.auth_file {
            Some(path) => Auth::load(path)?,
            None => Auth::Open,
        };
        let tls = match &config.tls {
            Some((cert, key)) => {
                let cert = std::fs::read(cert)
                    .map_err(|e| format!("cannot read --tls-cert {}: {e}", cert.display()))?;
                let key = std::fs::read(key)
                    .map_err(|e| format!("cannot read --tls-key {}: {e}", key.display()))?;
                Some(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            }
            None => None,
        };
        let flush_every = match config.durability {
            Durability::Sync => None,
            Durability::Relaxed => Some(RELAXED_FLUSH_MS),
        };
        let data_dir = config.data_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&data_dir, flush_every))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let head = store.head().map_err(|e| e.to_string())?;
        let hub = Hub::new(head, config.hub_capacity);
        let (committer, handle) = Committer::start(
            store.clone(),
            hub.clone(),
            config.durability,
            config.write_back,
        )
        .map_err(|e| e.to_string())?;
        if config.seed && head == 0 {
            let last = crate::seed::load(&handle)
                .await
                .map_err(|e| format!("seeding failed: {e}"))?;
            info!(revision = last, "seeded an empty store");
        }
        Ok(Server {
            config,
            store,
            hub,
            committer,
            handle,
            auth: Arc::new(auth),
            tls,
        })
    }

    /// The hub (tests watch its watcher count).
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// The store.
    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Refuses an open (no auth file) server on a non-loopback address.
    pub fn check_exposure(&self, addr: SocketAddr) -> Result<(), String> {
        if self.auth.is_open() && !addr.ip().is_loopback() && !self.config.insecure_allow_open {
            return Err(format!(
                "refusing to serve writes without authentication on {addr}, which is not a loopback address: \
                 add --auth-file FILE (or, at your own risk, --insecure-allow-open)"
            ));
        }
        Ok(())
    }

    /// Serves on `listener` until `shutdown` completes, then drains and stops.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        self.check_exposure(addr)?;
        let tracker = Tracker::new(
            self.store.clone(),
            self.handle.clone(),
            self.hub.clone(),
            Arc::clone(&self.auth),
            WatchLimits::new(self.config.max_watchers),
        );
        let service = pb::clause_tracker_server::ClauseTrackerServer::new(tracker)
            .max_decoding_message_size(limits::MAX_DECODED_BYTES)
            .max_encoding_message_size(64 * 1024 * 1024);

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<pb::clause_tracker_server::ClauseTrackerServer<Tracker>>()
            .await;
        let reflection = |builder: tonic_reflection::server::Builder<'static>| {
            builder
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc.BadRequest, so clients can decode error details.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection(tonic_reflection::server::Builder::configure())
            .build_v1()
            .map_err(|e| e.to_string())?;
        let reflection_v1alpha = reflection(tonic_reflection::server::Builder::configure())
            .build_v1alpha()
            .map_err(|e| e.to_string())?;

        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(Some(1024))
            // Unary handlers get 30 s; a stream's timeout ends when its headers are sent.
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true);
        if let Some(tls) = self.tls.clone() {
            builder = builder
                .tls_config(tls)
                .map_err(|e| format!("TLS setup failed: {e}"))?;
        }
        let head = self.hub.head();
        info!(
            %addr,
            data_dir = %self.config.data_dir.display(),
            revision = head,
            tls = self.tls.is_some(),
            auth = if self.auth.is_open() { "open" } else { "tokens" },
            "peace-tracker serving"
        );
        // Nagle's algorithm against delayed ACKs costs ~40 ms per small response.
        let tls = self.tls.is_some();
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)))
            // One write per burst of HTTP/2 frames, not one per frame, in
            // plaintext; under TLS a handshake must not wait (src/coalesce.rs).
            .map(move |accepted| {
                accepted.map(if tls {
                    CoalescingStream::passthrough
                } else {
                    CoalescingStream::new
                })
            });
        let hub = self.hub.clone();
        let result = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                info!("shutting down: health NOT_SERVING, ending watch streams, draining requests");
                health
                    .set_not_serving::<pb::clause_tracker_server::ClauseTrackerServer<Tracker>>()
                    .await;
                // Every watch stream ends with UNAVAILABLE naming where to resume.
                hub.close();
            })
            .await;
        self.hub.close();
        // The committer ends once every handle is gone: finish its queue, flush.
        let Server {
            committer, handle, ..
        } = self;
        drop(handle);
        tokio::task::spawn_blocking(move || committer.join())
            .await
            .map_err(|e| e.to_string())?;
        info!("stopped");
        result.map_err(|e| format!("server error: {e}"))
    }
}
