//! `leadhook-bench`: end-to-end throughput, latency and memory of the real
//! `leadhook` binary against a private PostgreSQL and a fast receiver, next
//! to the limits measured on the same machine in the same run.
//!
//! A benchmark, not a test: it prints figures and PASS/MISS against the
//! targets, and fails only when something breaks.

mod big_rows;
mod database;
mod http2;
mod leadhook;
mod limits;
mod many;
mod options;
mod outage;
mod plot;
mod report;
mod sampler;
mod sink;
mod spool;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use leadhook_testkit::cluster::{Cluster, ClusterOptions, PgBinaries};
use leadhook_testkit::sidecar::{Leadhook, Sidecar};

use database::BenchDb;
use leadhook::{check_running, leadhook_binary, setup, start, stop};
use options::{Options, Phase};
use report::Report;
use sink::Sink;

/// What every phase runs on: set up once per run.
pub(crate) struct Bench {
    pub(crate) options: Options,
    /// The sidecar binary under test.
    pub(crate) binary: Leadhook,
    /// The server's binaries, for `pg_recvlogical` (the decode limit).
    bins: PgBinaries,
    pub(crate) cluster: Cluster,
    pub(crate) sink: Sink,
}

/// Connections leadhook opens to one webhook (its default `max_in_flight`).
const CONNECTIONS: usize = 64;
/// The headers leadhook sends with every request (beside `Host` and
/// `Content-Length`), so the limits are measured with the same requests:
/// the receiver parses each.
const SAMPLE_HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    (
        "user-agent",
        concat!("leadhook/", env!("CARGO_PKG_VERSION")),
    ),
    ("accept", "*/*"),
    ("webhook-id", "6f3a9c2e41d07b58-0/1A2B3C48-2d1e8f6a4c1b0-17"),
];
const SAMPLE_BODY: &[u8] = br#"{"data":{"email":"lead1@example.com","company":"Company 1","first_name":"Ada","last_name":"Lovelace","phone":null,"website":"https://example.com/1","position":"Engineer","twitter":null,"linkedin":null,"notes":"1764000000000000","score":1}}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    // The load generator's reqwest needs the process-wide rustls provider.
    leadhook_testkit::install_crypto_provider();
    if options.fanout == 0 || options.fanout > 4 || options.events == 0 {
        bail!("--fanout must be 1 to 4 and --events at least 1");
    }
    let runs = |phase| options.phases.contains(&phase);
    if (runs(Phase::Fanout) || runs(Phase::Backlog)) && !runs(Phase::Throughput) {
        bail!("--phases: fanout and backlog need the throughput phase's figures");
    }
    let binary = leadhook_binary(options.leadhook.clone())?;
    eprintln!("starting PostgreSQL...");
    let bins = PgBinaries::find()?;
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::start(
            ClusterOptions::default()
                .setting("max_wal_size", "4GB")
                .setting("shared_buffers", "256MB")
                // As in production: a commit is flushed, so the walsender sends it at once.
                .setting("synchronous_commit", "on"),
        )
    })
    .await??;
    let sink = Sink::start().await?;
    let mut report = Report {
        options: serde_json::to_value(&options)?,
        ..Report::default()
    };
    report.machine = machine(&cluster).await?;

    let bench = Bench {
        options,
        binary,
        bins,
        cluster,
        sink,
    };
    for phase in Phase::ALL {
        if !bench.options.phases.contains(&phase) {
            continue;
        }
        match phase {
            Phase::Throughput => throughput(&bench, &mut report).await?,
            Phase::Fanout => fanout(&bench, &mut report).await?,
            Phase::Http2 => http2::http2(&bench, &mut report).await?,
            Phase::Latency => latency(&bench, &mut report).await?,
            Phase::Backlog => backlog(&bench, &mut report).await?,
            Phase::Notify => notify(&bench, &mut report).await?,
            Phase::Outage => outage::outage(&bench, &mut report).await?,
            Phase::Spool => spool::spool(&bench, &mut report).await?,
            Phase::Many => many::many(&bench, &mut report).await?,
            Phase::BigRows => big_rows::big_rows(&bench, &mut report).await?,
        }
        report.phases.push(phase);
    }
    let options = bench.options;

    report.judge();
    report.print();
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nJSON: {}", path.display());
    }
    if let Some(path) = &options.plot {
        plot::draw(&report, path)?;
        println!("plot: {}", path.display());
    }
    Ok(())
}

