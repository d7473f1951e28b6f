//! Keeps untrusted webhooks off private networks.
//!
//! Webhooks from the registry table are written by the product's users, so
//! their URLs are untrusted: without this guard a row could point the
//! sidecar at the cloud metadata service (169.254.169.254), at its own admin
//! port on loopback, or at the database on the private network (SSRF).
//!
//! The check runs where a connection is made, on the addresses it is
//! actually made to, so a name that resolves to a public address when the
//! row is checked and to a private one later (DNS rebinding) cannot slip
//! past:
//! - deliveries (`transport`) pass what they resolved through
//!   [`keep_public`], and an IP-literal host through [`check_address`];
//! - `webhooks test` goes through reqwest, with [`PublicOnly`] as its
//!   resolver and [`check_host`] for IP literals (for which reqwest never
//!   asks a resolver). Rows are also checked with [`check_host`] when read.
//!
//! `[registry] allow_private_networks = true` lifts the rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// What every refusal ends with: why, and how to lift it.
const ADVICE: &str = "webhooks from the registry table may not reach private networks \
    (set [registry] allow_private_networks = true to allow)";

/// IPv4 ranges refused that std has no stable method for (its `is_shared`,
/// `is_benchmarking` and `is_reserved` are unstable), as (network, prefix
/// length). None is reachable on the public internet, and each may be
/// routed somewhere inside.
const V4_REFUSED: [(Ipv4Addr, u8); 5] = [
    // "This network": Linux connects 0.x.x.x to the local host.
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    // Shared address space (CGNAT): the provider's side of the network.
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    // IETF protocol assignments (DS-Lite, NAT64 discovery, …).
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    // Benchmarking: lab networks.
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    // Reserved for future use (broadcast included): never public.
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// IPv6 ranges refused that std has no stable method for (its
/// `is_documentation` and `is_unicast_site_local` are unstable).
const V6_REFUSED: [(Ipv6Addr, u8); 4] = [
    // Documentation: never routed, so only a local setup could answer.
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
    // Site-local (deprecated), still the local site on the stacks that know it.
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    // Local-use NAT64: its IPv4 address may sit at any of several offsets,
    // so it cannot be judged like 64:ff9b::/96.
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
];

/// Whether a webhook from the registry table may connect to `ip`: only a
/// public address, never one that leads into the sidecar's own host or
/// network. An IPv6 address that carries an IPv4 one (mapped, compatible,
/// NAT64, 6to4) is judged by that IPv4 address, since that is where the
/// packets end up.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let refused = ip.is_unspecified()
        // The sidecar's own admin port, and whatever else listens locally.
        || ip.is_loopback()
        // The database and the rest of the private network.
        || ip.is_private()
        // Cloud metadata (169.254.169.254) and its credentials.
        || ip.is_link_local()
        // Not one host; no webhook is sent to a group or a whole network.
        || ip.is_multicast()
        || ip.is_broadcast()
        // Never routed, so only a local setup could answer.
        || ip.is_documentation()
        || V4_REFUSED
            .iter()
            .any(|&(network, len)| in_v4(ip, network, len));
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    // `::` and `::1` first: they also read as IPv4-compatible addresses.
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    if let Some(v4) = embedded_v4(ip) {
        return is_public_v4(v4);
    }
    let refused = ip.is_multicast()
        // fc00::/7: IPv6's private networks.
        || ip.is_unique_local()
        // fe80::/10: the local link, metadata services included.
        || ip.is_unicast_link_local()
        || V6_REFUSED
            .iter()
            .any(|&(network, len)| in_v6(ip, network, len));
    !refused
}

/// The IPv4 address an IPv6 one leads to: IPv4-mapped (::ffff:a.b.c.d) and
/// IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d) and 6to4
/// (2002:aabb:ccdd::/48).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4() {
        return Some(v4);
    }
    let segments = ip.segments();
    let v4 = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match segments {
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => Some(v4(high, low)),
        [0x2002, high, low, ..] => Some(v4(high, low)),
        _ => None,
    }
}

fn in_v4(ip: Ipv4Addr, network: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(network) & mask
}

fn in_v6(ip: Ipv6Addr, network: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(network) & mask
}

/// A webhook refused for where it leads. Its message is what `leadhook
/// webhooks list` and the logs show (reqwest's wrappers around it only say
/// "dns error"), so it names the host and the addresses and says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("{host} resolves only to non-public addresses ({}); {ADVICE}", list(.refused))]
    Resolved { host: String, refused: Vec<IpAddr> },
    #[error("{address} is a non-public address; {ADVICE}")]
    Literal { address: IpAddr },
}

fn list(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The resolver of the guarded clients (see [`guarded`]): the system's resolver, with
/// every non-public address dropped. A name with only non-public addresses
/// fails to resolve with [`Refused`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's (or the scheme's) port in.
            let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public = keep_public(&host, addrs)?;
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The public addresses among what `host` resolved to, in their order. Refused only when
/// there were addresses and none is public: an empty answer is left for
/// the connector to report as it would without the guard.
pub(crate) fn keep_public(
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, Refused> {
    let (public, refused): (Vec<_>, Vec<_>) =
        addrs.into_iter().partition(|addr| is_public(addr.ip()));
    if public.is_empty() && !refused.is_empty() {
        let mut ips: Vec<IpAddr> = Vec::with_capacity(refused.len());
        for ip in refused.iter().map(SocketAddr::ip) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        return Err(Refused::Resolved {
            host: host.to_owned(),
            refused: ips,
        });
    }
    if !refused.is_empty() {
        tracing::debug!(host, dropped = ?refused, "connecting to the public addresses only");
    }
    Ok(public)
}

/// Refuses a URL whose host is a non-public IP literal (IPv4, or IPv6 in
/// brackets): reqwest connects to those without asking the resolver. A name
/// is left to [`PublicOnly`], which judges it at connect time; a URL without
/// a host is refused by reqwest itself.
pub(crate) fn check_host(url: &reqwest::Url) -> Result<(), String> {
    let address = match url.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        Some(url::Host::Domain(_)) | None => return Ok(()),
    };
    check_address(address).map_err(|refused| refused.to_string())
}

/// Refuses a non-public address.
pub(crate) fn check_address(address: IpAddr) -> Result<(), Refused> {
    match is_public(address) {
        true => Ok(()),
        false => Err(Refused::Literal { address }),
    }
}

/// The webhook client's settings (`clients::http_client`) made fit for
/// untrusted webhooks: [`PublicOnly`] as its resolver, and no proxy from
/// the environment (through a proxy the resolver would only judge the
/// proxy's address, not the webhook's).
pub(crate) fn guarded(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder.dns_resolver(Arc::new(PublicOnly)).no_proxy()
}

#[cfg(test)]
mod tests;
