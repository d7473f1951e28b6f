use super::binaries::versioned_install_dirs;
use super::template::owner_pid;
use super::*;
use std::error::Error;
use std::ffi::OsString;
use std::sync::OnceLock;
use tokio_postgres::{Client, NoTls};

type TestResult = Result<(), Box<dyn Error>>;

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn show(client: &Client, setting: &str) -> Result<String, tokio_postgres::Error> {
    let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
    row.try_get(0)
}

/// One cluster for tests that only read, kept the way test binaries will keep theirs.
fn shared_cluster() -> Result<&'static Cluster, ClusterError> {
    static SHARED: OnceLock<&'static Cluster> = OnceLock::new();
    if let Some(cluster) = SHARED.get() {
        return Ok(cluster);
    }
    let cluster = Cluster::start(ClusterOptions::default())?;
    Ok(SHARED.get_or_init(|| cluster.keep_until_exit()))
}

#[tokio::test]
async fn a_new_cluster_takes_password_logins_and_decodes_logically() -> TestResult {
    let cluster = shared_cluster()?;
    let client = connect(&cluster.url("postgres")).await?;
    assert_eq!(show(&client, "wal_level").await?, "logical");
    assert_eq!(show(&client, "fsync").await?, "off");
    assert_eq!(show(&client, "wal_sender_timeout").await?, "5s");
    assert!(cluster.server_log().contains(READY_LINE));
    assert_eq!(
        cluster.url("leads"),
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/leads",
            cluster.port()
        )
    );
    Ok(())
}

#[tokio::test]
async fn a_role_stored_as_md5_can_log_in() -> TestResult {
    let cluster = shared_cluster()?;
    let admin = connect(&cluster.url("postgres")).await?;
    admin
        .batch_execute(
            "SET password_encryption = 'md5'; \
             CREATE ROLE legacy LOGIN PASSWORD 'legacy-secret'",
        )
        .await?;
    let stored: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'legacy'",
            &[],
        )
        .await?
        .try_get(0)?;
    assert!(stored.starts_with("md5"), "stored as {stored}");
    let url = format!(
        "postgres://legacy:legacy-secret@127.0.0.1:{}/postgres",
        cluster.port()
    );
    let legacy = connect(&url).await?;
    let user: String = legacy
        .query_one("SELECT current_user::text", &[])
        .await?
        .try_get(0)?;
    assert_eq!(user, "legacy");
    Ok(())
}

#[tokio::test]
async fn options_set_wal_level_and_extra_settings() -> TestResult {
    let options = ClusterOptions {
        wal_level: WalLevel::Replica,
        ..ClusterOptions::default()
    }
    .setting("wal_sender_timeout", "4s");
    let cluster = Cluster::start(options)?;
    let client = connect(&cluster.url("postgres")).await?;
    assert_eq!(show(&client, "wal_level").await?, "replica");
    assert_eq!(show(&client, "wal_sender_timeout").await?, "4s");
    Ok(())
}

#[tokio::test]
async fn data_survives_a_restart_on_the_same_port() -> TestResult {
    let mut cluster = Cluster::start(ClusterOptions::default())?;
    let port = cluster.port();
    let client = connect(&cluster.url("postgres")).await?;
    client
        .batch_execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (42)")
        .await?;
    cluster.restart()?;
    assert_eq!(cluster.port(), port);
    let client = connect(&cluster.url("postgres")).await?;
    let id: i32 = client
        .query_one("SELECT id FROM kept", &[])
        .await?
        .try_get(0)?;
    assert_eq!(id, 42);
    Ok(())
}

#[test]
fn a_stopped_cluster_refuses_connections_and_a_dropped_one_leaves_nothing() -> TestResult {
    let mut cluster = Cluster::start(ClusterOptions::default())?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, cluster.port()));
    cluster.stop()?;
    let refused = TcpStream::connect(address).map_err(|error| error.kind());
    assert_eq!(refused.err(), Some(io::ErrorKind::ConnectionRefused));
    cluster.start_again()?;
    let dir = cluster.dir.path().to_owned();
    drop(cluster);
    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(TcpStream::connect(address).is_err());
    Ok(())
}

#[tokio::test]
async fn a_cluster_outlives_the_thread_that_started_it() -> TestResult {
    // PDEATHSIG fires when the spawning thread ends; test threads end early.
    let cluster = thread::spawn(|| Cluster::start(ClusterOptions::default()))
        .join()
        .map_err(|_| "the starting thread panicked")??;
    thread::sleep(Duration::from_millis(200));
    let client = connect(&cluster.url("postgres")).await?;
    client.batch_execute("SELECT 1").await?;
    Ok(())
}

#[test]
fn a_bogus_leadhook_pg_bin_is_an_error_that_says_what_to_set() {
    let bogus = OsString::from("/nonexistent/pg/bin");
    let error = PgBinaries::find_with(Some(bogus)).map(|_| ());
    let Err(error @ ClusterError::BadBinDir(_)) = error else {
        panic!("expected BadBinDir, got {error:?}");
    };
    let message = error.to_string();
    assert!(
        message.contains("LEADHOOK_PG_BIN is /nonexistent/pg/bin"),
        "{message}"
    );
    assert!(message.contains("directory containing"), "{message}");
}

#[test]
fn install_dirs_are_tried_newest_version_first() -> TestResult {
    let root = tempfile::tempdir()?;
    for name in ["9.6", "15", "13", "common"] {
        fs::create_dir(root.path().join(name))?;
    }
    let found = versioned_install_dirs(root.path());
    let expected: Vec<PathBuf> = ["15", "13", "9.6"]
        .iter()
        .map(|v| root.path().join(v).join("bin"))
        .collect();
    assert_eq!(found, expected);
    Ok(())
}

#[test]
fn settings_are_quoted_and_line_breaks_rejected() {
    let line = conf_line("application_name", r"it's a\b").map_err(|e| e.to_string());
    assert_eq!(line, Ok("application_name = 'it''s a\\\\b'\n".to_owned()));
    assert!(conf_line("work_mem", "1MB\nfsync = on").is_err());
    assert!(conf_line("bad name", "x").is_err());
}

#[test]
fn only_our_directory_names_yield_an_owner_pid() {
    assert_eq!(owner_pid("leadhook-pg-1234-cluster-abc"), Some(1234));
    assert_eq!(owner_pid("leadhook-pg-0-cluster-abc"), None);
    assert_eq!(owner_pid("other-1234"), None);
}
