use bytes::{BufMut, Bytes, BytesMut};

use super::frame::*;
use crate::lsn::Lsn;

#[test]
fn identifiers_and_literals_are_quoted_in_start_replication() {
    let command = start_replication_command("my\"slot", "it's", Lsn(0x1_0000_0010));
    assert_eq!(
        command,
        "START_REPLICATION SLOT \"my\"\"slot\" LOGICAL 1/10 (proto_version '1', publication_names '\"it''s\"')"
    );
}

#[test]
fn copy_both_response_is_taken_off_only_when_complete() {
    let mut buf = BytesMut::from(&b"W\x00\x00\x00\x07\x00\x00"[..]);
    assert!(parse_frame(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"\x00d");
    assert!(matches!(
        parse_frame(&mut buf).unwrap(),
        Some(Frame::CopyBothResponse)
    ));
    assert_eq!(&buf[..], b"d", "the next frame's bytes stay buffered");
}

#[test]
fn xlogdata_and_keepalive_are_parsed() {
    let mut w = BytesMut::new();
    w.put_u8(b'w');
    w.put_u64(0x10);
    w.put_u64(0x20);
    w.put_i64(0);
    w.extend_from_slice(b"payload");
    match parse_copy_data(w.freeze()).unwrap() {
        ReplicationMessage::XLogData { wal_start, data } => {
            assert_eq!(wal_start, Lsn(0x10));
            assert_eq!(&data[..], b"payload");
        }
        other => panic!("{other:?}"),
    }
    let mut k = BytesMut::new();
    k.put_u8(b'k');
    k.put_u64(0x30);
    k.put_i64(0);
    k.put_u8(1);
    assert!(matches!(
        parse_copy_data(k.freeze()).unwrap(),
        ReplicationMessage::Keepalive {
            wal_end: Lsn(0x30),
            reply_requested: true
        }
    ));
}

#[test]
fn truncated_or_unknown_replication_messages_are_errors() {
    for bad in [&b""[..], b"w\x00\x01", b"k\x00", b"z12345678"] {
        assert!(
            parse_copy_data(Bytes::copy_from_slice(bad)).is_err(),
            "{bad:?}"
        );
    }
}
