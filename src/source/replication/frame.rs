//! The replication protocol's bytes, without I/O: taking complete frames off
//! a read buffer, reading the CopyData the stream carries, and writing the
//! commands and status updates we send. Pure, so it is tested without a server.

use postgres_protocol::escape::escape_identifier;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;

use super::error::{ProtocolError, ReplicationError};
use crate::lsn::Lsn;

/// CopyBothResponse, which `backend::Message::parse` does not know.
const COPY_BOTH_RESPONSE: u8 = b'W';

/// What the server streams once replication has started.
#[derive(Debug)]
pub(crate) enum ReplicationMessage {
    /// One pgoutput message; `wal_start` is the WAL position of its record.
    XLogData { wal_start: Lsn, data: Bytes },
    /// The server's WAL end, and whether it wants a status update now.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// A backend frame, including the one `postgres-protocol` cannot parse.
pub(super) enum Frame {
    CopyBothResponse,
    Message(Message),
}

/// Takes one complete frame off `buf`, or `Ok(None)` if more bytes are
/// needed. A frame whose header announces more than `limit` bytes is
/// refused as soon as its header is in, before anything is reserved for it
/// (`Message::parse` would reserve what the header says).
pub(super) fn parse_frame(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<Frame>, ReplicationError> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len < 4 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("invalid frame length {len}"),
        )
        .into());
    }
    if len > limit {
        return Err(ProtocolError::TooLarge { len, limit }.into());
    }
    if buf.first() == Some(&COPY_BOTH_RESPONSE) {
        if buf.len() < 1 + len {
            return Ok(None);
        }
        buf.advance(1 + len);
        return Ok(Some(Frame::CopyBothResponse));
    }
    Ok(Message::parse(buf)?.map(Frame::Message))
}

pub(super) fn parse_copy_data(mut data: Bytes) -> Result<ReplicationMessage, ProtocolError> {
    if data.is_empty() {
        return Err(ProtocolError::Truncated);
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
        b'w' | b'k' => Err(ProtocolError::Truncated),
        tag => Err(ProtocolError::UnknownTag(tag)),
    }
}

/// A standby status update: `lsn` as written, flushed and applied, the
/// client's clock (µs since PostgreSQL's epoch), and whether to answer at once.
pub(super) fn status_update(lsn: Lsn, now: i64, ping: bool) -> Bytes {
    let mut body = BytesMut::with_capacity(34);
    body.put_u8(b'r');
    for _ in 0..3 {
        body.put_u64(lsn.0);
    }
    body.put_i64(now);
    body.put_u8(u8::from(ping));
    body.freeze()
}

/// Slot and publication are identifiers: double-quoted, and the publication
/// list is also a string literal, so single quotes are doubled as well.
pub(super) fn start_replication_command(slot: &str, publication: &str, start: Lsn) -> String {
    let publications = escape_identifier(publication).replace('\'', "''");
    format!(
        "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names '{publications}', messages 'true')",
        escape_identifier(slot)
    )
}
