//! How to reach the database: the libpq-style URL, TLS, and the ordinary SQL
//! connection. The replication connection (`source::replication`) reads the
//! same settings, so `sslmode` means the same thing on both.

mod tls;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_postgres::Socket;
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The driver half of an SQL connection, over TLS or not.
type SqlConnection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

pub(crate) use tls::TlsSettings;

/// Database connection settings parsed from `database.url`.
#[derive(Clone)]
pub(crate) struct Database {
    /// Host, port, user, password, dbname, as tokio-postgres understands them.
    pg: tokio_postgres::Config,
    /// Kept apart from `pg` because tokio-postgres knows only disable/prefer/require.
    tls: TlsSettings,
}

/// `sslmode`, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("database.url: {0}")]
    Url(String),
    #[error("database.url: cannot read sslrootcert {path}: {reason}")]
    RootCert { path: PathBuf, reason: String },
    #[error("cannot connect to {target}: {}", with_causes(source))]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl Database {
    /// Parses a `postgres://` URL. `sslmode` and `sslrootcert` are taken out
    /// here (tokio-postgres would refuse `verify-full`); the rest is libpq's.
    pub(crate) fn from_url(text: &str) -> Result<Database, DatabaseError> {
        // Not parsed as a URL here: libpq's multi-host form
        // (`postgres://u@h1:5432,h2:5432/db`) is not one.
        let scheme = text.split_once("://").map_or("", |(scheme, _)| scheme);
        if !matches!(scheme, "postgres" | "postgresql") {
            return Err(DatabaseError::Url(format!(
                "scheme {scheme:?} is not supported; use postgres://user:password@host:port/dbname"
            )));
        }
        let (base, query) = text.split_once('?').unwrap_or((text, ""));
        let (mut mode, mut root_cert) = (SslMode::Prefer, None);
        let mut kept = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "sslmode" => mode = parse_ssl_mode(&value)?,
                "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
                _ => {
                    kept.append_pair(&key, &value);
                }
            }
        }
        let kept = kept.finish();
        let cleaned = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{kept}")
        };
        let mut pg: tokio_postgres::Config = cleaned
            .parse()
            .map_err(|e| DatabaseError::Url(format!("{e}")))?;
        pg.ssl_mode(match mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            _ => PgSslMode::Require,
        });
        if pg.get_application_name().is_none() {
            pg.application_name("leadhook");
        }
        if pg.get_user().is_none() {
            return Err(DatabaseError::Url(
                "no user given (postgres://USER@host/dbname)".into(),
            ));
        }
        let tls = TlsSettings::new(mode, root_cert.as_deref())?;
        Ok(Database { pg, tls })
    }

    pub(crate) fn pg_config(&self) -> &tokio_postgres::Config {
        &self.pg
    }

    pub(crate) fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    pub(crate) fn user(&self) -> &str {
        self.pg.get_user().unwrap_or_default()
    }

    pub(crate) fn dbname(&self) -> &str {
        self.pg.get_dbname().unwrap_or_else(|| self.user())
    }

    /// An SQL connection whose notifications ring the returned doorbell
    /// (notify mode listens on it).
    pub(crate) async fn sql_with_doorbell(
        &self,
    ) -> Result<(tokio_postgres::Client, Arc<Notify>), DatabaseError> {
        let (client, mut connection) = self.connect().await?;
        let doorbell = Arc::new(Notify::new());
        let ring = doorbell.clone();
        tokio::spawn(async move {
            // Driving the connection by hand is how tokio-postgres hands out notifications.
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => ring.notify_one(),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "SQL connection closed");
                        break;
                    }
                    None => break,
                }
            }
        });
        Ok((client, doorbell))
    }

    /// Opens an ordinary SQL connection; its driver task ends with the client.
    pub(crate) async fn sql(&self) -> Result<tokio_postgres::Client, DatabaseError> {
        let (client, connection) = self.connect().await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "SQL connection closed");
            }
        });
        Ok(client)
    }

    /// Every SQL connection of leadhook commits with `synchronous_commit =
    /// on`, whatever the server's default: what it writes (dead letters, the
    /// slot record, outbox deletes) is what lets the slot's position move
    /// past a change, so it must survive a crash (and, with synchronous
    /// standbys, a failover). Set in the startup packet, so no round trip.
    async fn connect(&self) -> Result<(tokio_postgres::Client, SqlConnection), DatabaseError> {
        let connector = MakeRustlsConnect::new((*self.tls.client_config()).clone());
        let mut pg = self.pg.clone();
        let options = match pg.get_options() {
            Some(given) => format!("{given} -c synchronous_commit=on"),
            None => "-c synchronous_commit=on".to_owned(),
        };
        pg.options(&options);
        pg.connect(connector)
            .await
            .map_err(|source| DatabaseError::Connect {
                target: self.to_string(),
                source,
            })
    }
}

