//! A real Prometheus server (Debian's `prometheus` package) scraping the
//! sidecars of a test every 500 ms, and `promtool`: what an operator's
//! monitoring sees, checked through Prometheus itself rather than our own
//! parser.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Where to find the binaries when they are not on PATH.
const INSTALL_HINT: &str = "install Debian's prometheus package (`apt-get install prometheus`, which has prometheus and promtool) or put both on PATH";

/// A running Prometheus with its own data directory; killed when dropped.
pub struct Prometheus {
    child: Child,
    url: String,
    /// Its config, data and log; removed with it.
    dir: tempfile::TempDir,
}

/// `promtool` or `prometheus` on PATH; panics with how to install them.
pub fn binary(name: &str) -> PathBuf {
    crate::on_path(name).unwrap_or_else(|| panic!("{name} not found: {INSTALL_HINT}"))
}

/// `promtool ARGS`, its output and status.
pub fn promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(binary("promtool"));
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("run promtool: {e}"));
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        std::io::Write::write_all(&mut input, text.as_bytes()).expect("write to promtool");
    }
    child.wait_with_output().expect("promtool's output")
}

impl Prometheus {
    /// Starts Prometheus scraping each `host:port` in `targets` (job
    /// `leadhook`, as the alert rules expect) every 500 ms; waits until it is
    /// ready.
    pub async fn start(targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("prometheus.yml");
        let listed: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\n  evaluation_interval: 500ms\n\
                 scrape_configs:\n  - job_name: leadhook\n    static_configs:\n      - targets: [{}]\n",
                listed.join(", ")
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = Command::new(binary("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start prometheus: {e}; {INSTALL_HINT}"));
        let prometheus = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        prometheus.wait_ready().await;
        prometheus
    }

    async fn wait_ready(&self) {
        crate::install_crypto_provider();
        let ready = format!("{}/-/ready", self.url);
        for _ in 0..200 {
            if reqwest::get(&ready)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus never became ready; its log:\n{}", self.log());
    }

    /// A PromQL instant query through the HTTP API: its `data.result`.
    pub async fn query(&self, promql: &str) -> serde_json::Value {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url),
            &[("query", promql)],
        )
        .expect("a query URL");
        let response = reqwest::get(url)
            .await
            .unwrap_or_else(|e| panic!("query {promql:?}: {e}"));
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("query {promql:?}: {e}"));
        let body: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("query {promql:?}: not JSON ({e}): {text}"));
        assert_eq!(body["status"], "success", "query {promql:?}: {body}");
        body["data"]["result"].clone()
    }

    /// Until the series `selector` has at least `samples` samples stored
    /// (in the last minute): Prometheus has scraped that often.
    pub async fn wait_for_scrapes(&self, selector: &str, samples: usize) {
        let range = format!("{selector}[1m]");
        for _ in 0..300 {
            let result = self.query(&range).await;
            if result[0]["values"]
                .as_array()
                .is_some_and(|v| v.len() >= samples)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "prometheus never scraped {selector} {samples} times; its log:\n{}",
            self.log()
        );
    }

    /// The first value of a query's result, if it has one.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql).await;
        result[0]["value"][1].as_str()?.parse().ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
