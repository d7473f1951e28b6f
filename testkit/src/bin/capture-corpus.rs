//! Captures the fuzz targets' seed corpus from a real server:
//!
//! ```sh
//! cargo build --bin leadhook
//! cargo run -p leadhook-testkit --bin capture-corpus -- target/debug/leadhook fuzz/corpus
//! ```
//!
//! A private PostgreSQL, the real `leadhook` streaming through a recording
//! TCP proxy, and a workload of every kind of change (multi-row
//! transactions, NULLs, Unicode, large TOASTed values, unchanged TOAST on
//! update, deletes, truncates, a new column, a rollback, logical messages).
//! What the server sent on the replication connection after
//! `CopyBothResponse` becomes `replication_stream/` seeds, each XLogData
//! payload a `pgoutput/` seed; then notify mode's trigger captures leads,
//! whose outbox `lead` JSON becomes `outbox_row/` seeds.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leadhook_testkit::cluster::{Cluster, ClusterOptions};
use leadhook_testkit::config::Webhook;
use leadhook_testkit::database::TestDb;
use leadhook_testkit::receiver::Receiver;
use leadhook_testkit::sidecar::Leadhook;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The server → client bytes of each connection through the proxy.
type Recorded = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

const WORKLOAD: &[&str] = &[
    // Stored out of line uncompressed: an update leaving it unchanged sends 'u'.
    "ALTER TABLE leads ALTER COLUMN notes SET STORAGE EXTERNAL",
    "INSERT INTO leads (email, company, first_name, last_name, score) VALUES ('ada@example.com', 'Analytical Engines', 'Ada', 'Lovelace', 10)",
    "BEGIN; INSERT INTO leads (email, score) SELECT 'bulk' || i || '@example.com', i FROM generate_series(1, 5) i; COMMIT",
    "INSERT INTO leads (email, first_name, notes, score) VALUES ('ünï@example.com', 'Zoë 🚀', E'line\\nbreak \"quoted\" \\\\ back', -3)",
    "INSERT INTO leads (email, notes, score) VALUES ('big@example.com', repeat('toast ', 600), 1)",
    "UPDATE leads SET score = 99 WHERE email = 'big@example.com'",
    "UPDATE leads SET score = score + 1, notes = NULL WHERE email LIKE 'bulk%'",
    "BEGIN; INSERT INTO leads (email) VALUES ('never@example.com'); ROLLBACK",
    "SELECT pg_logical_emit_message(true, 'leadhook', 'a transactional message')",
    "DELETE FROM leads WHERE email = 'bulk1@example.com'",
    "ALTER TABLE leads ADD COLUMN region text",
    "INSERT INTO leads (email, region, score) VALUES ('new@example.com', 'emea', 5)",
    "TRUNCATE leads",
];

#[tokio::main]
async fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(binary), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: capture-corpus <leadhook binary> <corpus directory, e.g. fuzz/corpus>");
        std::process::exit(2);
    };
    let out = PathBuf::from(out);
    let leadhook = Leadhook::at(PathBuf::from(binary));
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(ClusterOptions::default()))
        .await
        .expect("the cluster task")
        .expect("start PostgreSQL");
    let stream = capture_stream(&cluster, &leadhook).await;
    write_stream_seeds(&stream, &out);
    write_outbox_seeds(&cluster, &leadhook, &out).await;
}

/// The replication connection's bytes after `CopyBothResponse`.
async fn capture_stream(cluster: &Cluster, leadhook: &Leadhook) -> Vec<u8> {
    let db = TestDb::create(cluster, "corpus").await;
    let recorded = Recorded::default();
    let proxy = proxy(cluster.port(), recorded.clone()).await;
    let receiver = Receiver::start(0).await.expect("a receiver");
    let url = db
        .url
        .replacen(&format!(":{}/", cluster.port()), &format!(":{proxy}/"), 1);
    let config = db
        .config()
        .with(|c| c.database.url = format!("{url}?sslmode=disable"))
        .webhook(Webhook::to(&receiver, "hook", "/leads"));
    let sidecar = leadhook.start(&config.to_toml());
    db.wait_streaming(&sidecar).await;
    for statement in WORKLOAD {
        db.sql
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    // The last lead's webhook, then a keepalive or two.
    receiver
        .wait_for("/leads", 10, Duration::from_secs(30))
        .await
        .expect("the workload's webhooks");
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(sidecar);
    let connections = recorded.lock().expect("the recording").clone();
    connections
        .iter()
        .find_map(|bytes| {
            let bytes = bytes.lock().expect("a connection's bytes");
            after_copy_both(&bytes).map(<[u8]>::to_vec)
        })
        .expect("a replication connection went through the proxy")
}

/// Listens on a free port and forwards each connection to `port`,
/// recording what the server sends.
async fn proxy(port: u16, recorded: Recorded) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let bound = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let bytes = Arc::new(Mutex::new(Vec::new()));
            recorded.lock().expect("the recording").push(bytes.clone());
            tokio::spawn(forward(client, port, bytes));
        }
    });
    bound
}

