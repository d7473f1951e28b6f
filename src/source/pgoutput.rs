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

/// Schema of a table; sent before its first change in a session and again
/// whenever it changes, so row messages only carry the relation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub(crate) id: u32,
    /// Empty for `pg_catalog`.
    pub(crate) namespace: String,
    pub(crate) name: String,
    /// `relreplident`: `d`efault, `n`othing, `f`ull or `i`ndex.
    pub(crate) replica_identity: u8,
    pub(crate) columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// Part of the replica identity (every column under `REPLICA IDENTITY FULL`).
    pub(crate) is_key: bool,
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    /// `atttypmod`; -1 when the type has none.
    pub(crate) type_modifier: i32,
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

/// The old row image; which one depends on the table's replica identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OldTuple {
    /// `K`: only the replica identity columns are meaningful, the rest are `Null`.
    Key(Tuple),
    /// `O`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tuple {
    /// One per column of the relation, in column order.
    pub(crate) values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    /// A TOASTed value the change did not touch: the server does not resend
    /// it, so the caller must keep the previous value or skip the column.
    UnchangedToast,
    /// Text output format; left as bytes because the caller decides about UTF-8.
    Text(Bytes),
    /// Binary format, only sent when the `binary` option is on.
    Binary(Bytes),
}

/// Why a pgoutput message could not be decoded, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput: {kind} at byte {offset}")]
pub struct DecodeError {
    kind: ErrorKind,
    offset: usize,
}

impl DecodeError {
    fn new(kind: ErrorKind, offset: usize) -> Self {
        DecodeError { kind, offset }
    }

