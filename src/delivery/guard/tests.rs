use std::str::FromStr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::Http2;
use crate::delivery::clients::http_client;
use crate::delivery::request::unanswered;
use crate::delivery::retry::Failure;

fn ip(text: &str) -> IpAddr {
    IpAddr::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn url(text: &str) -> reqwest::Url {
    reqwest::Url::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn public_addresses_are_allowed() {
    for allowed in [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        // Just outside the refused ranges around them.
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "192.0.1.1",
        "223.255.255.255",
        "2606:2800::1",
        "2a00:1450:4001::200e",
        // IPv6 forms of a public IPv4 address.
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
    ] {
        assert!(is_public(ip(allowed)), "{allowed} should be allowed");
    }
}

#[test]
fn every_non_public_range_is_refused() {
    for (refused, range) in [
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network 0/8"),
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("10.0.0.7", "private 10/8"),
        ("172.16.0.1", "private 172.16/12"),
        ("172.31.255.255", "private 172.16/12"),
        ("192.168.1.1", "private 192.168/16"),
        ("169.254.169.254", "link-local (cloud metadata)"),
        ("100.64.0.1", "shared CGNAT 100.64/10"),
        ("100.127.255.255", "shared CGNAT 100.64/10"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved 240/4"),
        ("198.18.0.1", "benchmarking 198.18/15"),
        ("198.19.255.255", "benchmarking 198.18/15"),
        ("192.0.0.8", "IETF 192.0.0/24"),
        ("192.0.2.1", "documentation"),
        ("198.51.100.1", "documentation"),
        ("203.0.113.1", "documentation"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("febf::1", "link-local"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("ff02::1", "multicast"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
        ("fec0::1", "site-local"),
        ("64:ff9b:1::a00:7", "local-use NAT64"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped link-local"),
        ("::ffff:10.0.0.7", "IPv4-mapped private"),
        ("::127.0.0.1", "IPv4-compatible loopback"),
        ("::10.0.0.7", "IPv4-compatible private"),
        ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254"),
        ("64:ff9b::7f00:1", "NAT64 of 127.0.0.1"),
        ("2002:a00:7::1", "6to4 of 10.0.0.7"),
        ("2002:7f00:1::", "6to4 of 127.0.0.1"),
    ] {
        assert!(
            !is_public(ip(refused)),
            "{refused} ({range}) should be refused"
        );
    }
}

#[test]
fn check_host_refuses_non_public_ip_literals() {
    for (refused, address) in [
        ("http://127.0.0.1:8080/", "127.0.0.1"),
        ("http://[::1]/", "::1"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("http://[::ffff:10.0.0.7]/hook", "::ffff:10.0.0.7"),
        // The URL parser reads these as IPv4 literals too.
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
    ] {
        let message = check_host(&url(refused)).expect_err(refused);
        assert!(
            message.starts_with(&format!("{address} is a non-public address; ")),
            "{refused}: {message}"
        );
        assert!(
            message.ends_with(ADVICE),
            "{refused} says what to do: {message}"
        );
    }
}

#[test]
fn check_host_leaves_names_and_public_literals_to_connect() {
    for allowed in [
        "https://example.com/",
        "http://93.184.216.34/hook",
        "https://[2606:2800::1]:8443/",
        // A name: the resolver judges it when connecting.
        "http://localhost:8080/",
    ] {
        assert_eq!(check_host(&url(allowed)), Ok(()), "{allowed}");
    }
}

#[test]
fn a_mixed_answer_keeps_only_its_public_addresses() {
    let public = SocketAddr::from(([93, 184, 216, 34], 0));
    let answer = [SocketAddr::from(([10, 0, 0, 7], 0)), public];
    let kept = keep_public("hooks.example", answer).expect("one is public");
    assert_eq!(kept, [public]);
}

#[test]
fn an_answer_of_only_non_public_addresses_is_refused_with_the_host_and_addresses() {
    let answer = [
        SocketAddr::from(([10, 0, 0, 7], 0)),
        SocketAddr::from(([10, 0, 0, 7], 0)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
    ];
    let refused = keep_public("hooks.internal", answer).expect_err("none is public");
    assert_eq!(
        refused.to_string(),
        "hooks.internal resolves only to non-public addresses (10.0.0.7, ::1); \
         webhooks from the registry table may not reach private networks \
         (set [registry] allow_private_networks = true to allow)"
    );
}

#[test]
fn an_empty_answer_is_left_to_the_connector() {
    let kept = keep_public("nothing.example", []).expect("not refused");
    assert!(kept.is_empty());
}

#[tokio::test]
async fn the_resolver_refuses_localhost() {
    let name = Name::from_str("localhost").expect("a valid name");
    let error = match PublicOnly.resolve(name).await {
        Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
        Err(error) => error.to_string(),
    };
    assert!(
        error.starts_with("localhost resolves only to non-public addresses (")
            && error.contains("127.0.0.1"),
        "{error}"
    );
}

/// An HTTP server on 127.0.0.1 that answers every request with 200.
async fn ok_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local address").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buffer = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    port
}

#[tokio::test]
async fn the_public_only_client_refuses_a_name_for_loopback_that_the_ordinary_client_reaches() {
    let port = ok_server().await;
    let target = format!("http://localhost:{port}/");

    let reached = http_client(false, Http2::Auto)
        .expect("client")
        .get(&target)
        .send()
        .await
        .expect("the ordinary client reaches the server");
    assert_eq!(reached.status(), 200);

    let error = http_client(true, Http2::Auto)
        .expect("client")
        .get(&target)
        .send()
        .await
        .expect_err("the guard refuses loopback");
    // What `request::attempt` makes of it, as logs and `webhooks list` show.
    match unanswered(&error) {
        Failure::Connect(cause) => assert!(
            cause.starts_with("localhost resolves only to non-public addresses (")
                && cause.ends_with(ADVICE),
            "{cause}"
        ),
        other => panic!("not a connect failure: {other:?}"),
    }
}
