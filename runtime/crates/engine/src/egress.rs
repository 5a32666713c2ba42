//! Where Sluice may connect on behalf of a tenant (callbacks of background operations,
//! plug-ins' outgoing HTTP requests): http(s) URLs whose every resolved address is
//! public, Dataverse's sandbox rules. Loopback, private, link-local, unspecified, shared, multicast, reserved
//! and documentation ranges are refused (IPv4, IPv6, and IPv4 embedded in IPv6:
//! mapped, compatible, NAT64, 6to4) unless the operator allow-lists a network. A host
//! written as an IP literal is refused outright (DNS names only) unless its network is
//! allow-listed. The checked addresses are the ones connected to, so a name cannot
//! re-resolve elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use url::Url;

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not an http or https URL")]
    BadUri(String),
    #[error("host {host} resolves to {address}, a {kind} address")]
    Forbidden { host: String, address: IpAddr, kind: &'static str },
    #[error("{uri} names an IP literal ({address}, a {kind} address); only DNS names are reached")]
    IpLiteral { uri: String, address: IpAddr, kind: &'static str },
    #[error("host {host} does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
}

/// The allow-list of networks the operator trusts as targets.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    pub allow: Vec<IpNet>,
}

/// The kind of a non-public address, or `None` for a public one.
pub fn forbidden_kind(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private",
        _ if ip.is_link_local() => "link-local",
        _ if a == 100 && (64..128).contains(&b) => "shared (carrier-grade NAT)",
        _ if a == 192 && b == 0 && c == 0 => "IETF protocol assignment",
        _ if a == 198 && (18..20).contains(&b) => "benchmarking",
        _ if ip.is_documentation() => "documentation",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) forms.
    if let Some(v4) = ip.to_ipv4() {
        return if ip.is_loopback() || ip.is_unspecified() {
            Some(if ip.is_loopback() { "loopback" } else { "unspecified" })
        } else {
            v4_kind(v4)
        };
    }
    Some(match segments {
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return v4_kind(embedded_v4(hi, lo)),
        [0x2002, hi, lo, ..] => return v4_kind(embedded_v4(hi, lo)),
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if (segments[0] & 0xfe00) == 0xfc00 => "private (unique local)",
        _ if (segments[0] & 0xffc0) == 0xfe80 => "link-local",
        _ if (segments[0] & 0xffc0) == 0xfec0 => "site-local",
        _ if ip.is_multicast() => "multicast",
        _ if segments[0] == 0x2001 && segments[1] == 0xdb8 => "documentation",
        _ => return None,
    })
}

impl TargetPolicy {
    fn check(&self, host: &str, address: IpAddr) -> Result<(), Refused> {
        let canonical = address.to_canonical();
        if self.allow.iter().any(|net| net.contains(&address) || net.contains(&canonical)) {
            return Ok(());
        }
        match forbidden_kind(address) {
            Some(kind) => Err(Refused::Forbidden { host: host.to_owned(), address, kind }),
            None => Ok(()),
        }
    }

    /// An IP-literal host (in any notation the URL parser reads: dotted, decimal, hex,
    /// octal, short, IPv6) is refused unless the operator allow-listed its network:
    /// targets are DNS names.
    fn literal(&self, uri: &str, address: IpAddr, port: u16) -> Result<SocketAddr, Refused> {
        let canonical = address.to_canonical();
        if self.allow.iter().any(|net| net.contains(&address) || net.contains(&canonical)) {
            return Ok(SocketAddr::new(address, port));
        }
        let kind = forbidden_kind(address).unwrap_or("public");
        Err(Refused::IpLiteral { uri: uri.to_owned(), address, kind })
    }

    /// Parses the URI, resolves its host and checks every address; returns the URL,
    /// its host name and the addresses to connect to.
    pub async fn resolve(&self, uri: &str) -> Result<(Url, Vec<SocketAddr>), Refused> {
        let url = parse(uri)?;
        let port = url.port_or_known_default().ok_or_else(|| Refused::BadUri(uri.to_owned()))?;
        let host = url.host().ok_or_else(|| Refused::BadUri(uri.to_owned()))?;
        let addresses: Vec<SocketAddr> = match host {
            url::Host::Ipv4(ip) => vec![self.literal(uri, IpAddr::V4(ip), port)?],
            url::Host::Ipv6(ip) => vec![self.literal(uri, IpAddr::V6(ip), port)?],
            url::Host::Domain(name) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| Refused::Unresolved { host: name.to_owned(), reason: e.to_string() })?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(Refused::Unresolved { host: host.to_string(), reason: "no addresses".into() });
        }
        for address in &addresses {
            self.check(&host.to_string(), address.ip())?;
        }
        Ok((url, addresses))
    }
}