/// Throughput with one webhook, and the two limits on the same WAL range.
async fn throughput(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Bench {
        options,
        binary,
        bins,
        cluster,
        sink,
    } = bench;
    let n = options.events;
    eprintln!(
        "throughput: committing {n} leads in transactions of {}...",
        options.batch
    );
    let db = BenchDb::create(
        cluster,
        "bench_throughput",
        &["bench_throughput", "bench_decode"],
    )
    .await?;
    let inserting = Instant::now();
    let end = db.insert(n, options.batch).await?;
    report.notify.insert_seconds_replication = inserting.elapsed().as_secs_f64();

    eprintln!("throughput: decode limit (pg_recvlogical)...");
    let decode = limits::decode_rate(bins.dir(), cluster, &db.name, "bench_decode", &end, n)?;
    eprintln!("throughput: HTTP limit ({CONNECTIONS} connections)...");
    sink.reset();
    let http = limits::http_rate(
        &sink.url("/limit"),
        SAMPLE_HEADERS,
        SAMPLE_BODY,
        n,
        CONNECTIONS,
    )
    .await?;
    eprintln!("throughput: HTTP limit with wrk ({CONNECTIONS} connections)...");
    let seconds = options.wrk_seconds;
    let wrk = tokio::task::spawn_blocking({
        let url = sink.url("/limit");
        move || limits::wrk_rate(&url, SAMPLE_HEADERS, SAMPLE_BODY, CONNECTIONS, seconds)
    })
    .await??;

    eprintln!("throughput: leadhook...");
    sink.reset();
    let started = Instant::now();
    let mut sidecar = start(binary, &db.sidecar_config(&db.name, &[sink.url("/hook0")]))?;
    wait_for(sink, &mut sidecar, &["/hook0"], 1, Duration::from_secs(60)).await?;
    let first = started.elapsed().as_secs_f64();
    wait_for(sink, &mut sidecar, &["/hook0"], n, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    report.resources.throughput_peak_rss_mib = sidecar.peak_rss_mib();
    report.resources.cpu_seconds_per_100k_events = sidecar.cpu_seconds() * 100_000.0 / n as f64;
    stop(sidecar).await;
    let rate = n as f64 / elapsed;
    // After the first delivery: the steady rate, as wrk's is (its own
    // start is not in it), without the process start, the connection to
    // the server and the replication start.
    let drain = (n - 1) as f64 / (elapsed - first).max(f64::EPSILON);
    report.throughput = report::Throughput {
        events: n,
        events_per_second: rate,
        first_delivery_seconds: first,
        drain_events_per_second: drain,
        drain_wrk_ratio: drain / decode.min(wrk.rate),
        decode_limit_per_second: decode,
        http_limit_per_second: http,
        ratio: rate / decode.min(http),
        wrk_limit_per_second: wrk.rate,
        wrk_ratio: rate / decode.min(wrk.rate),
        wrk_cpu_seconds_per_100k_requests: wrk.cpu_seconds_per_100k,
    };
    Ok(())
}

/// The throughput run again with several webhooks; the time each took.
async fn fanout(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Bench {
        options,
        binary,
        cluster,
        sink,
        ..
    } = bench;
    let (n, hooks) = (options.events, options.fanout);
    eprintln!("fan-out: {n} leads to {hooks} webhooks...");
    let db = BenchDb::create(cluster, "bench_fanout", &["bench_fanout"]).await?;
    db.insert(n, options.batch).await?;
    sink.reset();
    let paths: Vec<&str> = ["/hook0", "/hook1", "/hook2", "/hook3"][..hooks].to_vec();
    let urls: Vec<String> = paths.iter().map(|p| sink.url(p)).collect();
    let started = Instant::now();
    let mut sidecar = start(binary, &db.sidecar_config(&db.name, &urls))?;
    let mut finished = vec![None; hooks];
    let deadline = Instant::now() + Duration::from_secs(900);
    while finished.iter().any(Option::is_none) {
        for (i, path) in paths.iter().enumerate() {
            if finished[i].is_none() && sink.count(path) >= n {
                finished[i] = Some(started.elapsed().as_secs_f64());
            }
        }
        check(&mut sidecar, deadline, "fan-out")?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stop(sidecar).await;
    let rates: Vec<f64> = finished
        .iter()
        .map(|t| n as f64 / t.unwrap_or(f64::INFINITY))
        .collect();
    // Each event is decoded once but sent `hooks` times: the receiver's
    // request rate is shared among the webhooks.
    let limit = report
        .throughput
        .decode_limit_per_second
        .min(report.throughput.http_limit_per_second / hooks as f64);
    report.fanout = report::Fanout {
        webhooks: hooks,
        limit_per_second: limit,
        ratio: rates.iter().copied().fold(f64::INFINITY, f64::min) / limit,
        events_per_second_per_webhook: rates,
    };
    Ok(())
}

/// Steady single-row commits while leadhook runs; commit → arrival.
async fn latency(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Bench {
        options,
        binary,
        cluster,
        sink,
        ..
    } = bench;
    let (rate, seconds) = (options.latency_rate.max(1), options.latency_seconds);
    eprintln!("latency: {rate} commits/s for {seconds} s...");
    let db = BenchDb::create(cluster, "bench_latency", &["bench_latency"]).await?;
    sink.reset();
    sink.track("/latency");
    let sidecar = start(
        binary,
        &db.sidecar_config(&db.name, &[sink.url("/latency")]),
    )?;
    db.wait_active(&db.name).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.resources.idle_rss_mib = sidecar.rss_mib();

    let all = latency_run(&db, sink, sidecar, rate, seconds).await?;
    report.latency = report::Latency {
        offered_per_second: rate,
        seconds,
        samples: all.len(),
        ms: report::Percentiles::of(&all),
        all_ms: all,
    };
    Ok(())
}

/// A large backlog, the receiver paused for the first half of the drain:
/// memory must stay flat.
async fn backlog(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Bench {
        options,
        binary,
        cluster,
        sink,
        ..
    } = bench;
    let n = options.backlog_events;
    eprintln!("backlog: committing {n} leads...");
    let db = BenchDb::create(cluster, "bench_backlog", &["bench_backlog"]).await?;
    db.insert(n, 10_000).await?;
    // Half of the drain time the throughput run predicts.
    let pause = Duration::from_secs_f64(
        (n as f64 / report.throughput.events_per_second.max(1.0) / 2.0).max(1.0),
    );
    eprintln!(
        "backlog: draining with the receiver paused for the first {:.0} s...",
        pause.as_secs_f64()
    );
    sink.reset();
    sink.pause(true);
    let mut sidecar = start(binary, &db.sidecar_config(&db.name, &[sink.url("/hook0")]))?;
    tokio::time::sleep(pause).await;
    check_running(&sidecar)?;
    sink.pause(false);
    let resumed = Instant::now();
    wait_for(
        sink,
        &mut sidecar,
        &["/hook0"],
        n,
        Duration::from_secs(1800),
    )
    .await?;
    report.backlog = report::Backlog {
        events: n,
        paused_seconds: pause.as_secs_f64(),
        events_per_second_after_resume: n as f64 / resumed.elapsed().as_secs_f64(),
        peak_rss_mib: sidecar.peak_rss_mib(),
    };
    stop(sidecar).await;
    Ok(())
}

/// Notify mode on the throughput and latency workloads.
async fn notify(bench: &Bench, report: &mut Report) -> anyhow::Result<()> {
    let Bench {
        options,
        binary,
        cluster,
        sink,
        ..
    } = bench;
    let n = options.events;
    eprintln!("notify mode: committing {n} leads through the capture trigger...");
    let db = BenchDb::create(cluster, "bench_notify", &[]).await?;
    let config = db.notify_config(&[sink.url("/hook0")]);
    setup(binary, &config)?;
    let inserting = Instant::now();
    db.insert(n, options.batch).await?;
    report.notify.insert_seconds_notify = inserting.elapsed().as_secs_f64();
    sink.reset();
    let started = Instant::now();
    let mut sidecar = start(binary, &config)?;
    wait_for(sink, &mut sidecar, &["/hook0"], n, Duration::from_secs(600)).await?;
    report.notify.events_per_second = n as f64 / started.elapsed().as_secs_f64();
    stop(sidecar).await;

    let (rate, seconds) = (options.latency_rate.max(1), options.latency_seconds);
    eprintln!("notify mode: latency at {rate} commits/s for {seconds} s...");
    let db = BenchDb::create(cluster, "bench_notify_latency", &[]).await?;
    let config = db.notify_config(&[sink.url("/latency")]);
    setup(binary, &config)?;
    sink.reset();
    sink.track("/latency");
    let sidecar = start(binary, &config)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = latency_run(&db, sink, sidecar, rate, seconds).await?;
    report.notify.latency = report::Percentiles::of(&all);
    Ok(())
}

/// The latency workload against a running sidecar delivering to `/latency`:
/// every sample's commit → arrival in ms, sorted. Stops the sidecar.
async fn latency_run(
    db: &BenchDb,
    sink: &Sink,
    mut sidecar: Sidecar,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<Vec<f64>> {
    let total = steady_inserts(db, rate, seconds).await?;
    wait_for(
        sink,
        &mut sidecar,
        &["/latency"],
        total,
        Duration::from_secs(120),
    )
    .await?;
    stop(sidecar).await;
    Ok(sorted_latencies(sink, "/latency"))
}

/// `rate` single-row commits per second for `seconds`; returns how many.
async fn steady_inserts(db: &BenchDb, rate: u64, seconds: u64) -> anyhow::Result<u64> {
    let total = rate * seconds;
    let insert = db
        .sql
        .prepare("INSERT INTO leads (email, company, score) VALUES ($1, 'Latency', 1)")
        .await?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        db.sql
            .execute(&insert, &[&format!("latency{i}@example.com")])
            .await?;
    }
    Ok(total)
}

/// Commit → arrival of every request answered at the tracked `path`, in
/// ms, sorted.
fn sorted_latencies(sink: &Sink, path: &str) -> Vec<f64> {
    let mut all: Vec<f64> = sink
        .latencies(path)
        .iter()
        .map(|us| *us as f64 / 1000.0)
        .collect();
    all.sort_by(f64::total_cmp);
    all
}

/// Waits until every path in `paths` has received `n` requests.
pub(crate) async fn wait_for(
    sink: &Sink,
    sidecar: &mut Sidecar,
    paths: &[&str],
    n: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while paths.iter().any(|p| sink.count(p) < n) {
        check(sidecar, deadline, paths.join(","))?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn check(
    sidecar: &mut Sidecar,
    deadline: Instant,
    what: impl std::fmt::Display,
) -> anyhow::Result<()> {
    check_running(sidecar)?;
    if Instant::now() > deadline {
        bail!(
            "{what}: deliveries did not finish in time; leadhook log:\n{}",
            sidecar.log()
        );
    }
    Ok(())
}

async fn machine(cluster: &Cluster) -> anyhow::Result<report::Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let sql = database::connect(&cluster.url("postgres")).await?;
    let postgres: String = sql.query_one("SHOW server_version", &[]).await?.get(0);
    Ok(report::Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        memory_gib: mem_kib / 1024.0 / 1024.0,
        postgres,
    })
}
