//! The physical limits leadhook is compared with, measured in the same run:
//! how fast PostgreSQL decodes the WAL range (pg_recvlogical), and how fast
//! the receiver takes requests: from reqwest (a common Rust client, and the
//! one leadhook used before it kept its own connections) and from `wrk`
//! (the lightest client here, C over epoll: the honest limit).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use leadhook_testkit::cluster::Cluster;

/// Events/s at which pg_recvlogical streams `slot` up to `end` into a file.
pub(crate) fn decode_rate(
    bin: &Path,
    cluster: &Cluster,
    db: &str,
    slot: &str,
    end: &str,
    events: u64,
) -> anyhow::Result<f64> {
    let out = tempfile::NamedTempFile::new()?;
    let started = Instant::now();
    let status = Command::new(bin.join("pg_recvlogical"))
        .arg("-d")
        .arg(format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            cluster.port()
        ))
        .args([
            "-S",
            slot,
            "--start",
            "--no-loop",
            "-o",
            "proto_version=1",
            "-o",
            "publication_names=bench",
        ])
        .arg(format!("--endpos={end}"))
        .arg("-f")
        .arg(out.path())
        .env("PGPASSWORD", "postgres")
        .status()
        .context("running pg_recvlogical")?;
    let elapsed = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("pg_recvlogical failed with {status}");
    }
    Ok(events as f64 / elapsed)
}

/// Requests/s the receiver takes: `count` identical bodies over `connections`
/// concurrent keep-alive connections (as many as leadhook uses).
pub(crate) async fn http_rate(
    url: &str,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
    count: u64,
    connections: usize,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let mut request = client.post(&url);
                for &(name, value) in headers {
                    request = request.header(name, value);
                }
                let response = request.body(body).send().await?;
                if !response.status().is_success() {
                    bail!("receiver answered {}", response.status());
                }
            }
            Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// What `wrk` measured, and what it cost it.
pub(crate) struct WrkRun {
    /// Requests/s it got from the receiver.
    pub(crate) rate: f64,
    /// Its own user + system CPU seconds per 100 000 requests: what the
    /// lightest client pays to send a request and read its answer, mostly
    /// in the kernel, so the floor under leadhook's CPU per event.
    pub(crate) cpu_seconds_per_100k: f64,
}

/// `wrk` against the receiver at `url`: `connections` keep-alive
/// connections over 2 threads for `seconds`, each request a POST of `body`
/// with `headers`, as leadhook sends it.
pub(crate) fn wrk_rate(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    connections: usize,
    seconds: u64,
) -> anyhow::Result<WrkRun> {
    let mut script = tempfile::NamedTempFile::new()?;
    let body = String::from_utf8_lossy(body)
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    let mut lua = format!("wrk.method = \"POST\"\nwrk.body = \"{body}\"\n");
    for (name, value) in headers {
        lua.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    std::io::Write::write_all(&mut script, lua.as_bytes())?;
    let mut child = Command::new("wrk")
        .args(["-t", "2", "-c", &connections.to_string()])
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script.path())
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "running wrk (the HTTP limit's lightest client): install it with `apt-get install wrk`",
        )?;
    let (mut text, mut errors) = (String::new(), String::new());
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut text)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut errors)?;
    }
    let cpu = exited_cpu_seconds(child.id()).context("waiting for wrk to exit")?;
    let status = child.wait()?;
    if !status.success() {
        bail!("wrk failed with {status}: {text}{errors}");
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors from the receiver: {text}");
    }
    let rate: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|rate| rate.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))?;
    // "  233705 requests in 5.01s, 16.72MB read"
    let requests: f64 = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(count, _)| count.parse().ok())
        .with_context(|| format!("no request count in wrk's output: {text}"))?;
    Ok(WrkRun {
        rate,
        cpu_seconds_per_100k: cpu * 100_000.0 / requests.max(1.0),
    })
}

/// Waits for our child `pid` to exit without reaping it, then reads the CPU
/// it used from /proc (gone once it is reaped).
fn exited_cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let id: libc::id_t = pid;
    // SAFETY: waitid writes only into `info`, which outlives the call.
    let waited = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, id, &mut info, libc::WEXITED | libc::WNOWAIT)
    };
    match waited {
        0 => Ok(leadhook_testkit::sidecar::cpu_seconds(pid)),
        _ => Err(std::io::Error::last_os_error()),
    }
}
