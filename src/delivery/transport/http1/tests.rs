use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::either::Either;

use super::answer::{Body, Head, Malformed, Parsed, parse_head};
use super::*;

/// The head and body of `answer` as the connection reads them when the
/// bytes arrive split at `split`: the head, whether the body ended, and
/// what was left after it.
fn read_split(
    answer: &[u8],
    split: usize,
) -> Result<(Head, Result<bool, Malformed>, usize), String> {
    let mut buf = BytesMut::new();
    let mut rest = answer;
    let mut arrive = |buf: &mut BytesMut, n: usize| {
        let n = n.min(rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        n
    };
    arrive(&mut buf, split);
    let mut head = loop {
        match parse_head(&buf)? {
            Parsed::Head(head, length) => {
                let _ = buf.split_to(length);
                break head;
            }
            Parsed::Interim(length) => {
                let _ = buf.split_to(length);
            }
            Parsed::Partial if arrive(&mut buf, usize::MAX) == 0 => return Err("partial".into()),
            Parsed::Partial => {}
        }
    };
    let ended = loop {
        match head.body.consume(&mut buf) {
            Ok(false) if arrive(&mut buf, 1) > 0 => {}
            other => break other,
        }
    };
    Ok((head, ended, buf.len() + rest.len()))
}

/// [`read_split`] at every split: the answers must all agree.
fn read(answer: &[u8]) -> (Head, Result<bool, Malformed>, usize) {
    let whole = read_split(answer, answer.len()).expect("an answer");
    for split in 0..answer.len() {
        let (head, ended, left) = read_split(answer, split).expect("an answer");
        assert_eq!(head.status, whole.0.status, "split at {split}");
        assert_eq!(
            (ended, left),
            (whole.1.clone(), whole.2),
            "split at {split}"
        );
    }
    whole
}

#[test]
fn a_sized_answer_is_read_to_its_end_however_its_bytes_arrive() {
    let (head, ended, left) = read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: x\r\n\r\nhello");
    assert_eq!(head.status, 200);
    assert!(head.keep_alive);
    assert_eq!((ended, left), (Ok(true), 0));
}

#[test]
fn a_chunked_body_with_extensions_and_trailers_is_read_to_its_end() {
    let answer = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\nRetry-After: 120\r\n\r\n\
        4;ext=1\r\nbusy\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: y\r\n\r\n";
    let (head, ended, left) = read(answer);
    assert_eq!(head.status, 503);
    assert_eq!(
        head.retry_after.as_ref().map(|v| v.as_bytes()),
        Some(&b"120"[..])
    );
    assert_eq!((ended, left), (Ok(true), 0));
    let (_, ended, left) = read(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!((ended, left), (Ok(true), 0));
}

#[test]
fn interim_answers_are_skipped_for_the_final_one() {
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    let (head, ended, _) = read(answer);
    assert_eq!(head.status, 201);
    assert_eq!(ended, Ok(true));
}

#[test]
fn what_cannot_be_framed_is_not_read_and_the_connection_not_kept() {
    // No length, or a coding other than chunked last: the body runs to the close.
    for answer in [
        &b"HTTP/1.1 200 OK\r\n\r\nbody until close"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
    ] {
        let (head, ended, _) = read_split(answer, answer.len()).expect("a head");
        assert_eq!(head.body, Body::UntilClose);
        assert_eq!(ended, Err(Malformed));
    }
    let (_, ended, _) = read_split(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        99,
    )
    .expect("a head");
    assert_eq!(ended, Err(Malformed));
    let (_, ended, _) = read_split(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        99,
    )
    .expect("a head");
    assert_eq!(ended, Err(Malformed), "data not followed by CRLF");
}

#[test]
fn a_length_beside_chunked_is_read_as_chunked_but_the_connection_not_kept() {
    let (head, ended, left) = read(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert!(!head.keep_alive, "RFC 9112, 6.3");
    assert_eq!((ended, left), (Ok(true), 0));
}

#[test]
fn no_content_and_not_modified_have_no_body_whatever_they_say() {
    for status in [204, 304] {
        let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n");
        let (head, ended, left) = read(answer.as_bytes());
        assert_eq!(head.body, Body::Length(0));
        assert_eq!((ended, left), (Ok(true), 0));
    }
}

#[test]
fn a_close_or_http_1_0_ends_the_connection_after_the_answer() {
    let (head, ..) =
        read(b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
    assert!(!head.keep_alive);
    let (head, ..) = read(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(!head.keep_alive);
}

#[test]
fn a_redirect_keeps_its_location_and_bytes_after_the_answer_are_left() {
    let (head, ended, left) =
        read(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\nextra");
    assert_eq!(
        head.location.as_ref().map(|v| v.as_bytes()),
        Some(&b"/elsewhere"[..])
    );
    assert_eq!((ended, left), (Ok(true), 5));
}

#[test]
fn answers_that_are_not_http_are_refused_with_a_reason() {
    let refused = |bytes: &[u8]| match parse_head(bytes) {
        Err(reason) => reason,
        other => panic!("{other:?}"),
    };
    assert!(refused(b"SSH-2.0-OpenSSH\r\n\r\n").contains("not HTTP/1.1"));
    assert!(refused(b"HTTP/1.1 101 Switching Protocols\r\n\r\n").contains("switched protocols"));
    let endless = format!("HTTP/1.1 200 OK\r\nX-Pad: {}", "y".repeat(70_000));
    assert!(refused(endless.as_bytes()).contains("over 64 KiB"));
    let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X-Pad: y\r\n".repeat(101));
    assert!(refused(many.as_bytes()).contains("more than 100 headers"));
    assert!(matches!(
        parse_head(b"HTTP/1.1 200 OK\r\nX: y\r\n"),
        Ok(Parsed::Partial)
    ));
}

#[test]
fn the_prefix_holds_the_request_line_host_and_own_headers_but_framing() {
    let mut own = HeaderMap::new();
    own.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    own.insert(HOST, HeaderValue::from_static("configured.example"));
    own.insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
    own.insert(
        reqwest::header::AUTHORIZATION,
        HeaderValue::from_static("Bearer t"),
    );
    let prefix = prefix(
        &Method::PUT,
        "/in?x=1",
        &HeaderValue::from_static("h:8080"),
        &own,
    );
    assert_eq!(
        std::str::from_utf8(&prefix).unwrap(),
        "PUT /in?x=1 HTTP/1.1\r\nhost: h:8080\r\ncontent-type: application/json\r\nauthorization: Bearer t\r\n"
    );
}

/// A connection to a local listener, and the server's end of it.
async fn connected() -> (Http1, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
    let client = TcpStream::connect(listener.local_addr().expect("its address"))
        .await
        .expect("a connection");
    let (server, _) = listener.accept().await.expect("accepted");
    (Http1::new(Either::Left(client)), server)
}

/// Reads one request of `body_length` bytes of body from `server`.
async fn request_at(server: &mut TcpStream, body_length: usize) -> String {
    let mut seen = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = server.read(&mut chunk).await.expect("a request");
        assert!(n > 0, "the request ended early: {seen:?}");
        seen.extend_from_slice(&chunk[..n]);
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n")
            && seen.len() >= end + 4 + body_length
        {
            return String::from_utf8(seen).expect("text");
        }
    }
}

#[tokio::test]
async fn a_request_goes_out_whole_and_the_connection_serves_the_next() {
    let (mut connection, mut server) = connected().await;
    let extra = [(
        HeaderName::from_static("webhook-id"),
        HeaderValue::from_static("0/1"),
    )];
    let prefix = b"POST /in HTTP/1.1\r\nhost: h\r\n";
    for round in 0..2 {
        assert!(connection.is_usable().await, "round {round}");
        let server_side = async {
            let request = request_at(&mut server, 7).await;
            server
                .write_all(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                )
                .await
                .expect("answered");
            request
        };
        let (head, request) =
            tokio::join!(connection.exchange(prefix, &extra, b"payload"), server_side);
        assert_eq!(head.expect("an answer").status, 200);
        assert_eq!(
            request,
            "POST /in HTTP/1.1\r\nhost: h\r\nwebhook-id: 0/1\r\ncontent-length: 7\r\n\r\npayload"
        );
        assert!(connection.is_reusable());
    }
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(
        !connection.is_usable().await,
        "the server closed it while idle"
    );
}

/// A request on a new connection, which the server answers with `answer`
/// (`None`: closes instead): the connection, the server's end and what the
/// exchange gave.
async fn answered(answer: Option<&[u8]>) -> (Http1, TcpStream, Result<Head, TransportError>) {
    let (mut connection, mut server) = connected().await;
    let server_side = async {
        request_at(&mut server, 0).await;
        match answer {
            Some(answer) => server.write_all(answer).await.expect("answered"),
            None => server.shutdown().await.expect("closed"),
        }
    };
    let (head, ()) = tokio::join!(
        connection.exchange(b"POST / HTTP/1.1\r\n", &[], b""),
        server_side
    );
    (connection, server, head)
}

#[tokio::test]
async fn a_large_body_is_not_read_and_a_close_before_an_answer_is_an_error() {
    let large = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        BODY_KEPT + 1
    );
    let (connection, _server, head) = answered(Some(large.as_bytes())).await;
    assert_eq!(head.expect("an answer").status, 200);
    assert!(!connection.is_reusable(), "its body was left unread");

    let (connection, _server, failed) = answered(None).await;
    match failed {
        Err(TransportError::Request(reason)) => {
            assert_eq!(reason, "the connection closed before an answer")
        }
        other => panic!("{other:?}"),
    }
    assert!(!connection.is_reusable());
}

#[tokio::test]
async fn the_status_is_in_before_a_slow_body_which_alone_costs_the_connection() {
    for arrives in [true, false] {
        let half = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf";
        let (mut connection, mut server, head) = answered(Some(half)).await;
        assert_eq!(head.expect("the head, before the body").status, 200);
        assert!(!connection.is_answered());
        assert!(
            !connection.is_reusable(),
            "not while its body is still coming"
        );
        if arrives {
            server.write_all(b"-rest!").await.expect("the rest");
        }
        let wait = std::time::Duration::from_millis(200);
        let finished = tokio::time::timeout(wait, connection.finish()).await;
        assert_eq!(finished.is_ok(), arrives);
        assert_eq!(
            connection.is_reusable(),
            arrives,
            "kept only once its body is read"
        );
    }
}

#[tokio::test]
async fn a_body_that_never_ends_is_read_only_to_the_limit() {
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=";
    let (mut connection, mut server, head) = answered(Some(chunked)).await;
    assert_eq!(head.expect("an answer").status, 200);
    // A chunk extension without end, as a hostile endpoint might send.
    let endless = async {
        let more = vec![b'x'; 16 * 1024];
        for _ in 0..(BODY_KEPT / more.len() + 2) {
            if server.write_all(&more).await.is_err() {
                break;
            }
        }
    };
    let wait = std::time::Duration::from_secs(5);
    let (finished, ()) = tokio::join!(tokio::time::timeout(wait, connection.finish()), endless);
    finished.expect("finish stops at the limit");
    assert!(!connection.is_reusable());
    let held = connection.read.len();
    assert!(held <= 2 * BODY_KEPT + READ_CHUNK, "{held} bytes held");
}
