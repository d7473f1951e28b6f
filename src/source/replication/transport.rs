//! The byte stream under the protocol: a Unix socket, TCP, or TLS over TCP
//! as `sslmode` asks.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;

use super::ReplicationError;
use super::error::{ProtocolError, TlsError};
use crate::database::{Database, SslMode};

/// Anything we can speak the protocol over: TCP, a Unix socket, or TLS.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Opens the socket and, unless `sslmode=disable`, negotiates TLS.
pub(super) async fn open(
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
            let name = ServerName::try_from(host_name.clone()).map_err(|source| {
                TlsError::InvalidName {
                    host: host_name.clone(),
                    source,
                }
            })?;
            let connector = tokio_rustls::TlsConnector::from(db.tls().client_config());
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(TlsError::Handshake)?;
            Ok(Box::new(tls))
        }
        b'N' if mode == SslMode::Prefer => Ok(Box::new(tcp)),
        b'N' => Err(TlsError::Unavailable(mode).into()),
        other => Err(ProtocolError::SslAnswer(other).into()),
    }
}