    /// Byte offset into the message where the offending field starts.
    #[cfg(test)]
    pub fn offset(&self) -> usize {
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
mod tests {
    use super::*;

    // Captured from PostgreSQL 15.18 (Debian 15.18-0+deb12u1): a throwaway
    // cluster with wal_level=logical, table
    // `leads (id bigserial primary key, email text, notes text, score int)`
    // in publication `leads_pub`, an enum `mood` and table
    // `tags (id int primary key, m mood)` in publication `tags_pub`, slot
    // `cap` created with `pg_create_logical_replication_slot('cap',
    // 'pgoutput')` after row 1 got a 200 KB `repeat(md5(random()::text),
    // 7000)` note (stored out of line), then read with
    // `SELECT lsn, xid, encode(data, 'hex') FROM
    // pg_logical_slot_peek_binary_changes('cap', NULL, NULL, 'proto_version',
    // '1', 'publication_names', 'leads_pub,tags_pub', 'messages', 'true')`.
    // The statement that produced each message is above it.

    // INSERT INTO leads (email, notes, score) VALUES ('ann@example.com', NULL, 42); xid 730
    const BEGIN_730: &str = "4200000000015342b000030434456ec170000002da";
    const RELATION_LEADS: &str = "52000040017075626c6963006c65616473006400040169640000000014ffffffff00656d61696c0000000019ffffffff006e6f7465730000000019ffffffff0073636f72650000000017ffffffff";
    const INSERT_ANN: &str =
        "49000040014e0004740000000132740000000f616e6e406578616d706c652e636f6d6e74000000023432";
    const COMMIT_730: &str = "430000000000015342b000000000015342e000030434456ec170";
    // UPDATE leads SET email = 'ann@example.org' WHERE id = 2;
    const UPDATE_ANN_EMAIL: &str =
        "55000040014e0004740000000132740000000f616e6e406578616d706c652e6f72676e74000000023432";
    // UPDATE leads SET score = 6 WHERE id = 1;  (the 200 KB note is untouched)
    const UPDATE_KEEPING_TOAST: &str =
        "55000040014e0004740000000131740000000f626967406578616d706c652e636f6d75740000000136";
    // DELETE FROM leads WHERE id = 2;
    const DELETE_ANN: &str = "44000040014b00047400000001326e6e6e";
    // SELECT pg_logical_emit_message(true, 'pfx', 'hello');
    const MESSAGE_TRANSACTIONAL: &str = "4d010000000001534508706678000000000568656c6c6f";
    // SELECT pg_logical_emit_message(false, 'nt', '\x00ff'::bytea);
    const MESSAGE_NON_TRANSACTIONAL: &str = "4d0000000000015345706e74000000000200ff";
    // ALTER TABLE leads REPLICA IDENTITY FULL; UPDATE leads SET score = 8 WHERE id = 3;
    const RELATION_LEADS_FULL: &str = "52000040017075626c6963006c65616473006600040169640000000014ffffffff01656d61696c0000000019ffffffff016e6f7465730000000019ffffffff0173636f72650000000017ffffffff";
    const UPDATE_FULL: &str = "55000040014f0004740000000133740000000f626f62406578616d706c652e636f6d740000000a736d616c6c206e6f74657400000001374e0004740000000133740000000f626f62406578616d706c652e636f6d740000000a736d616c6c206e6f7465740000000138";
    // INSERT INTO tags VALUES (1, 'warm');
    const TYPE_MOOD: &str = "590000400c7075626c6963006d6f6f6400";
    const RELATION_TAGS: &str =
        "52000040137075626c69630074616773006400020169640000000017ffffffff006d000000400cffffffff";
    const INSERT_TAG: &str = "49000040134e000274000000013174000000047761726d";
    // pg_replication_origin_session_setup('upstream');
    // pg_replication_origin_xact_setup('0/ABCDEF', now()); INSERT INTO tags ...
    const BEGIN_740: &str = "420000000001534cc000030434456f3f62000002e4";
    const ORIGIN_UPSTREAM: &str = "4f0000000000abcdef757073747265616d00";
    // TRUNCATE leads;
    const TRUNCATE_LEADS: &str = "54000000010000004001";

    const CAPTURED: [&str; 17] = [
        BEGIN_730,
        RELATION_LEADS,
        INSERT_ANN,
        COMMIT_730,
        UPDATE_ANN_EMAIL,
        UPDATE_KEEPING_TOAST,
        DELETE_ANN,
        MESSAGE_TRANSACTIONAL,
        MESSAGE_NON_TRANSACTIONAL,
        RELATION_LEADS_FULL,
        UPDATE_FULL,
        TYPE_MOOD,
        RELATION_TAGS,
        INSERT_TAG,
        BEGIN_740,
        ORIGIN_UPSTREAM,
        TRUNCATE_LEADS,
    ];

    const LEADS_OID: u32 = 0x4001;

    fn hex(s: &str) -> Bytes {
        assert_eq!(s.len() % 2, 0, "odd hex length");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect::<Vec<u8>>()
            .into()
    }

    fn ok(s: &str) -> LogicalMessage {
        decode(hex(s)).expect("captured message decodes")
    }

    fn text(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn err(bytes: &[u8]) -> DecodeError {
        decode(Bytes::copy_from_slice(bytes)).expect_err("must not decode")
    }

    #[test]
    fn begin_and_commit_of_a_captured_transaction_agree_on_lsn_and_time() {
        let LogicalMessage::Begin(begin) = ok(BEGIN_730) else {
            panic!("not a Begin")
        };
        let LogicalMessage::Commit(commit) = ok(COMMIT_730) else {
            panic!("not a Commit")
        };
        assert_eq!(begin.xid, 730);
        assert_eq!(begin.final_lsn, Lsn(0x0153_42B0));
        assert_eq!(commit.commit_lsn, begin.final_lsn);
        assert_eq!(commit.end_lsn, Lsn(0x0153_42E0));
        assert!(commit.end_lsn > commit.commit_lsn);
        assert_eq!(commit.commit_time, begin.commit_time);
        assert_eq!(commit.flags, 0);
        // Captured in 2026: between 2025 and 2030 in µs since 2000.
        assert!((788_918_400_000_000..946_684_800_000_000).contains(&begin.commit_time));
    }

    #[test]
    fn relation_lists_the_lead_columns_with_the_primary_key_flagged() {
        let LogicalMessage::Relation(rel) = ok(RELATION_LEADS) else {
            panic!("not a Relation")
        };
        assert_eq!(rel.id, LEADS_OID);
        assert_eq!(
            (rel.namespace.as_str(), rel.name.as_str()),
            ("public", "leads")
        );
        assert_eq!(rel.replica_identity, b'd');
        let column = |is_key, name: &str, type_oid| Column {
            is_key,
            name: name.to_owned(),
            type_oid,
            type_modifier: -1,
        };
        assert_eq!(
            rel.columns,
            [
                column(true, "id", 20),
                column(false, "email", 25),
                column(false, "notes", 25),
                column(false, "score", 23),
            ]
        );
    }

    #[test]
    fn replica_identity_full_flags_every_column_as_key() {
        let LogicalMessage::Relation(rel) = ok(RELATION_LEADS_FULL) else {
            panic!("not a Relation")
        };
        assert_eq!(rel.replica_identity, b'f');
        assert!(rel.columns.iter().all(|c| c.is_key));
    }

    #[test]
    fn insert_carries_text_values_and_sql_null() {
        let msg = ok(INSERT_ANN);
        let expected = Insert {
            relation_id: LEADS_OID,
            new: Tuple {
                values: vec![text("2"), text("ann@example.com"), Value::Null, text("42")],
            },
        };
        assert_eq!(msg, LogicalMessage::Insert(expected));
    }

    #[test]
    fn values_are_slices_of_the_input_not_copies() {
        let input = hex(INSERT_ANN);
        let range = input.as_ptr_range();
        let LogicalMessage::Insert(insert) = decode(input.clone()).unwrap() else {
            panic!("not an Insert")
        };
        let Some(Value::Text(email)) = insert.new.values.get(1) else {
            panic!("no email")
        };
        assert!(range.contains(&email.as_ptr()));
    }

    #[test]
    fn update_that_keeps_the_key_has_no_old_tuple() {
        let LogicalMessage::Update(update) = ok(UPDATE_ANN_EMAIL) else {
            panic!("not an Update")
        };
        assert_eq!(update.relation_id, LEADS_OID);
        assert_eq!(update.old, None);
        assert_eq!(update.new.values.get(1), Some(&text("ann@example.org")));
    }

    #[test]
    fn update_with_unchanged_toast_marks_the_value() {
        let LogicalMessage::Update(update) = ok(UPDATE_KEEPING_TOAST) else {
            panic!("not an Update")
        };
        assert_eq!(update.old, None);
        assert_eq!(
            update.new.values,
            [
                text("1"),
                text("big@example.com"),
                Value::UnchangedToast,
                text("6"),
            ]
        );
    }

    #[test]
    fn update_under_replica_identity_full_carries_the_whole_old_row() {
        let LogicalMessage::Update(update) = ok(UPDATE_FULL) else {
            panic!("not an Update")
        };
        let row = |score| Tuple {
            values: vec![
                text("3"),
                text("bob@example.com"),
                text("small note"),
                text(score),
            ],
        };
        assert_eq!(update.old, Some(OldTuple::Full(row("7"))));
        assert_eq!(update.new, row("8"));
    }

    #[test]
    fn delete_carries_only_the_key_columns() {
        let msg = ok(DELETE_ANN);
        let expected = Delete {
            relation_id: LEADS_OID,
            old: OldTuple::Key(Tuple {
                values: vec![text("2"), Value::Null, Value::Null, Value::Null],
            }),
        };
        assert_eq!(msg, LogicalMessage::Delete(expected));
    }

    #[test]
    fn truncate_lists_the_relation_ids() {
        let msg = ok(TRUNCATE_LEADS);
        let expected = Truncate {
            options: 0,
            relation_ids: vec![LEADS_OID],
        };
        assert_eq!(msg, LogicalMessage::Truncate(expected));
    }

    #[test]
    fn transactional_message_keeps_prefix_and_content() {
        let msg = ok(MESSAGE_TRANSACTIONAL);
        let expected = Message {
            transactional: true,
            lsn: Lsn(0x0153_4508),
            prefix: "pfx".to_owned(),
            content: Bytes::from_static(b"hello"),
        };
        assert_eq!(msg, LogicalMessage::Message(expected));
    }

    #[test]
    fn non_transactional_message_keeps_raw_binary_content() {
        let LogicalMessage::Message(msg) = ok(MESSAGE_NON_TRANSACTIONAL) else {
            panic!("not a Message")
        };
        assert!(!msg.transactional);
        assert_eq!(msg.prefix, "nt");
        assert_eq!(msg.content, Bytes::from_static(&[0x00, 0xff]));
    }

    #[test]
    fn type_message_names_the_enum_a_relation_then_uses() {
        let LogicalMessage::Type(ty) = ok(TYPE_MOOD) else {
            panic!("not a Type")
        };
        assert_eq!(
            (ty.namespace.as_str(), ty.name.as_str()),
            ("public", "mood")
        );
        let LogicalMessage::Relation(rel) = ok(RELATION_TAGS) else {
            panic!("not a Relation")
        };
        assert_eq!(rel.name, "tags");
        assert_eq!(rel.columns.get(1).map(|c| c.type_oid), Some(ty.id));
        let LogicalMessage::Insert(insert) = ok(INSERT_TAG) else {
            panic!("not an Insert")
        };
        assert_eq!(insert.relation_id, rel.id);
        assert_eq!(insert.new.values, [text("1"), text("warm")]);
    }

    #[test]
    fn origin_names_the_upstream_and_its_commit_lsn() {
        let LogicalMessage::Begin(begin) = ok(BEGIN_740) else {
            panic!("not a Begin")
        };
        assert_eq!(begin.xid, 740);
        let expected = Origin {
            commit_lsn: Lsn(0xAB_CDEF),
            name: "upstream".to_owned(),
        };
        assert_eq!(ok(ORIGIN_UPSTREAM), LogicalMessage::Origin(expected));
    }

    #[test]
    fn binary_values_are_kept_apart_from_text() {
        // The captured insert with its first value's kind switched to 'b'.
        let mut bytes = hex(INSERT_ANN).to_vec();
        assert_eq!(bytes.get(8), Some(&b't'));
        bytes[8] = b'b';
        let LogicalMessage::Insert(insert) = decode(bytes.into()).unwrap() else {
            panic!("not an Insert")
        };
        assert_eq!(
            insert.new.values.first(),
            Some(&Value::Binary(Bytes::from_static(b"2")))
        );
    }

    #[test]
    fn every_proper_prefix_of_a_captured_message_is_an_error() {
        for captured in CAPTURED {
            let bytes = hex(captured);
            for len in 0..bytes.len() {
                let error = decode(bytes.slice(..len)).expect_err(captured);
                assert!(error.offset() <= len, "{error} for {len} bytes");
            }
        }
    }

    #[test]
    fn one_trailing_byte_after_a_complete_message_is_an_error() {
        for captured in CAPTURED {
            let mut bytes = hex(captured).to_vec();
            let len = bytes.len();
            bytes.push(0);
            let error = err(&bytes);
            assert_eq!(error.offset(), len);
            assert!(error.to_string().contains("1 trailing bytes"), "{error}");
        }
    }

    #[test]
    fn errors_name_the_message_and_the_offset() {
        let truncated = hex(INSERT_ANN).slice(..12);
        assert_eq!(
            decode(truncated).unwrap_err().to_string(),
            "pgoutput: truncated Insert message at byte 9"
        );
        assert_eq!(
            err(b"Z").to_string(),
            "pgoutput: unknown message tag 0x5a at byte 0"
        );
        assert_eq!(err(b"").to_string(), "pgoutput: empty message at byte 0");
    }

    #[test]
    fn unknown_tags_are_rejected() {
        // Protocol 2+ streaming and two-phase tags are not version 1.
        for tag in [b'Z', b'S', b'E', b'A', b'c', b'b', b'P', 0, 0xff] {
            let error = err(&[tag, 0, 0, 0, 0]);
            assert_eq!(error.offset(), 0);
            assert!(error.to_string().contains("unknown message tag"), "{error}");
        }
    }

    #[test]
    fn absurd_column_counts_fail_before_allocating() {
        // 65535 columns announced with three bytes of body.
        let relation = b"R\0\0\x40\x01public\0leads\0d\xff\xff\0\0\0";
        assert!(err(relation).to_string().contains("truncated Relation"));
        let insert = b"I\0\0\x40\x01N\xff\xffnnn";
        let error = err(insert);
        assert!(error.to_string().contains("truncated Insert"), "{error}");
        assert_eq!(error.offset(), 8);
        let truncate = b"T\xff\xff\xff\xff\0\0\0\x40\x01";
        assert!(err(truncate).to_string().contains("truncated Truncate"));
    }

    #[test]
    fn invalid_utf8_in_a_name_is_rejected() {
        let relation = b"R\0\0\x40\x01public\0le\xffds\0d\0\0";
        let error = err(relation);
        assert!(error.to_string().contains("invalid UTF-8"), "{error}");
        assert_eq!(error.offset(), 12);
    }

    #[test]
    fn a_name_without_its_nul_is_truncated() {
        let error = err(b"Y\0\0\x40\x0cpublic");
        assert!(error.to_string().contains("truncated Type"), "{error}");
    }

    #[test]
    fn negative_value_length_is_rejected() {
        let insert = b"I\0\0\x40\x01N\0\x01t\xff\xff\xff\xfe";
        let error = err(insert);
        assert_eq!(
            error.to_string(),
            "pgoutput: negative length -2 in Insert message at byte 9"
        );
    }

    #[test]
    fn value_length_past_the_end_is_truncated() {
        let insert = b"I\0\0\x40\x01N\0\x01t\0\0\0\x05abc";
        let error = err(insert);
        assert!(error.to_string().contains("truncated Insert"), "{error}");
        assert_eq!(error.offset(), 13);
        let message = b"M\x01\0\0\0\0\0\0\0\x01p\0\x7f\xff\xff\xffhello";
        assert!(err(message).to_string().contains("truncated Message"));
    }

    #[test]
    fn unexpected_submessage_bytes_are_rejected() {
        for bad in [
            &b"I\0\0\x40\x01K\0\0"[..], // insert must carry 'N'
            b"U\0\0\x40\x01X\0\0",      // neither old nor new tuple
            b"U\0\0\x40\x01K\0\0K\0\0", // old tuple not followed by 'N'
            b"D\0\0\x40\x01N\0\0",      // delete needs an old tuple
            b"I\0\0\x40\x01N\0\x01x",   // unknown value kind
        ] {
            let error = err(bad);
            assert!(error.to_string().contains("unexpected byte"), "{error}");
        }
    }

    /// xorshift64*: deterministic, so a failure reproduces.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n.max(1) as u64).unwrap()
        }
    }

    #[test]
    fn mutated_captured_messages_never_panic() {
        let corpus: Vec<Vec<u8>> = CAPTURED.iter().map(|s| hex(s).to_vec()).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut decoded = 0;
        for _ in 0..20_000 {
            let mut input = corpus[rng.below(corpus.len())].clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(input.len());
                match rng.below(6) {
                    0 => input[at] ^= 1 << rng.below(8),
                    1 => input[at] = [0, 0x7f, 0x80, 0xff][rng.below(4)],
                    2 => input.truncate(at),
                    3 => input.insert(at, rng.next() as u8),
                    4 => {
                        let other = &corpus[rng.below(corpus.len())];
                        input.truncate(at);
                        input.extend_from_slice(&other[rng.below(other.len())..]);
                    }
                    _ => {
                        input.remove(at);
                    }
                }
                if input.is_empty() {
                    break;
                }
            }
            let len = input.len();
            match decode(input.into()) {
                Ok(_) => decoded += 1,
                Err(error) => assert!(error.offset() <= len, "{error} for {len} bytes"),
            }
        }
        // Some mutations (e.g. of value bytes) still decode: the loop reached
        // deep into the messages rather than failing at the tag.
        assert!(decoded > 100, "only {decoded} mutants decoded");
    }
}
