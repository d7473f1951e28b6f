use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use tokio_postgres::error::SqlState;

use super::ReplicationError;
use super::error::{AuthError, ProtocolError, ServerError, TlsError, server_error};
use super::frame::*;
use crate::lsn::Lsn;

const LIMIT: usize = 1024 * 1024;

#[test]
fn identifiers_and_literals_are_quoted_in_start_replication() {
    let command = start_replication_command("my\"slot", "it's", Lsn(0x1_0000_0010));
    assert_eq!(
        command,
        "START_REPLICATION SLOT \"my\"\"slot\" LOGICAL 1/10 (proto_version '1', publication_names '\"it''s\"', messages 'true')"
    );
}

#[test]
fn copy_both_response_is_taken_off_only_when_complete() {
    let mut buf = BytesMut::from(&b"W\x00\x00\x00\x07\x00\x00"[..]);
    assert!(parse_frame(&mut buf, LIMIT).unwrap().is_none());
    buf.extend_from_slice(b"\x00d");
    assert!(matches!(
        parse_frame(&mut buf, LIMIT).unwrap(),
        Some(Frame::CopyBothResponse)
    ));
    assert_eq!(&buf[..], b"d", "the next frame's bytes stay buffered");
}

#[test]
fn a_frame_announcing_more_than_the_limit_is_refused_from_its_header_before_any_reservation() {
    // CopyData claiming 4 GiB: only the five header bytes have arrived.
    let mut buf = BytesMut::from(&b"d\xff\xff\xff\xff"[..]);
    let before = buf.capacity();
    let error = parse_frame(&mut buf, LIMIT).err().expect("refused");
    assert!(
        matches!(
            error,
            ReplicationError::Protocol(ProtocolError::TooLarge {
                len: 0xffff_ffff,
                limit: LIMIT
            })
        ),
        "{error}"
    );
    assert!(
        error.to_string().contains("source.max_message_size"),
        "{error}"
    );
    assert_eq!(buf.capacity(), before, "nothing reserved");
    // The same for the frame postgres-protocol does not parse, and a frame
    // at the limit is taken as usual.
    let mut buf = BytesMut::from(&b"W\x7f\xff\xff\xff"[..]);
    assert!(parse_frame(&mut buf, LIMIT).is_err());
    let mut at_limit = BytesMut::new();
    at_limit.put_u8(b'd');
    at_limit.put_u32(LIMIT as u32);
    at_limit.extend_from_slice(&vec![b'k'; LIMIT - 4]);
    assert!(matches!(
        parse_frame(&mut at_limit, LIMIT),
        Ok(Some(Frame::Message(Message::CopyData(_))))
    ));
    let mut too_short = BytesMut::from(&b"d\x00\x00\x00\x02"[..]);
    assert!(parse_frame(&mut too_short, LIMIT).is_err());
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

/// An ErrorResponse as the server sends it, taken off a buffer like any frame.
fn server_error_from(fields: &[(u8, &str)]) -> ReplicationError {
    let mut body = BytesMut::new();
    for (kind, value) in fields {
        body.put_u8(*kind);
        body.extend_from_slice(value.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut frame = BytesMut::new();
    frame.put_u8(b'E');
    frame.put_u32(4 + body.len() as u32);
    frame.extend_from_slice(&body);
    match parse_frame(&mut frame, LIMIT).unwrap() {
        Some(Frame::Message(Message::ErrorResponse(body))) => server_error(&body),
        _ => panic!("not an ErrorResponse"),
    }
}

#[test]
fn a_server_error_reads_as_before_with_its_sqlstate_typed() {
    let error = server_error_from(&[
        (b'S', "ERROR"),
        (b'C', "55006"),
        (b'M', "replication slot \"leadhook\" is active for PID 42"),
        (b'D', "a detail"),
        (b'H', "a hint"),
    ]);
    assert_eq!(
        error.to_string(),
        "server error 55006: replication slot \"leadhook\" is active for PID 42 (a detail); hint: a hint"
    );
    match &error {
        ReplicationError::Server(e) => assert_eq!(e.code, SqlState::OBJECT_IN_USE),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_slot_in_use_means_standing_by_not_a_refusal() {
    let error = server_error_from(&[(b'C', "55006"), (b'M', "in use")]);
    assert!(error.is_slot_in_use());
    assert!(!error.is_refusal());
}

#[test]
fn bad_credentials_an_unknown_database_or_no_replication_right_are_refusals() {
    for code in ["28000", "28P01", "3D000", "42501"] {
        let error = server_error_from(&[(b'C', code), (b'M', "no")]);
        assert!(error.is_refusal(), "{code}");
        assert!(!error.is_slot_in_use(), "{code}");
    }
    assert!(ReplicationError::from(AuthError::PasswordMissing).is_refusal());
}

#[test]
fn only_class_28_is_an_authentication_failure() {
    let server = |code: &str| ServerError {
        code: SqlState::from_code(code),
        message: String::new(),
        detail: None,
        hint: None,
    };
    assert!(server("28P01").is_auth_failure());
    assert!(server("28000").is_auth_failure());
    assert!(!server("3D000").is_auth_failure());
    assert!(server("3D000").is_unknown_database());
    assert!(server("42501").is_permission_denied());
    assert!(!server("42P01").is_permission_denied());
}

#[test]
fn a_shutdown_a_lost_connection_or_a_protocol_error_is_retried() {
    let shutdown = server_error_from(&[(b'C', "57P01"), (b'M', "terminating connection")]);
    let lost = ReplicationError::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
    let tls = ReplicationError::from(TlsError::Unavailable(crate::database::SslMode::Require));
    for error in [shutdown, lost, ProtocolError::Truncated.into(), tls] {
        assert!(!error.is_refusal(), "{error}");
        assert!(!error.is_slot_in_use(), "{error}");
    }
}

#[test]
fn typed_errors_keep_their_messages() {
    let cases: [(ReplicationError, &str); 5] = [
        (
            AuthError::PasswordMissing.into(),
            "authentication failed: the server asks for a password; put it in database.url",
        ),
        (
            TlsError::Unavailable(crate::database::SslMode::VerifyFull).into(),
            "TLS: the server does not support TLS but database.url asks for sslmode=VerifyFull",
        ),
        (
            ProtocolError::Expected("SASL final").into(),
            "unexpected message from the server: expected SASL final",
        ),
        (
            ProtocolError::UnknownTag(b'z').into(),
            "unexpected message from the server: unknown replication message tag 0x7a",
        ),
        (
            ProtocolError::IdentifySystem("timeline").into(),
            "unexpected message from the server: IDENTIFY_SYSTEM: timeline",
        ),
    ];
    for (error, text) in cases {
        assert_eq!(error.to_string(), text);
    }
}