/// An http or https URL with a host, as a target must be: written out as
/// `scheme://host…` (no `http:host` or backslash forms the URL standard repairs), with
/// a non-empty host and no userinfo of any shape (`user@`, `:pw@`, a bare `@`), and no
/// whitespace or control characters.
pub fn parse(uri: &str) -> Result<Url, Refused> {
    let bad = || Refused::BadUri(uri.to_owned());
    if uri.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\') {
        return Err(bad());
    }
    let (scheme, rest) = uri.split_once("://").ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let url = Url::parse(uri).map_err(|e| Refused::BadUri(format!("{uri}: {e}")))?;
    let host_is_empty = url.host_str().is_none_or(str::is_empty);
    if host_is_empty || !url.username().is_empty() || url.password().is_some() {
        return Err(bad());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> Option<&'static str> {
        forbidden_kind(text.parse().unwrap())
    }

    #[test]
    fn refuses_every_non_public_range_in_every_form() {
        for (address, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("64:ff9b::7f00:1", "loopback"),
            ("2002:c0a8:0101::1", "private"),
            ("10.0.0.1", "private"),
            ("172.16.5.4", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
        ] {
            assert_eq!(kind(address), Some(expected), "{address}");
        }
        for public in ["93.184.215.14", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert_eq!(kind(public), None, "{public}");
        }
    }

    #[tokio::test]
    async fn names_and_literals_are_checked_and_the_allow_list_opens_a_network() {
        let policy = TargetPolicy::default();
        for (uri, expected) in [
            ("http://127.0.0.1:9/hook", "loopback"),
            ("http://[::1]/", "loopback"),
            ("http://[::ffff:127.0.0.1]/", "loopback"),
            ("https://10.0.0.1/", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
        ] {
            let refused = policy.resolve(uri).await.map(drop);
            assert!(matches!(refused, Err(Refused::IpLiteral { kind, .. }) if kind == expected), "{uri}");
        }
        let named = policy.resolve("http://localhost:8080/x").await.map(drop);
        assert!(matches!(named, Err(Refused::Forbidden { kind: "loopback", .. })), "{named:?}");
        for uri in ["ftp://example.com/", "not a uri", "http://user:pw@example.com/"] {
            assert!(matches!(policy.resolve(uri).await, Err(Refused::BadUri(_))), "{uri}");
        }
        let open = TargetPolicy { allow: vec!["127.0.0.0/8".parse().unwrap()] };
        assert!(open.resolve("http://127.0.0.1:9/hook").await.is_ok());
        assert!(open.resolve("http://[::ffff:127.0.0.1]:9/hook").await.is_ok());
        assert!(open.resolve("http://10.0.0.1/").await.is_err());
    }

    #[test]
    fn userinfo_of_any_shape_and_missing_hosts_are_refused() {
        for uri in [
            "http://user@example.com/",
            "http://user:pw@example.com/",
            "http://:pw@example.com/",
            "http://@example.com/",
            "http://:@example.com/",
            "https://a%40b@example.com/",
            "http:///x",
            "http://",
            "http:x",
            "http:/example.com/",
            "http:\\\\example.com\\",
            "http://example.com\\@evil.com/",
            "http://exa mple.com/",
            "http://example.com/\n",
        ] {
            assert!(matches!(parse(uri), Err(Refused::BadUri(_))), "{uri}");
        }
        for uri in
            ["http://example.com/hook", "https://hooks.example.com:8443/a?b=c#d", "HTTPS://Example.COM/x"]
        {
            assert!(parse(uri).is_ok(), "{uri}");
        }
    }

    #[tokio::test]
    async fn ip_literals_are_refused_unless_allow_listed() {
        let policy = TargetPolicy::default();
        for uri in [
            "http://93.184.215.14/hook",
            "http://8.8.8.8/",
            "http://[2606:4700::1111]/",
            "http://134744072/",
            "http://0x8.0x8.0x8.0x8/",
            "http://8.8.2056/",
            "http://0010.0010.0010.0010/",
            "http://8.8.8.8./",
            "http://[::ffff:8.8.8.8]/",
            "http://[::ffff:808:808]/",
            "http://2130706433/",
            "http://127.1/",
        ] {
            let refused = policy.resolve(uri).await.map(drop);
            assert!(matches!(refused, Err(Refused::IpLiteral { .. })), "{uri}: {refused:?}");
        }
        let open =
            TargetPolicy { allow: vec!["8.8.8.0/24".parse().unwrap(), "127.0.0.0/8".parse().unwrap()] };
        assert!(open.resolve("http://8.8.8.8/").await.is_ok());
        assert!(open.resolve("http://134744072/").await.is_ok());
        assert!(open.resolve("http://2130706433:9/").await.is_ok());
        assert!(matches!(open.resolve("http://9.9.9.9/").await, Err(Refused::IpLiteral { .. })));
    }
}
