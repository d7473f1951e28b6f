//! Opening a connection to a webhook's endpoint: the host resolved (to
//! public addresses only under the guard), TCP, TLS with ALPN, and the HTTP
//! handshake that the version policy and ALPN decide.

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_util::either::Either;

use super::http1::Http1;
use super::http2::Http2;
use super::{TransportError, tls};
use crate::config;
use crate::delivery::guard;

/// A connection's bytes: plain TCP or TLS over it.
pub(super) type Stream = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// Where a webhook's connections go, and how they are made.
pub(super) struct Address {
    host: Host,
    port: u16,
    /// The name the certificate must have, for `https` URLs.
    tls: Option<Result<ServerName<'static>, String>>,
    /// Public addresses only (see `guard`).
    public_only: bool,
    http2: config::Http2,
}

enum Host {
    Name(String),
    Ip(IpAddr),
}

/// A new connection, of the version it speaks.
pub(super) enum Connected {
    /// Boxed: it is kilobytes, and moves in and out of the pool.
    Http1(Box<Http1>),
    Http2(Http2),
}

impl Address {
    /// `url` was checked when the config was loaded: it has a host, and
    /// its scheme is `http` or `https`.
    pub(super) fn new(url: &Url, public_only: bool, http2: config::Http2) -> Address {
        let host = match url.host() {
            Some(url::Host::Ipv4(ip)) => Host::Ip(ip.into()),
            Some(url::Host::Ipv6(ip)) => Host::Ip(ip.into()),
            Some(url::Host::Domain(name)) => Host::Name(name.to_owned()),
            None => Host::Name(String::new()),
        };
        let tls = (url.scheme() == "https").then(|| match &host {
            Host::Ip(ip) => Ok(ServerName::IpAddress((*ip).into())),
            Host::Name(name) => ServerName::try_from(name.clone())
                .map_err(|e| format!("{name:?} is not a valid TLS server name: {e}")),
        });
        Address {
            host,
            port: url.port_or_known_default().unwrap_or(80),
            tls,
            public_only,
            http2,
        }
    }

    /// Whether a connection may turn out to speak HTTP/2.
    pub(super) fn may_be_http2(&self) -> bool {
        match self.http2 {
            config::Http2::Always => true,
            config::Http2::Auto => self.tls.is_some(),
            config::Http2::Never => false,
        }
    }

    pub(super) async fn connect(&self) -> Result<Connected, TransportError> {
        let failed = |e: &(dyn std::error::Error + 'static)| TransportError::Connect(root_cause(e));
        let tcp = self.connect_tcp().await?;
        // Requests are small and answered one at a time per connection.
        let _ = tcp.set_nodelay(true);
        let Some(name) = &self.tls else {
            return handshake(Either::Left(tcp), self.http2 == config::Http2::Always).await;
        };
        let name = name.clone().map_err(TransportError::Connect)?;
        let config = tls::config(self.http2).map_err(TransportError::Connect)?;
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| failed(&e))?;
        let h2 = match self.http2 {
            config::Http2::Always => true,
            config::Http2::Auto => stream.get_ref().1.alpn_protocol() == Some(b"h2"),
            config::Http2::Never => false,
        };
        handshake(Either::Right(stream), h2).await
    }

    /// The first address that accepts, in the resolver's order.
    async fn connect_tcp(&self) -> Result<TcpStream, TransportError> {
        let mut last = None;
        for address in self.resolve().await? {
            match TcpStream::connect(address).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(TransportError::Connect(match last {
            Some(e) => e.to_string(),
            None => format!("{} resolved to no address", self.host_text()),
        }))
    }

    async fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        let refused = |e: guard::Refused| TransportError::Connect(e.to_string());
        match &self.host {
            Host::Ip(ip) => {
                if self.public_only {
                    guard::check_address(*ip).map_err(refused)?;
                }
                Ok(vec![SocketAddr::new(*ip, self.port)])
            }
            Host::Name(name) => {
                let found = tokio::net::lookup_host((name.as_str(), self.port))
                    .await
                    .map_err(|e| TransportError::Connect(format!("dns error: {e}")))?;
                match self.public_only {
                    true => guard::keep_public(name, found).map_err(refused),
                    false => Ok(found.collect()),
                }
            }
        }
    }

    fn host_text(&self) -> String {
        match &self.host {
            Host::Name(name) => name.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

async fn handshake(stream: Stream, h2: bool) -> Result<Connected, TransportError> {
    if h2 {
        return Ok(Connected::Http2(Http2::handshake(stream).await?));
    }
    Ok(Connected::Http1(Box::new(Http1::new(stream))))
}

/// The innermost cause of an error ("Connection refused (os error 111)"):
/// what a person needs, and never a URL.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
