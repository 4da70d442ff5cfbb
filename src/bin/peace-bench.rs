//! `peace-bench`: measures peace-tracker (and, built with `--features etcd`,
//! etcd) with one harness, the way etcd's own benchmark tool measures etcd.
//!
//! - `write`: durable writes, N in flight (SetStance spread over clauses and
//!   parties; etcd: put of a same-sized value under one key per clause/party);
//! - `read`: point reads, N in flight (GetClause; etcd: serializable get);
//! - `watch`: W watch streams over a few connections and one writer at R
//!   writes/s; latency from write sent to received at each watcher, and a check
//!   that every watcher got every write in order.
//!
//! Each run prints a table, then as its LAST line one JSON object.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use peace_tracker::pb;
use peace_tracker::pb::clause_tracker_client::ClauseTrackerClient;
use tonic::transport::{Channel, Endpoint};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Benchmarks for peace-tracker and etcd.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Durable writes, N in flight.
    Write(LoadArgs),
    /// Point reads, N in flight.
    Read(LoadArgs),
    /// W watchers and one writer at R writes/s.
    Watch(WatchArgs),
    /// Fill a peace-tracker store up to N revisions with Apply batches (for size and cold-start figures).
    Fill(FillArgs),
}

#[derive(Args, Clone)]
struct FillArgs {
    #[command(flatten)]
    common: Common,
    /// Revisions to add.
    #[arg(long, default_value_t = 1_000_000)]
    revisions: u64,
    /// Changes per Apply batch.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    PeaceTracker,
    Etcd,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::PeaceTracker => "peace-tracker",
            Target::Etcd => "etcd",
        }
    }
}

#[derive(Args, Clone)]
struct Common {
    /// What to measure.
    #[arg(long, value_enum, default_value = "peace-tracker")]
    target: Target,
    /// Server address (host:port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: String,
    /// HTTP/2 connections to spread the load over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// peace-tracker only: the Revision fields that writes and watch events
    /// return (`read_mask`, AIP-157), comma-separated, e.g. `revision,reason`.
    /// Default: every field, the whole clause before and after.
    #[arg(long, value_delimiter = ',')]
    read_mask: Vec<String>,
}

impl Common {
    /// The `read_mask` to send, if any.
    fn field_mask(&self) -> Option<prost_types::FieldMask> {
        (!self.read_mask.is_empty()).then(|| prost_types::FieldMask {
            paths: self.read_mask.clone(),
        })
    }

    /// The mask as the JSON line reports it ("" = every field).
    fn read_mask_label(&self) -> String {
        self.read_mask.join(",")
    }

    /// Refuses options that do not apply to the target or the bench.
    fn check(&self, bench: &str) -> Result<(), BoxError> {
        if self.read_mask.is_empty() {
            return Ok(());
        }
        if self.target == Target::Etcd {
            return Err("--read-mask applies to peace-tracker only (etcd has no read mask)".into());
        }
        if bench == "read" {
            return Err("--read-mask applies to the write and watch benches".into());
        }
        if bench == "watch" && !self.read_mask.iter().any(|p| p == "reason" || p == "*") {
            // The writer numbers its writes in `reason`.
            return Err("the watch bench needs `reason` in --read-mask".into());
        }
        Ok(())
    }
}

#[derive(Args, Clone)]
struct LoadArgs {
    #[command(flatten)]
    common: Common,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Total requests.
    #[arg(long, default_value_t = 50_000)]
    requests: u64,
}

#[derive(Args, Clone)]
struct WatchArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent watch streams.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Writes per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Seconds of writing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

const PLAN: &str = "us-28-point";
const PARTIES: [&str; 4] = ["ukraine", "russia", "united-states", "europe"];
/// A stance note of typical size, so both targets move similar payloads.
const NOTE: &str = "Benchmark stance: a note of about two hundred bytes, the size of a typical editor's note with a short explanation of where the position was reported and by whom, padded to size.";

fn key_of(i: u64) -> (String, &'static str) {
    (format!("p{}", i % 28 + 1), PARTIES[(i / 28 % 4) as usize])
}

