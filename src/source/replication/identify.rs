//! Simple queries on the replication connection: `IDENTIFY_SYSTEM`, which
//! says which WAL history the server is on, and the read-write check that
//! `target_session_attrs=read-write` asks for.

use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use super::error::{ProtocolError, server_error};
use super::frame::Frame;
use super::{ReplicationConnection, ReplicationError};
use crate::history::ServerIdentity;

impl ReplicationConnection {
    /// Runs one simple query; the rows as text (`None` for NULL).
    pub(crate) async fn simple_query(
        &mut self,
        query: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        frontend::query(query, &mut self.write_buf)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.read_frame().await? {
                Frame::Message(Message::DataRow(body)) => {
                    let buffer = body.buffer();
                    let row = body
                        .ranges()
                        .map(|range| {
                            Ok(range.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned()))
                        })
                        .collect()?;
                    rows.push(row);
                }
                Frame::Message(Message::ErrorResponse(body)) => failed = Some(server_error(&body)),
                Frame::Message(Message::ReadyForQuery(_)) => {
                    return match failed {
                        Some(error) => Err(error),
                        None => Ok(rows),
                    };
                }
                Frame::Message(
                    Message::RowDescription(_)
                    | Message::CommandComplete(_)
                    | Message::EmptyQueryResponse
                    | Message::NoticeResponse(_)
                    | Message::ParameterStatus(_),
                ) => {}
                _ => {
                    return Err(ProtocolError::InAnswer(query.to_owned()).into());
                }
            }
        }
    }

    /// `IDENTIFY_SYSTEM`: system identifier, timeline and WAL position.
    pub(crate) async fn identify_system(&mut self) -> Result<ServerIdentity, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let bad = ProtocolError::IdentifySystem;
        let row = rows.first().ok_or_else(|| bad("no row"))?;
        let field = |i: usize| {
            row.get(i)
                .and_then(Option::as_deref)
                .ok_or_else(|| bad("a field is missing"))
        };
        Ok(ServerIdentity {
            system_id: field(0)?.parse().map_err(|_| bad("system identifier"))?,
            timeline: field(1)?.parse().map_err(|_| bad("timeline"))?,
            wal_position: field(2)?.parse().map_err(|_| bad("xlogpos"))?,
        })
    }

    /// Whether this server takes writes (`SHOW transaction_read_only` is
    /// `off`), as libpq checks for `target_session_attrs=read-write`.
    pub(crate) async fn is_read_write(&mut self) -> Result<bool, ReplicationError> {
        let rows = self.simple_query("SHOW transaction_read_only").await?;
        let value = rows.first().and_then(|r| r.first()).cloned().flatten();
        Ok(value.as_deref() == Some("off"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_tag_folds_both_halves_of_the_identifier() {
        assert_eq!(
            ServerIdentity::system_tag(0x6b8f_3a21_0000_0000),
            0x6b8f_3a21
        );
        assert_eq!(
            ServerIdentity::system_tag(0x1234_5678_1234_5678),
            0,
            "equal halves cancel"
        );
        assert_ne!(
            ServerIdentity::system_tag(7_714_394_886_324_305_346),
            ServerIdentity::system_tag(7_714_394_886_324_305_347)
        );
    }
}
