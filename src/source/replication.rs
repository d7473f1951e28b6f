//! A thin client for PostgreSQL's streaming-replication sub-protocol.
//!
//! tokio-postgres cannot speak CopyBoth, so this speaks it directly with
//! `postgres-protocol`: startup with `replication=database`, password, md5 and
//! SCRAM-SHA-256 authentication, TLS, `START_REPLICATION … LOGICAL`, then
//! XLogData and keepalive frames in, standby status updates out.
//!
//! Reading is cancel-safe: bytes are accumulated in a `BytesMut` and a frame
//! is only taken off once complete, so [`ReplicationConnection::next`] can sit
//! in a `select!` beside timers without ever losing part of a frame.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::AuthenticationSaslBody;
use postgres_protocol::message::backend::{ErrorFields, ErrorResponseBody, Message};
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::{Host, TargetSessionAttrs};

use crate::database::{Database, SslMode};
use crate::lsn::{Lsn, PG_EPOCH_OFFSET_MICROS};

mod identify;
pub(crate) use identify::ServerIdentity;

/// CopyBothResponse, which `backend::Message::parse` does not know.
const COPY_BOTH_RESPONSE: u8 = b'W';
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the server streams once replication has started.
#[derive(Debug)]
pub(crate) enum ReplicationMessage {
    /// One pgoutput message; `wal_start` is the WAL position of its record.
    XLogData { wal_start: Lsn, data: Bytes },
    /// The server's WAL end, and whether it wants a status update now.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// Why the replication connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("cannot reach {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("{0}")]
    Server(ServerError),
    #[error("unexpected message from the server: {0}")]
    Protocol(String),
    #[error("the server ended the replication stream")]
    Ended,
    #[error("{0} is read-only (a standby) and target_session_attrs=read-write asks for a primary")]
    ReadOnly(String),
}