/// tokio-postgres puts the useful part ("invalid peer certificate:
/// UnknownIssuer", "password authentication failed") in the error's sources.
pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn parse_ssl_mode(value: &str) -> Result<SslMode, DatabaseError> {
    Ok(match value {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => {
            return Err(DatabaseError::Url(format!(
                "sslmode={other} is not supported; use disable, prefer, require, verify-ca or verify-full"
            )));
        }
    })
}

/// `postgres://user@host:port/dbname`: never the password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = match self.pg.get_hosts().first() {
            Some(Host::Tcp(host)) => host.clone(),
            Some(Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        write!(
            f,
            "postgres://{}@{host}:{port}/{}",
            self.user(),
            self.dbname()
        )
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self}, sslmode={:?})", self.tls.mode())
    }
}

/// Shared by both connections so a certificate is parsed once.
pub(crate) type ClientConfig = Arc<rustls::ClientConfig>;

/// rustls needs one process-wide crypto provider (ring: small and quick to
/// build); installing it twice is harmless.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_never_shows_the_password() {
        let db =
            Database::from_url("postgres://app:hunter2@db.internal:6543/leads?sslmode=disable")
                .unwrap();
        assert_eq!(db.to_string(), "postgres://app@db.internal:6543/leads");
        assert!(!format!("{db:?}").contains("hunter2"));
        assert_eq!(db.pg_config().get_password(), Some(&b"hunter2"[..]));
    }

    #[test]
    fn several_hosts_and_target_session_attrs_are_understood() {
        let db = Database::from_url(
            "postgres://app:pw@10.0.0.1:5432,10.0.0.2:5433/leads?target_session_attrs=read-write&sslmode=disable",
        )
        .unwrap();
        assert_eq!(db.pg_config().get_hosts().len(), 2);
        assert_eq!(db.pg_config().get_ports(), [5432, 5433]);
        assert_eq!(
            db.pg_config().get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert_eq!(db.tls().mode(), SslMode::Disable);
    }

    #[test]
    fn libpq_ssl_modes_are_understood_including_verify_full() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            let db = Database::from_url(&format!(
                "postgres://u@h/d?sslmode={text}&connect_timeout=3"
            ))
            .unwrap();
            assert_eq!(db.tls().mode(), mode);
        }
        assert_eq!(
            Database::from_url("postgres://u@h/d").unwrap().tls().mode(),
            SslMode::Prefer
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |url: &str| Database::from_url(url).unwrap_err().to_string();
        assert!(err("mysql://u@h/d").contains("scheme \"mysql\""));
        assert!(err("leads").contains("scheme \"\""));
        assert!(
            err("postgres://u@h/d?sslmode=sometimes")
                .contains("sslmode=sometimes is not supported")
        );
        assert!(err("postgres://h/d").contains("no user given"));
        assert!(
            err("postgres://u@h/d?sslrootcert=/nonexistent/root.crt&sslmode=verify-full")
                .contains("sslrootcert")
        );
    }
}
