//! `peace-tracker`: parse flags, init tracing, run the server (or a tool command).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use peace_tracker::server::{Config, Server};
use peace_tracker::store::{Durability, Store};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: see `Cargo.toml` for why.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tracks a negotiated peace plan clause by clause over gRPC.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "PEACE_TRACKER_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Directory of the embedded store (created if missing).
    #[arg(
        long,
        env = "PEACE_TRACKER_DATA_DIR",
        default_value = "peace-data",
        global = true
    )]
    data_dir: PathBuf,
    /// Do not seed an empty store with the 28-point plan.
    #[arg(long)]
    no_seed: bool,
    /// sync: acknowledge a write after fsync; relaxed: after the write, flushed every 500 ms.
    #[arg(long, value_enum, default_value = "sync")]
    durability: Durability,
    /// How often (ms) latest states and indexes are written to sled behind the log. A crash
    /// loses none (they are rebuilt from the log on the next start); longer means fewer sled
    /// writes, more memory and a longer rebuild after a crash.
    #[arg(long, default_value_t = peace_tracker::store::WRITE_BACK_EVERY.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    write_back_ms: u64,
    /// TOML file of hashed bearer tokens and roles; without it the server is open (loopback only).
    #[arg(long, env = "PEACE_TRACKER_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve without --auth-file on a non-loopback address. Anyone who reaches it can write.
    #[arg(long)]
    insecure_allow_open: bool,
    /// Most concurrent Watch streams; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 20_000)]
    max_watchers: usize,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Verify the whole store (gap-free log, every clause equals the replay of its revisions).
    Check,
    /// Rewrite the store into a fresh data dir without the space sled keeps for removed keys
    /// (after an upgrade); the old dir is kept as {data-dir}.before-compact. Stop the server first.
    Compact,
    /// Print the SHA-256 of a token read from stdin, for the auth file.
    HashToken,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Some(Command::HashToken) => {
            let mut token = String::new();
            if std::io::stdin().read_line(&mut token).is_err() || token.trim().is_empty() {
                eprintln!("error: give the token on standard input");
                return ExitCode::FAILURE;
            }
            println!("{}", peace_tracker::grpc::auth::hash_token(&token));
            ExitCode::SUCCESS
        }
        Some(Command::Check) => check(&cli.data_dir),
        Some(Command::Compact) => compact(&cli.data_dir),
        None => serve(cli),
    }
}

fn compact(data_dir: &std::path::Path) -> ExitCode {
    if !data_dir.exists() {
        eprintln!("error: no store at {}", data_dir.display());
        return ExitCode::FAILURE;
    }
    match Store::compact(data_dir) {
        Ok(done) => {
            let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
            println!(
                "{}: {} revisions, {:.1} MiB -> {:.1} MiB; the old data dir is kept at {} (delete it once you are satisfied)",
                data_dir.display(),
                done.revisions,
                mib(done.bytes_before),
                mib(done.bytes_after),
                done.kept.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("compact failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(data_dir: &std::path::Path) -> ExitCode {
    if !data_dir.exists() {
        eprintln!("error: no store at {}", data_dir.display());
        return ExitCode::FAILURE;
    }
    let report = match Store::open_unchecked(data_dir, None).and_then(|s| s.check()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("check failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{}: {} revisions, {} plans, {} clauses",
        data_dir.display(),
        report.revisions,
        report.plans,
        report.clauses
    );
    warn_of_legacy_segments(data_dir);
    if report.ok() {
        println!("ok: the log is gap-free and every record equals the replay of its revisions");
        ExitCode::SUCCESS
    } else {
        for p in &report.problems {
            println!("problem: {p}");
        }
        println!("{} problem(s) found", report.problems.len());
        ExitCode::FAILURE
    }
}

/// Tells the operator of a store made with sled's default segment size (not
/// an inconsistency, so not a `check` failure): see `store::SEGMENT_SIZE`.
fn warn_of_legacy_segments(data_dir: &std::path::Path) {
    use peace_tracker::store::{segment_size_of, SEGMENT_SIZE};
    let Ok(size) = segment_size_of(data_dir) else {
        return;
    };
    if size == SEGMENT_SIZE {
        return;
    }
    let blobs = std::fs::read_dir(data_dir.join("blobs")).map_or(0, |dir| dir.count());
    println!(
        "warning: this store uses sled's default {} KiB segments, with which sled writes large \
         records to blob files it never fsyncs ({blobs} under blobs/ now); stop the server and \
         run `peace-tracker compact --data-dir {}` to rewrite it with {} MiB segments",
        size / 1024,
        data_dir.display(),
        SEGMENT_SIZE / (1024 * 1024)
    );
}

fn serve(cli: Cli) -> ExitCode {
    let data_dir = cli.data_dir.clone();
    let config = Config {
        seed: !cli.no_seed,
        durability: cli.durability,
        write_back: std::time::Duration::from_millis(cli.write_back_ms),
        auth_file: cli.auth_file,
        tls: cli.tls_cert.zip(cli.tls_key),
        insecure_allow_open: cli.insecure_allow_open,
        max_watchers: cli.max_watchers,
        ..Config::new(cli.data_dir)
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let server = Server::open(config).await?;
        server.check_exposure(cli.listen)?;
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
        // Installed before the "serving" line; until here a signal simply ends the process.
        let shutdown = shutdown_signal();
        server.serve(listener, shutdown).await
    });
    // Every task (and with it every handle on the store) ends with the runtime.
    drop(runtime);
    if result.is_ok() {
        checkpoint(&data_dir);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The shutdown checkpoint ([`Store::checkpoint`]): makes the next start fast.
/// A failure costs only that, so it is logged, not fatal.
fn checkpoint(data_dir: &std::path::Path) {
    let started = std::time::Instant::now();
    match Store::checkpoint(data_dir, peace_tracker::store::LOCK_PATIENCE) {
        Ok(()) => tracing::info!(
            ms = started.elapsed().as_millis() as u64,
            "checkpoint written; the next start will not replay the log"
        ),
        Err(e) => {
            tracing::warn!(cause = %e, "shutdown checkpoint failed; the next start replays the log")
        }
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: the server announces it is
/// serving before it polls this, and a signal arriving in between must still
/// shut it down gracefully rather than kill it. Needs a runtime context.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