impl ReplicationError {
    /// The SQLSTATE, when the server said no.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            ReplicationError::Server(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// An ErrorResponse, kept whole so the message can tell the user what to do.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) hint: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server error {}: {}", self.code, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// Anything we can speak the protocol over: TCP, a Unix socket, or TLS.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A backend frame, including the one `postgres-protocol` cannot parse.
enum Frame {
    CopyBothResponse,
    Message(Message),
}

/// One replication connection (`replication=database`).
pub(crate) struct ReplicationConnection {
    stream: Box<dyn Transport>,
    /// Bytes read but not yet taken off as a complete frame.
    read_buf: BytesMut,
    /// Reused for every outgoing message.
    write_buf: BytesMut,
}

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
        Err(last_error
            .unwrap_or_else(|| ReplicationError::Protocol("database.url names no host".into())))
    }

    async fn connect_one(
        db: &Database,
        host: &Host,
        port: u16,
    ) -> Result<ReplicationConnection, ReplicationError> {
        let stream = open(db, host, port).await?;
        let mut conn = ReplicationConnection {
            stream,
            read_buf: BytesMut::with_capacity(64 * 1024),
            write_buf: BytesMut::with_capacity(256),
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
                    return Err(ReplicationError::Protocol(
                        "expected ReadyForQuery after authentication".into(),
                    ));
                }
            }
        }
    }

    async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&[u8]>,
    ) -> Result<(), ReplicationError> {
        let need_password = || {
            ReplicationError::Auth("the server asks for a password; put it in database.url".into())
        };
        match self.read_frame().await? {
            Frame::Message(Message::AuthenticationOk) => Ok(()),
            Frame::Message(Message::AuthenticationCleartextPassword) => {
                frontend::password_message(password.ok_or_else(need_password)?, &mut self.write_buf)?;
                self.flush().await?;
                self.expect_auth_ok().await
            }
            Frame::Message(Message::AuthenticationMd5Password(body)) => {
                let hash = md5_hash(user.as_bytes(), password.ok_or_else(need_password)?, body.salt());
                frontend::password_message(hash.as_bytes(), &mut self.write_buf)?;
                self.flush().await?;
                self.expect_auth_ok().await
            }
            Frame::Message(Message::AuthenticationSasl(body)) => self.scram(body, password.ok_or_else(need_password)?).await,
            Frame::Message(Message::ErrorResponse(body)) => Err(server_error(&body)),
            _ => Err(ReplicationError::Auth("the server asks for an authentication method leadhook does not support (use scram-sha-256, md5 or password)".into())),
        }
    }

    async fn scram(
        &mut self,
        body: AuthenticationSaslBody,
        password: &[u8],
    ) -> Result<(), ReplicationError> {
        let mut mechanisms = body.mechanisms();
        let mut offered = false;
        while let Some(mechanism) = mechanisms.next()? {
            offered |= mechanism == sasl::SCRAM_SHA_256;
        }
        if !offered {
            return Err(ReplicationError::Auth(
                "the server offers no SCRAM-SHA-256".into(),
            ));
        }
        let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
        frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), &mut self.write_buf)?;
        self.flush().await?;
        match self.read_frame().await? {
            Frame::Message(Message::AuthenticationSaslContinue(body)) => {
                scram.update(body.data())?
            }
            Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(&body)),
            _ => return Err(ReplicationError::Protocol("expected SASL continue".into())),
        }
        frontend::sasl_response(scram.message(), &mut self.write_buf)?;
        self.flush().await?;
        match self.read_frame().await? {
            Frame::Message(Message::AuthenticationSaslFinal(body)) => scram
                .finish(body.data())
                .map_err(|e| ReplicationError::Auth(format!("server signature: {e}")))?,
            Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(&body)),
            _ => return Err(ReplicationError::Protocol("expected SASL final".into())),
        }
        self.expect_auth_ok().await
    }

    async fn expect_auth_ok(&mut self) -> Result<(), ReplicationError> {
        match self.read_frame().await? {
            Frame::Message(Message::AuthenticationOk) => Ok(()),
            Frame::Message(Message::ErrorResponse(body)) => Err(server_error(&body)),
            _ => Err(ReplicationError::Protocol(
                "expected AuthenticationOk".into(),
            )),
        }
    }

    /// Starts logical decoding with pgoutput (protocol version 1) from
    /// `start` (`0/0` means the slot's confirmed position).
    pub(crate) async fn start_replication(
        &mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
    ) -> Result<(), ReplicationError> {
        let command = start_replication_command(slot, publication, start);
        frontend::query(&command, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            match self.read_frame().await? {
                Frame::CopyBothResponse => return Ok(()),
                Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(&body)),
                Frame::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                _ => {
                    return Err(ReplicationError::Protocol(
                        "expected CopyBothResponse".into(),
                    ));
                }
            }
        }
    }

    /// The next XLogData or keepalive. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<ReplicationMessage, ReplicationError> {
        loop {
            match self.read_frame().await? {
                Frame::Message(Message::CopyData(body)) => {
                    return parse_copy_data(body.into_bytes());
                }
                Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(&body)),
                Frame::Message(Message::CopyDone) => return Err(ReplicationError::Ended),
                Frame::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                _ => {
                    return Err(ReplicationError::Protocol(
                        "unexpected message in the replication stream".into(),
                    ));
                }
            }
        }
    }

    /// Reports `lsn` as written, flushed and applied: everything before it is
    /// handled, and the server may recycle that WAL.
    /// With `ping`, asks the server to answer at once (with a keepalive).
    pub(crate) async fn send_status(
        &mut self,
        lsn: Lsn,
        ping: bool,
    ) -> Result<(), ReplicationError> {
        let mut body = BytesMut::with_capacity(34);
        body.put_u8(b'r');
        for _ in 0..3 {
            body.put_u64(lsn.0);
        }
        body.put_i64(pg_now_micros());
        body.put_u8(u8::from(ping));
        frontend::CopyData::new(body.freeze())?.write(&mut self.write_buf);
        self.flush().await?;
        Ok(())
    }

    /// Ends the stream politely (CopyDone, Terminate), so the server
    /// releases the slot at once rather than when it notices the socket.
    pub(crate) async fn close(mut self) {
        frontend::copy_done(&mut self.write_buf);
        frontend::terminate(&mut self.write_buf);
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        self.stream.flush().await
    }

    /// Reads until one complete frame is buffered, then takes it off.
    async fn read_frame(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            if let Some(frame) = parse_frame(&mut self.read_buf)? {
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return Err(ReplicationError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
        }
    }
}