async fn forward(client: TcpStream, port: u16, bytes: Arc<Mutex<Vec<u8>>>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buf = vec![0; 64 * 1024];
    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
        bytes
            .lock()
            .expect("a connection's bytes")
            .extend_from_slice(&buf[..n]);
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// The frames after the `CopyBothResponse` frame, if this connection has one.
fn after_copy_both(bytes: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    while let Some((tag, len)) = header(&bytes[at..]) {
        at += 1 + len;
        if tag == b'W' {
            return bytes.get(at..);
        }
    }
    None
}

/// A frame's tag and length (without the tag), if the header is there.
fn header(bytes: &[u8]) -> Option<(u8, usize)> {
    let header = bytes.get(..5)?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    (len >= 4 && bytes.len() > len).then_some((header[0], len))
}

/// Complete frames, each as its bytes.
fn frames(stream: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some((_, len)) = header(&stream[at..]) {
        frames.push(&stream[at..at + 1 + len]);
        at += 1 + len;
    }
    frames
}

fn write_stream_seeds(stream: &[u8], out: &Path) {
    let frames = frames(stream);
    let mut payloads = BTreeSet::new();
    for frame in &frames {
        // CopyData 'd' carrying XLogData 'w': 24 bytes of header, then pgoutput.
        if frame[0] == b'd' && frame.get(5) == Some(&b'w') && frame.len() > 30 {
            payloads.insert(frame[30..].to_vec());
        }
    }
    write_all(&out.join("pgoutput"), payloads.iter().map(Vec::as_slice));
    // The whole stream, and runs of eight frames (what a read returns).
    let mut seeds = vec![frames.concat()];
    seeds.extend(frames.chunks(8).map(<[&[u8]]>::concat));
    write_all(
        &out.join("replication_stream"),
        seeds.iter().map(Vec::as_slice),
    );
    println!(
        "{} frames: {} pgoutput seeds, {} stream seeds",
        frames.len(),
        payloads.len(),
        seeds.len()
    );
}

/// Notify mode: the trigger's `lead` JSON of a few leads.
async fn write_outbox_seeds(cluster: &Cluster, leadhook: &Leadhook, out: &Path) {
    let db = TestDb::create(cluster, "corpus_notify").await;
    let config = db.config().notify().to_toml();
    let setup = leadhook.run(&config, &["setup", "--apply"], &[]);
    assert_eq!(setup.code, Some(0), "setup --apply: {}", setup.stderr);
    for statement in &WORKLOAD[..7] {
        db.sql
            .batch_execute(statement)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let rows = db
        .sql
        .query("SELECT DISTINCT lead::text FROM leadhook.outbox", &[])
        .await
        .expect("the outbox");
    let leads: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    write_all(&out.join("outbox_row"), leads.iter().map(String::as_bytes));
    println!("{} outbox seeds", leads.len());
}

/// Writes each seed to `dir/captured-NNN`, replacing the earlier captured
/// ones (seeds of other names, regressions among them, stay).
fn write_all<'a>(dir: &Path, seeds: impl Iterator<Item = &'a [u8]>) {
    std::fs::create_dir_all(dir).expect("the corpus directory");
    for old in std::fs::read_dir(dir)
        .expect("the corpus directory")
        .flatten()
    {
        if old.file_name().to_string_lossy().starts_with("captured-") {
            let _ = std::fs::remove_file(old.path());
        }
    }
    for (n, seed) in seeds.enumerate() {
        std::fs::write(dir.join(format!("captured-{n:03}")), seed).expect("a seed");
    }
}
