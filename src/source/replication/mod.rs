//! A thin client for PostgreSQL's streaming-replication sub-protocol.
//!
//! tokio-postgres cannot speak CopyBoth, so this speaks it directly with
//! `postgres-protocol`: startup with `replication=database`, password, md5 and
//! SCRAM-SHA-256 authentication, TLS, `START_REPLICATION … LOGICAL`, then
//! XLogData and keepalive frames in, standby status updates out.
//!
//! Split as tokio-postgres splits connecting: [`frame`] is the pure byte
//! layer (no I/O), `transport` opens the socket and TLS, `auth` answers the
//! server's authentication request, `connect` tries the hosts and starts up,
//! `identify` runs simple queries; this module is the connection itself.
//!
//! Reading is cancel-safe: bytes are accumulated in a `BytesMut` and a frame
//! is only taken off once complete, so [`ReplicationConnection::next`] can sit
//! in a `select!` beside timers without ever losing part of a frame.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::lsn::{Lsn, PG_EPOCH_OFFSET_MICROS};

mod auth;
mod connect;
mod error;
mod frame;
mod identify;
mod transport;

pub use error::ReplicationError;
pub(crate) use frame::ReplicationMessage;

use error::{ProtocolError, server_error};
use frame::{Frame, parse_copy_data, parse_frame};
use transport::Transport;

/// One replication connection (`replication=database`).
pub(crate) struct ReplicationConnection {
    stream: Box<dyn Transport>,
    /// Bytes read but not yet taken off as a complete frame.
    read_buf: BytesMut,
    /// Reused for every outgoing message.
    write_buf: BytesMut,
    /// The largest frame accepted (`source.max_message_size`).
    max_frame: usize,
}

impl ReplicationConnection {
    /// Starts logical decoding with pgoutput (protocol version 1) from
    /// `start` (`0/0` means the slot's confirmed position), with logical
    /// messages (a backfill's watermarks are those).
    pub(crate) async fn start_replication(
        &mut self,
        slot: &str,
        publication: &str,
        start: Lsn,
    ) -> Result<(), ReplicationError> {
        let command = frame::start_replication_command(slot, publication, start);
        frontend::query(&command, &mut self.write_buf)?;
        self.flush().await?;
        loop {
            match self.read_frame().await? {
                Frame::CopyBothResponse => return Ok(()),
                Frame::Message(Message::ErrorResponse(body)) => return Err(server_error(&body)),
                Frame::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => {}
                _ => {
                    return Err(ProtocolError::Expected("CopyBothResponse").into());
                }
            }
        }
    }

    /// The next XLogData or keepalive. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Result<ReplicationMessage, ReplicationError> {
        loop {
            if let Some(message) = in_stream(self.read_frame().await?)? {
                return Ok(message);
            }
        }
    }

    /// The next XLogData or keepalive if its bytes were already read: a
    /// burst of changes is taken without a trip through the runtime each.
    pub(crate) fn buffered(&mut self) -> Result<Option<ReplicationMessage>, ReplicationError> {
        while let Some(frame) = parse_frame(&mut self.read_buf, self.max_frame)? {
            if let Some(message) = in_stream(frame)? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// Refuses frames over `bytes` from now on (before START_REPLICATION:
    /// the startup's own messages are small).
    pub(crate) fn limit_messages(&mut self, bytes: u64) {
        self.max_frame = usize::try_from(bytes).unwrap_or(usize::MAX);
    }

    /// Reports `lsn` as written, flushed and applied: everything before it is
    /// handled, and the server may recycle that WAL.
    /// With `ping`, asks the server to answer at once (with a keepalive).
    pub(crate) async fn send_status(
        &mut self,
        lsn: Lsn,
        ping: bool,
    ) -> Result<(), ReplicationError> {
        let body = frame::status_update(lsn, pg_now_micros(), ping);
        frontend::CopyData::new(body)?.write(&mut self.write_buf);
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
            if let Some(frame) = parse_frame(&mut self.read_buf, self.max_frame)? {
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

/// What a frame of the stream says: `None` for a notice or a parameter
/// status, which are skipped.
fn in_stream(frame: Frame) -> Result<Option<ReplicationMessage>, ReplicationError> {
    match frame {
        Frame::Message(Message::CopyData(body)) => Ok(Some(parse_copy_data(body.into_bytes())?)),
        Frame::Message(Message::ErrorResponse(body)) => Err(server_error(&body)),
        Frame::Message(Message::CopyDone) => Err(ReplicationError::Ended),
        Frame::Message(Message::NoticeResponse(_) | Message::ParameterStatus(_)) => Ok(None),
        _ => Err(ProtocolError::InStream.into()),
    }
}

/// Takes every frame off `data` as a connection would, and decodes the
/// pgoutput of each XLogData, until the bytes end or are invalid: what the
/// `replication_stream` fuzz target runs.
#[cfg(feature = "fuzzing")]
pub(crate) fn take_stream(data: &[u8], limit: usize) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = parse_frame(&mut buf, limit) {
        match frame {
            Frame::Message(Message::CopyData(body)) => {
                if let Ok(ReplicationMessage::XLogData { data, .. }) =
                    parse_copy_data(body.into_bytes())
                {
                    let _ = crate::source::pgoutput::decode(data);
                }
            }
            // Its fields reach the log and the typed SQLSTATE.
            Frame::Message(Message::ErrorResponse(body)) => {
                let _ = server_error(&body).to_string();
            }
            _ => {}
        }
    }
}

/// The client's clock for status updates: µs since PostgreSQL's epoch.
fn pg_now_micros() -> i64 {
    let since_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_unix.as_micros()).unwrap_or(i64::MAX) - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests;
