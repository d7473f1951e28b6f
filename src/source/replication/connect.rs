//! Connecting: each host of `database.url` in turn, as libpq does, then the
//! startup message and authentication.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio_postgres::config::{Host, TargetSessionAttrs};

use super::error::{ProtocolError, server_error};
use super::frame::Frame;
use super::{ReplicationConnection, ReplicationError, transport};
use crate::database::Database;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl ReplicationConnection {
    /// Connects, trying each host in turn as libpq does: a host that cannot
    /// be reached, refuses the startup, or is read-only while
    /// `target_session_attrs=read-write` asks for a primary, passes the turn
    /// to the next. TLS per `sslmode`, then authentication.
    pub(crate) async fn connect(db: &Database) -> Result<ReplicationConnection, ReplicationError> {
        let timeout = db
            .pg_config()
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let mut last_error = None;
        for (host, port) in targets(db) {
            let target = format!("{}:{port}", host_label(&host));
            match tokio::time::timeout(timeout, Self::connect_one(db, &host, port)).await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(ReplicationError::Io(source))) => {
                    last_error = Some(ReplicationError::Connect { target, source })
                }
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {
                    let source = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no answer within {timeout:?}"),
                    );
                    last_error = Some(ReplicationError::Connect { target, source });
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ProtocolError::NoHost.into()))
    }

    async fn connect_one(
        db: &Database,
        host: &Host,
        port: u16,
    ) -> Result<ReplicationConnection, ReplicationError> {
        let stream = transport::open(db, host, port).await?;
        let mut conn = ReplicationConnection {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(256),
            max_frame: crate::config::DEFAULT_MAX_MESSAGE_SIZE as usize,
        };
        conn.startup(db).await?;
        let wants_primary =
            db.pg_config().get_target_session_attrs() == TargetSessionAttrs::ReadWrite;
        if wants_primary && !conn.is_read_write().await? {
            return Err(ReplicationError::ReadOnly(format!(
                "{}:{port}",
                host_label(host)
            )));
        }
        Ok(conn)
    }

    async fn startup(&mut self, db: &Database) -> Result<(), ReplicationError> {
        let pg = db.pg_config();
        let mut params = vec![
            ("user", db.user()),
            ("database", db.dbname()),
            ("replication", "database"),
            ("client_encoding", "UTF8"),
        ];
        if let Some(name) = pg.get_application_name() {
            params.push(("application_name", name));
        }
        frontend::startup_message(params, &mut self.write_buf)?;
        self.flush().await?;
        self.authenticate(db.user(), pg.get_password()).await?;
        loop {
            match self.read_frame().await? {
                Frame::Message(Message::ReadyForQuery(_)) => return Ok(()),
                Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(&body)),
                Frame::Message(
                    Message::ParameterStatus(_)
                    | Message::BackendKeyData(_)
                    | Message::NoticeResponse(_),
                ) => {}
                _ => {
                    return Err(
                        ProtocolError::Expected("ReadyForQuery after authentication").into(),
                    );
                }
            }
        }
    }
}

fn targets(db: &Database) -> Vec<(Host, u16)> {
    let pg = db.pg_config();
    let hosts = match pg.get_hosts() {
        [] => vec![Host::Tcp("localhost".into())],
        hosts => hosts.to_vec(),
    };
    let ports = pg.get_ports();
    hosts
        .into_iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            (host, port)
        })
        .collect()
}

fn host_label(host: &Host) -> String {
    match host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    }
}