/// Takes one complete frame off `buf`, or `Ok(None)` if more bytes are needed.
fn parse_frame(buf: &mut BytesMut) -> io::Result<Option<Frame>> {
    if buf.first() == Some(&COPY_BOTH_RESPONSE) {
        let Some(len) = buf.get(1..5) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "invalid CopyBothResponse length",
            ));
        }
        if buf.len() < 1 + len {
            return Ok(None);
        }
        buf.advance(1 + len);
        return Ok(Some(Frame::CopyBothResponse));
    }
    Ok(Message::parse(buf)?.map(Frame::Message))
}

fn parse_copy_data(mut data: Bytes) -> Result<ReplicationMessage, ReplicationError> {
    let short = || ReplicationError::Protocol("truncated replication message".into());
    if data.is_empty() {
        return Err(short());
    }
    match data.get_u8() {
        b'w' if data.len() >= 24 => {
            let wal_start = Lsn(data.get_u64());
            data.advance(16); // WAL end and send time: not needed per message.
            Ok(ReplicationMessage::XLogData { wal_start, data })
        }
        b'k' if data.len() >= 17 => {
            let wal_end = Lsn(data.get_u64());
            data.advance(8);
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                reply_requested: data.get_u8() == 1,
            })
        }
        b'w' | b'k' => Err(short()),
        tag => Err(ReplicationError::Protocol(format!(
            "unknown replication message tag {tag:#04x}"
        ))),
    }
}

/// Slot and publication are identifiers: double-quoted, and the publication
/// list is also a string literal, so single quotes are doubled as well.
fn start_replication_command(slot: &str, publication: &str, start: Lsn) -> String {
    let publications = quote_identifier(publication).replace('\'', "''");
    format!(
        "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names '{publications}')",
        quote_identifier(slot)
    )
}

pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn server_error(body: &ErrorResponseBody) -> ReplicationError {
    let mut error = ServerError {
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut fields: ErrorFields<'_> = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'C' => error.code = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            b'H' => error.hint = Some(value),
            _ => {}
        }
    }
    ReplicationError::Server(error)
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

/// Opens the socket and, unless `sslmode=disable`, negotiates TLS.
async fn open(
    db: &Database,
    host: &Host,
    port: u16,
) -> Result<Box<dyn Transport>, ReplicationError> {
    let host_name = match host {
        Host::Unix(dir) => {
            let stream = UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?;
            return Ok(Box::new(stream));
        }
        Host::Tcp(name) => name,
    };
    let mut tcp = TcpStream::connect((host_name.as_str(), port)).await?;
    tcp.set_nodelay(true)?;
    let mode = db.tls().mode();
    if mode == SslMode::Disable {
        return Ok(Box::new(tcp));
    }
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    match tcp.read_u8().await? {
        b'S' => {
            let name = ServerName::try_from(host_name.clone())
                .map_err(|e| ReplicationError::Tls(format!("{host_name}: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(db.tls().client_config());
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| ReplicationError::Tls(e.to_string()))?;
            Ok(Box::new(tls))
        }
        b'N' if mode == SslMode::Prefer => Ok(Box::new(tcp)),
        b'N' => Err(ReplicationError::Tls(format!(
            "the server does not support TLS but database.url asks for sslmode={mode:?}"
        ))),
        other => Err(ReplicationError::Protocol(format!(
            "unexpected answer {other:#04x} to SSLRequest"
        ))),
    }
}

fn pg_now_micros() -> i64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_unix.as_micros()).unwrap_or(i64::MAX) - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests;