async fn channels(addr: &str, n: usize) -> Result<Vec<Channel>, BoxError> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(
            Endpoint::from_shared(format!("http://{addr}"))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(out)
}

/// One client of either target.
#[derive(Clone)]
enum Client {
    /// A peace-tracker client and the read mask its writes send.
    Peace(
        Box<ClauseTrackerClient<Channel>>,
        Option<prost_types::FieldMask>,
    ),
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::KvClient>),
}

async fn clients(common: &Common, n: usize) -> Result<Vec<Client>, BoxError> {
    match common.target {
        Target::PeaceTracker => Ok(channels(&common.addr, common.connections)
            .await?
            .into_iter()
            .cycle()
            .take(n)
            .map(|ch| Client::Peace(Box::new(ClauseTrackerClient::new(ch)), common.field_mask()))
            .collect()),
        #[cfg(feature = "etcd")]
        Target::Etcd => {
            let mut conns = Vec::new();
            for _ in 0..common.connections.max(1) {
                conns.push(
                    etcd_client::Client::connect([common.addr.as_str()], None)
                        .await?
                        .kv_client(),
                );
            }
            Ok(conns
                .into_iter()
                .cycle()
                .take(n)
                .map(|kv| Client::Etcd(Box::new(kv)))
                .collect())
        }
        #[cfg(not(feature = "etcd"))]
        Target::Etcd => Err(
            "this peace-bench was built without etcd support: build with --features etcd".into(),
        ),
    }
}

