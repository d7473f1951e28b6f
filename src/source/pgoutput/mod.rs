//! Decoder for the `pgoutput` logical replication protocol, version 1
//! (PostgreSQL 15 docs, "Logical Replication Message Formats").
//!
//! Pure and I/O-free: it turns the payload of one XLogData message into a
//! typed [`LogicalMessage`] and nothing else, so it can be tested against
//! captured bytes and fuzzed without a server. The input comes off the
//! network, so every length and count is checked against what is left before
//! it is used: malformed input is a [`DecodeError`], never a panic or an
//! allocation larger than the input. Column values are slices of the input
//! (`Bytes::slice`), not copies, because this runs once per row change.

use bytes::Bytes;

use crate::lsn::Lsn;

pub(crate) use crate::change::row::{Column, OldTuple, Relation, Tuple, Value};

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogicalMessage {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(Message),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Begin {
    /// LSN of the commit record; equals the matching [`Commit::commit_lsn`].
    pub(crate) final_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC, as sent.
    pub(crate) commit_time: i64,
    pub(crate) xid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Commit {
    /// Kept for completeness: the server always sends 0 here.
    #[allow(dead_code, reason = "protocol field, currently always 0")]
    pub(crate) flags: u8,
    pub(crate) commit_lsn: Lsn,
    /// End of the commit record: the position to confirm once the
    /// transaction has been handled.
    pub(crate) end_lsn: Lsn,
    /// Microseconds since 2000-01-01 UTC, as sent.
    pub(crate) commit_time: i64,
}

/// Sent after `Begin` when the transaction was replayed from another origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    pub(crate) commit_lsn: Lsn,
    pub(crate) name: String,
}

/// Names a non-builtin type before a `Relation` that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeMessage {
    pub(crate) id: u32,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Insert {
    pub(crate) relation_id: u32,
    pub(crate) new: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Update {
    pub(crate) relation_id: u32,
    /// Only present when the key changed or the replica identity is `FULL`.
    pub(crate) old: Option<OldTuple>,
    pub(crate) new: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delete {
    pub(crate) relation_id: u32,
    pub(crate) old: OldTuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Truncate {
    /// Bit 1: `CASCADE`, bit 2: `RESTART IDENTITY`.
    pub(crate) options: u8,
    pub(crate) relation_ids: Vec<u32>,
}

/// A `pg_logical_emit_message` record (needs the `messages` option).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// Non-transactional messages arrive outside any `Begin`/`Commit`.
    pub(crate) transactional: bool,
    pub(crate) lsn: Lsn,
    pub(crate) prefix: String,
    pub(crate) content: Bytes,
}

/// Why a pgoutput message could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput: {kind} at byte {offset}")]
pub(crate) struct DecodeError {
    kind: ErrorKind,
    offset: usize,
}

impl DecodeError {
    fn new(kind: ErrorKind, offset: usize) -> Self {
        DecodeError { kind, offset }
    }

    /// Byte offset into the message where the offending field starts.
    #[cfg(test)]
    pub(crate) fn offset(&self) -> usize {
        self.offset
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ErrorKind {
    #[error("empty message")]
    Empty,
    #[error("unknown message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("truncated {0} message")]
    Truncated(&'static str),
    #[error("unexpected byte {found:#04x} where {expected} was expected in {message} message")]
    Unexpected {
        message: &'static str,
        expected: &'static str,
        found: u8,
    },
    #[error("invalid UTF-8 in a name in {0} message")]
    InvalidUtf8(&'static str),
    #[error("negative length {len} in {message} message")]
    NegativeLength { message: &'static str, len: i32 },
    #[error("{count} trailing bytes after {message} message")]
    TrailingBytes { message: &'static str, count: usize },
}

/// Decodes one XLogData payload. The returned values share `buf`'s allocation.
pub(crate) fn decode(buf: Bytes) -> Result<LogicalMessage, DecodeError> {
    let Some(&tag) = buf.first() else {
        return Err(DecodeError::new(ErrorKind::Empty, 0));
    };
    type Body = fn(&mut Cursor) -> Result<LogicalMessage, DecodeError>;
    let (name, body): (&'static str, Body) = match tag {
        b'B' => ("Begin", |c| begin(c).map(LogicalMessage::Begin)),
        b'C' => ("Commit", |c| commit(c).map(LogicalMessage::Commit)),
        b'O' => ("Origin", |c| origin(c).map(LogicalMessage::Origin)),
        b'R' => ("Relation", |c| relation(c).map(LogicalMessage::Relation)),
        b'Y' => ("Type", |c| type_message(c).map(LogicalMessage::Type)),
        b'I' => ("Insert", |c| insert(c).map(LogicalMessage::Insert)),
        b'U' => ("Update", |c| update(c).map(LogicalMessage::Update)),
        b'D' => ("Delete", |c| delete(c).map(LogicalMessage::Delete)),
        b'T' => ("Truncate", |c| truncate(c).map(LogicalMessage::Truncate)),
        b'M' => ("Message", |c| message(c).map(LogicalMessage::Message)),
        _ => return Err(DecodeError::new(ErrorKind::UnknownTag(tag), 0)),
    };
    let mut c = Cursor {
        buf,
        pos: 1,
        message: name,
    };
    let msg = body(&mut c)?;
    c.finish()?;
    Ok(msg)
}

fn begin(c: &mut Cursor) -> Result<Begin, DecodeError> {
    Ok(Begin {
        final_lsn: c.lsn()?,
        commit_time: c.i64()?,
        xid: c.u32()?,
    })
}

fn commit(c: &mut Cursor) -> Result<Commit, DecodeError> {
    Ok(Commit {
        flags: c.u8()?,
        commit_lsn: c.lsn()?,
        end_lsn: c.lsn()?,
        commit_time: c.i64()?,
    })
}

fn origin(c: &mut Cursor) -> Result<Origin, DecodeError> {
    Ok(Origin {
        commit_lsn: c.lsn()?,
        name: c.cstr()?,
    })
}

fn relation(c: &mut Cursor) -> Result<Relation, DecodeError> {
    let id = c.u32()?;
    let namespace = c.cstr()?;
    let name = c.cstr()?;
    let replica_identity = c.u8()?;
    // Smallest column: flags, empty name's NUL, type OID, typmod.
    let n = c.count(1 + 1 + 4 + 4)?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        columns.push(Column {
            is_key: c.u8()? & 1 != 0,
            name: c.cstr()?,
            type_oid: c.u32()?,
            type_modifier: c.i32()?,
        });
    }
    Ok(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn type_message(c: &mut Cursor) -> Result<TypeMessage, DecodeError> {
    Ok(TypeMessage {
        id: c.u32()?,
        namespace: c.cstr()?,
        name: c.cstr()?,
    })
}

fn insert(c: &mut Cursor) -> Result<Insert, DecodeError> {
    let relation_id = c.u32()?;
    c.expect(b'N', "'N' (new tuple)")?;
    Ok(Insert {
        relation_id,
        new: tuple(c)?,
    })
}

fn update(c: &mut Cursor) -> Result<Update, DecodeError> {
    let relation_id = c.u32()?;
    let at = c.pos;
    let old = match c.u8()? {
        b'K' => Some(OldTuple::Key(tuple(c)?)),
        b'O' => Some(OldTuple::Full(tuple(c)?)),
        b'N' => None,
        found => return Err(c.unexpected("'K', 'O' or 'N'", found, at)),
    };
    if old.is_some() {
        c.expect(b'N', "'N' (new tuple)")?;
    }
    Ok(Update {
        relation_id,
        old,
        new: tuple(c)?,
    })
}

fn delete(c: &mut Cursor) -> Result<Delete, DecodeError> {
    let relation_id = c.u32()?;
    let at = c.pos;
    let old = match c.u8()? {
        b'K' => OldTuple::Key(tuple(c)?),
        b'O' => OldTuple::Full(tuple(c)?),
        found => return Err(c.unexpected("'K' or 'O'", found, at)),
    };
    Ok(Delete { relation_id, old })
}

fn truncate(c: &mut Cursor) -> Result<Truncate, DecodeError> {
    let at = c.pos;
    let n = c.u32()?;
    let options = c.u8()?;
    // The count precedes the options byte, so check it against what follows.
    let n = usize::try_from(n)
        .ok()
        .filter(|n| n.checked_mul(4).is_some_and(|len| len <= c.remaining()))
        .ok_or_else(|| c.truncated_at(at))?;
    let mut relation_ids = Vec::with_capacity(n);
    for _ in 0..n {
        relation_ids.push(c.u32()?);
    }
    Ok(Truncate {
        options,
        relation_ids,
    })
}

fn message(c: &mut Cursor) -> Result<Message, DecodeError> {
    Ok(Message {
        transactional: c.u8()? & 1 != 0,
        lsn: c.lsn()?,
        prefix: c.cstr()?,
        content: c.sized_bytes()?,
    })
}

fn tuple(c: &mut Cursor) -> Result<Tuple, DecodeError> {
    // Every value is at least its one-byte kind.
    let n = c.count(1)?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let at = c.pos;
        values.push(match c.u8()? {
            b'n' => Value::Null,
            b'u' => Value::UnchangedToast,
            b't' => Value::Text(c.sized_bytes()?),
            b'b' => Value::Binary(c.sized_bytes()?),
            found => return Err(c.unexpected("a value kind ('n', 'u', 't' or 'b')", found, at)),
        });
    }
    Ok(Tuple { values })
}

/// Bounds-checked big-endian reader; `message` names the message in errors.
struct Cursor {
    buf: Bytes,
    pos: usize,
    message: &'static str,
}

impl Cursor {
    fn rest(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    fn remaining(&self) -> usize {
        self.rest().len()
    }

    fn truncated_at(&self, offset: usize) -> DecodeError {
        DecodeError::new(ErrorKind::Truncated(self.message), offset)
    }

    fn unexpected(&self, expected: &'static str, found: u8, offset: usize) -> DecodeError {
        let message = self.message;
        let kind = ErrorKind::Unexpected {
            message,
            expected,
            found,
        };
        DecodeError::new(kind, offset)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = *self
            .rest()
            .first_chunk::<N>()
            .ok_or_else(|| self.truncated_at(self.pos))?;
        self.pos += N;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.array()?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        self.array().map(u64::from_be_bytes).map(Lsn)
    }

    fn expect(&mut self, want: u8, expected: &'static str) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.u8()? {
            b if b == want => Ok(()),
            found => Err(self.unexpected(expected, found, at)),
        }
    }

    /// Reads an Int16 element count and checks that the rest of the message
    /// could hold that many elements of at least `min_size` bytes, so the
    /// caller's `Vec` is bounded by the input, not by an untrusted count.
    fn count(&mut self, min_size: usize) -> Result<usize, DecodeError> {
        let n = usize::from(u16::from_be_bytes(self.array()?));
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(self.truncated_at(self.pos));
        }
        Ok(n)
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = self.rest();
        let text = rest
            .iter()
            .position(|&b| b == 0)
            .and_then(|len| rest.get(..len))
            .ok_or_else(|| self.truncated_at(self.pos))?;
        let text = std::str::from_utf8(text)
            .map_err(|_| DecodeError::new(ErrorKind::InvalidUtf8(self.message), self.pos))?
            .to_owned();
        self.pos += text.len() + 1;
        Ok(text)
    }

    /// An Int32 length followed by that many bytes, sliced without copying.
    fn sized_bytes(&mut self) -> Result<Bytes, DecodeError> {
        let at = self.pos;
        let len = self.i32()?;
        let Ok(len) = usize::try_from(len) else {
            let message = self.message;
            return Err(DecodeError::new(
                ErrorKind::NegativeLength { message, len },
                at,
            ));
        };
        if len > self.remaining() {
            return Err(self.truncated_at(self.pos));
        }
        let value = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(value)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => {
                let message = self.message;
                Err(DecodeError::new(
                    ErrorKind::TrailingBytes { message, count },
                    self.pos,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