impl Client {
    async fn write(&mut self, i: u64, reason: String) -> Result<(), BoxError> {
        let (clause, party) = key_of(i);
        match self {
            Client::Peace(c, read_mask) => {
                c.set_stance(pb::SetStanceRequest {
                    plan_id: PLAN.into(),
                    clause_id: clause,
                    party_id: party.into(),
                    position: pb::Position::Amend as i32,
                    note: NOTE.into(),
                    reason,
                    read_mask: read_mask.clone(),
                    ..Default::default()
                })
                .await?;
            }
            #[cfg(feature = "etcd")]
            Client::Etcd(kv) => {
                kv.put(
                    format!("/peace/{PLAN}/{clause}/{party}"),
                    format!("{reason}|{NOTE}"),
                    None,
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn read(&mut self, i: u64) -> Result<(), BoxError> {
        let (clause, party) = key_of(i);
        match self {
            Client::Peace(c, _) => {
                let _ = party;
                c.get_clause(pb::GetClauseRequest {
                    plan_id: PLAN.into(),
                    clause_id: clause,
                    ..Default::default()
                })
                .await?;
            }
            #[cfg(feature = "etcd")]
            Client::Etcd(kv) => {
                kv.get(
                    format!("/peace/{PLAN}/{clause}/{party}"),
                    Some(etcd_client::GetOptions::new().with_serializable()),
                )
                .await?;
            }
        }
        Ok(())
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Prints a line of progress every few seconds while `done` grows to `total`.
fn progress(done: Arc<AtomicU64>, total: u64, what: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let d = done.load(Ordering::Relaxed);
            eprintln!("  {what}: {d}/{total}");
            if d >= total {
                return;
            }
        }
    })
}

async fn load(args: LoadArgs, write: bool) -> Result<(), BoxError> {
    let bench = if write { "write" } else { "read" };
    args.common.check(bench)?;
    let clients = clients(&args.common, args.clients).await?;
    if !write && args.common.target == Target::Etcd {
        // Make sure every key exists so gets return a value.
        let mut c = clients[0].clone();
        for i in 0..(28 * 4) {
            c.write(i, "seed".into()).await?;
        }
    }
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ticker = progress(Arc::clone(&done), args.requests, bench);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut client in clients {
        let (next, done, errors) = (Arc::clone(&next), Arc::clone(&done), Arc::clone(&errors));
        let total = args.requests;
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return hist;
                }
                let t = Instant::now();
                let result = if write {
                    client.write(i, format!("bench {i}")).await
                } else {
                    client.read(i).await
                };
                if result.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                hist.saturating_record(t.elapsed().as_micros() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut hist = histogram();
    for t in tasks {
        hist.add(t.await?)?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    ticker.abort();
    let ops = args.requests;
    let ops_per_sec = ops as f64 / elapsed;
    let (p50, p99) = (
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
    );
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "bench      target         clients  ops      ops/s      p50 ms  p99 ms  max ms  errors"
    );
    println!(
        "{bench:<10} {:<14} {:<8} {:<8} {:<10.0} {:<7.3} {:<7.3} {:<7.3} {errors}",
        args.common.target.name(),
        args.clients,
        ops,
        ops_per_sec,
        p50,
        p99,
        ms(hist.max())
    );
    println!(
        "{{\"bench\":\"{bench}\",\"target\":\"{}\",\"clients\":{},\"read_mask\":\"{}\",\"ops\":{ops},\"ops_per_sec\":{ops_per_sec:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"errors\":{errors}}}",
        args.common.target.name(),
        args.clients,
        args.common.read_mask_label()
    );
    Ok(())
}

/// Raw latencies a watcher keeps before adding them to the run's histogram.
const LATENCY_BUFFER: usize = 4096;

/// What one watcher saw.
///
/// Latencies are buffered raw (µs, one `u32` each) and added to the run's one
/// histogram [`LATENCY_BUFFER`] at a time: a histogram per watcher is ~140 KB
/// of counters, and at 1,000 watchers recording into them was a cache miss
/// per event and a tenth of the client's CPU, which the client then took from
/// the server it measures.
#[derive(Default)]
struct Seen {
    latencies_us: Vec<u32>,
    received: u64,
    missing: u64,
    out_of_order: u64,
}

/// What every watcher of one run shares: when each write was sent, how many
/// watchers are ready, and where each puts what it saw.
#[derive(Clone)]
struct WatchRun {
    sent: Arc<Vec<AtomicU64>>,
    epoch: Instant,
    total: u64,
    watchers: usize,
    ready: Arc<AtomicUsize>,
    all_ready: Arc<tokio::sync::watch::Sender<bool>>,
    results: Arc<Mutex<Vec<Seen>>>,
    latencies: Arc<Mutex<Histogram<u64>>>,
}

/// One watcher's count: what it saw and the next write it expects.
struct Tally {
    run: WatchRun,
    seen: Seen,
    expected: u64,
}

impl WatchRun {
    /// Called by a watcher once its stream is established.
    fn mark_ready(&self) -> Tally {
        if self.ready.fetch_add(1, Ordering::SeqCst) + 1 == self.watchers {
            let _ = self.all_ready.send(true);
        }
        Tally {
            run: self.clone(),
            seen: Seen {
                latencies_us: Vec::with_capacity(LATENCY_BUFFER.min(self.total as usize)),
                ..Seen::default()
            },
            expected: 0,
        }
    }
}

impl Tally {
    /// Whether every write has been seen (or counted missing).
    fn done(&self) -> bool {
        self.expected >= self.run.total
    }

    /// Records write `seq`, received now.
    fn record(&mut self, seq: u64) {
        let now = self.run.epoch.elapsed().as_micros() as u64;
        let sent_at = self
            .run
            .sent
            .get(seq as usize)
            .map_or(0, |s| s.load(Ordering::Acquire));
        if sent_at > 0 {
            let latency = now.saturating_sub(sent_at).max(1);
            self.seen
                .latencies_us
                .push(u32::try_from(latency).unwrap_or(u32::MAX));
            if self.seen.latencies_us.len() >= LATENCY_BUFFER {
                self.add_latencies();
            }
        }
        if seq < self.expected {
            self.seen.out_of_order += 1;
        } else {
            self.seen.missing += seq - self.expected;
            self.expected = seq + 1;
        }
        self.seen.received += 1;
    }

    /// Moves the buffered latencies into the run's histogram.
    fn add_latencies(&mut self) {
        let mut hist = self.run.latencies.lock().unwrap();
        for latency in self.seen.latencies_us.drain(..) {
            hist.saturating_record(u64::from(latency));
        }
    }

    /// Hands the count to the run; writes never seen count as missing.
    fn finish(mut self) {
        self.add_latencies();
        self.seen.missing += self.run.total.saturating_sub(self.expected);
        self.run.results.lock().unwrap().push(self.seen);
    }
}

/// The write sequence number a peace-bench write carries ("bench {seq}...").
fn bench_seq(text: &str) -> Option<u64> {
    text.strip_prefix("bench ")?.split('|').next()?.parse().ok()
}

async fn watch(args: WatchArgs) -> Result<(), BoxError> {
    args.common.check("watch")?;
    let total = args.rate * args.duration;
    let (all_ready_tx, mut all_ready) = tokio::sync::watch::channel(false);
    let run = WatchRun {
        sent: Arc::new((0..total).map(|_| AtomicU64::new(0)).collect()),
        epoch: Instant::now(),
        total,
        watchers: args.watchers,
        ready: Arc::default(),
        all_ready: Arc::new(all_ready_tx),
        results: Arc::default(),
        latencies: Arc::new(Mutex::new(histogram())),
    };
    let (sent, epoch, results, latencies) = (
        Arc::clone(&run.sent),
        run.epoch,
        Arc::clone(&run.results),
        Arc::clone(&run.latencies),
    );
    let mut tasks = Vec::new();
    match args.common.target {
        Target::PeaceTracker => {
            let conns = channels(&args.common.addr, args.common.connections).await?;
            let read_mask = args.common.field_mask();
            for w in 0..args.watchers {
                let mut client = ClauseTrackerClient::new(conns[w % conns.len()].clone());
                let read_mask = read_mask.clone();
                let run = run.clone();
                tasks.push(tokio::spawn(async move {
                    let mut stream = client
                        .watch(pb::WatchRequest {
                            plan_id: PLAN.into(),
                            read_mask: read_mask.clone(),
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    let _ = stream.message().await?; // the first Progress
                    let mut tally = run.mark_ready();
                    while !tally.done() {
                        let Some(event) = stream.message().await? else {
                            break;
                        };
                        if let Some(pb::watch_event::Event::Revision(rev)) = event.event {
                            if let Some(seq) = bench_seq(&rev.reason) {
                                tally.record(seq);
                            }
                        }
                    }
                    tally.finish();
                    Ok::<(), BoxError>(())
                }));
            }
        }
        #[cfg(feature = "etcd")]
        Target::Etcd => {
            let mut conns = Vec::new();
            for _ in 0..args.common.connections.max(1) {
                conns.push(
                    etcd_client::Client::connect([args.common.addr.as_str()], None)
                        .await?
                        .watch_client(),
                );
            }
            for w in 0..args.watchers {
                let mut client = conns[w % conns.len()].clone();
                let run = run.clone();
                tasks.push(tokio::spawn(async move {
                    let mut stream = client
                        .watch(
                            format!("/peace/{PLAN}/"),
                            Some(etcd_client::WatchOptions::new().with_prefix()),
                        )
                        .await?;
                    // Ready once etcd confirms the watch is created.
                    let _ = stream.message().await?;
                    let mut tally = run.mark_ready();
                    while !tally.done() {
                        let Some(resp) = stream.message().await? else {
                            break;
                        };
                        for event in resp.events() {
                            let value = event.kv().and_then(|kv| kv.value_str().ok());
                            if let Some(seq) = value.and_then(bench_seq) {
                                tally.record(seq);
                            }
                        }
                    }
                    tally.finish();
                    Ok::<(), BoxError>(())
                }));
            }
        }
        #[cfg(not(feature = "etcd"))]
        Target::Etcd => {
            return Err(
                "this peace-bench was built without etcd support: build with --features etcd"
                    .into(),
            )
        }
    }
    drop(run);
    all_ready.wait_for(|r| *r).await?;
    eprintln!(
        "  {} watchers ready; writing {total} revisions at {}/s",
        args.watchers, args.rate
    );

    let mut writer = clients(&args.common, 1).await?.remove(0);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / args.rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut write_errors = 0u64;
    let start = Instant::now();
    for seq in 0..total {
        tick.tick().await;
        sent[seq as usize].store(epoch.elapsed().as_micros() as u64, Ordering::Release);
        if writer.write(seq, format!("bench {seq}")).await.is_err() {
            write_errors += 1;
        }
        if seq > 0 && seq % (args.rate * 5).max(1) == 0 {
            eprintln!("  watch: {seq}/{total} written");
        }
    }
    let write_secs = start.elapsed().as_secs_f64();
    for t in tasks {
        if let Err(e) = t.await? {
            eprintln!("  a watcher failed: {e}");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let results = results.lock().unwrap();
    let hist = latencies.lock().unwrap();
    let (mut missing, mut out_of_order, mut received) = (0u64, 0u64, 0u64);
    for seen in results.iter() {
        missing += seen.missing;
        out_of_order += seen.out_of_order;
        received += seen.received;
    }
    missing += (args.watchers - results.len()) as u64 * total;
    let events_per_sec = received as f64 / elapsed;
    let (p50, p99) = (
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
    );
    println!("bench  target         watchers  rate  writes  events/s   p50 ms  p99 ms  max ms  missing  out_of_order  write errors  write s");
    println!(
        "watch  {:<14} {:<9} {:<5} {:<7} {:<10.0} {:<7.3} {:<7.3} {:<7.3} {:<8} {:<13} {:<13} {write_secs:.1}",
        args.common.target.name(),
        args.watchers,
        args.rate,
        total,
        events_per_sec,
        p50,
        p99,
        ms(hist.max()),
        missing,
        out_of_order,
        write_errors
    );
    println!(
        "{{\"bench\":\"watch\",\"target\":\"{}\",\"watchers\":{},\"rate\":{},\"read_mask\":\"{}\",\"writes\":{total},\"events_per_sec\":{events_per_sec:.1},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"missing\":{missing},\"out_of_order\":{out_of_order},\"errors\":{write_errors}}}",
        args.common.target.name(),
        args.watchers,
        args.rate,
        args.common.read_mask_label()
    );
    Ok(())
}

async fn fill(args: FillArgs) -> Result<(), BoxError> {
    let conns = channels(&args.common.addr, args.common.connections).await?;
    let batches = args.revisions.div_ceil(args.batch);
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let ticker = progress(Arc::clone(&done), args.revisions, "fill");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for ch in conns {
        let mut client = ClauseTrackerClient::new(ch);
        let (next, done) = (Arc::clone(&next), Arc::clone(&done));
        let (size, total) = (args.batch, args.revisions);
        tasks.push(tokio::spawn(async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<(), BoxError>(());
                }
                let first = b * size;
                let changes = (first..(first + size).min(total))
                    .map(|i| {
                        let (clause, party) = key_of(i);
                        pb::Change {
                            change: Some(pb::change::Change::SetStance(pb::SetStanceRequest {
                                clause_id: clause,
                                party_id: party.into(),
                                position: pb::Position::Amend as i32,
                                note: NOTE.into(),
                                ..Default::default()
                            })),
                        }
                    })
                    .collect::<Vec<_>>();
                let n = changes.len() as u64;
                client
                    .apply(pb::ApplyRequest {
                        plan_id: PLAN.into(),
                        changes,
                        reason: format!("fill {b}"),
                        ..Default::default()
                    })
                    .await?;
                done.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    ticker.abort();
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"bench\":\"fill\",\"target\":\"peace-tracker\",\"revisions\":{},\"seconds\":{secs:.1},\"revisions_per_sec\":{:.0}}}",
        args.revisions,
        args.revisions as f64 / secs
    );
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.bench {
        Bench::Write(args) => load(args, true).await,
        Bench::Read(args) => load(args, false).await,
        Bench::Watch(args) => watch(args).await,
        Bench::Fill(args) => fill(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
