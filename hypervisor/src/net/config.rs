//! How the node's interface gets its address, and the endpoints named on the command line:
//! `net=dhcp` (the default), `net=off`, or a static `net=ADDR/PREFIX[,GATEWAY[,DNS...]]`
//! for machines without a DHCP server; `net.check=HOST:PORT` names a TCP server to try
//! once the address is up (HOST an IPv4 address or a DNS name).
#![forbid(unsafe_code)]

use core::fmt;

/// Most DNS servers kept from a static configuration or a lease.
pub const MAX_DNS: usize = 3;

/// An IPv4 address.
pub type Ipv4 = [u8; 4];

/// How the interface is configured.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Mode {
    /// No network: the NIC is left alone.
    Off,
    /// DHCPv4.
    #[default]
    Dhcp,
    /// A fixed address.
    Static(Static),
}

/// A fixed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Static {
    /// The interface's address.
    pub addr: Ipv4,
    /// Its prefix length, 1 to 32.
    pub prefix: u8,
    /// The default gateway, when there is one.
    pub gateway: Option<Ipv4>,
    /// DNS servers, in order.
    pub dns: heapless::Vec<Ipv4, MAX_DNS>,
}

/// What is wrong with a network setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// Not `dhcp`, `off` or `ADDR/PREFIX,...`.
    Syntax,
    /// An address that is not four decimal octets.
    BadAddress,
    /// A prefix length outside 1..=32.
    BadPrefix,
    /// The address is the network's or its broadcast address, or not unicast.
    NotAHostAddress,
    /// The gateway is not inside the interface's network.
    GatewayOffLink,
    /// More than [`MAX_DNS`] DNS servers.
    TooManyDns,
    /// A host that is neither an address nor a DNS name, or a bad port.
    BadEndpoint,
}

impl ConfigError {
    /// What is wrong, in words.
    pub fn reason(self) -> &'static str {
        match self {
            ConfigError::Syntax => "expected dhcp, off or ADDR/PREFIX[,GATEWAY[,DNS...]]",
            ConfigError::BadAddress => "an address is not four decimal octets",
            ConfigError::BadPrefix => "the prefix length is not 1 to 32",
            ConfigError::NotAHostAddress => "the address is not a host address of its network",
            ConfigError::GatewayOffLink => "the gateway is outside the interface's network",
            ConfigError::TooManyDns => "more than 3 DNS servers",
            ConfigError::BadEndpoint => {
                "expected HOST:PORT with an IPv4 address or a DNS name and a port 1 to 65535"
            }
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// Parses dotted-quad IPv4, strictly: four decimal octets without leading zeroes.
pub fn parse_ipv4(s: &str) -> Option<Ipv4> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty()
            || p.len() > 3
            || !p.bytes().all(|b| b.is_ascii_digit())
            || (p.len() > 1 && p.starts_with('0'))
        {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

/// Whether `a` and `b` are in the same network of length `prefix`.
pub fn same_network(a: Ipv4, b: Ipv4, prefix: u8) -> bool {
    let m = mask(prefix);
    u32::from_be_bytes(a) & m == u32::from_be_bytes(b) & m
}

/// Parses the value of `net=`.
pub fn parse_mode(s: &str) -> Result<Mode, ConfigError> {
    match s {
        "dhcp" => return Ok(Mode::Dhcp),
        "off" => return Ok(Mode::Off),
        _ => {}
    }
    let mut parts = s.split(',');
    let first = parts.next().ok_or(ConfigError::Syntax)?;
    let (addr, prefix) = first.split_once('/').ok_or(ConfigError::Syntax)?;
    let addr = parse_ipv4(addr).ok_or(ConfigError::BadAddress)?;
    let prefix: u8 = match prefix.parse() {
        Ok(p @ 1..=32) if !prefix.starts_with('0') => p,
        _ => return Err(ConfigError::BadPrefix),
    };
    let host = u32::from_be_bytes(addr);
    let m = mask(prefix);
    let host_part = host & !m;
    if addr[0] == 0
        || addr[0] >= 224
        || addr[0] == 127
        || (prefix <= 30 && (host_part == 0 || host_part == !m))
    {
        return Err(ConfigError::NotAHostAddress);
    }
    let gateway = match parts.next() {
        None | Some("") => None,
        Some(g) => {
            let g = parse_ipv4(g).ok_or(ConfigError::BadAddress)?;
            if !same_network(addr, g, prefix) || g == addr {
                return Err(ConfigError::GatewayOffLink);
            }
            Some(g)
        }
    };
    let mut dns = heapless::Vec::new();
    for d in parts {
        let d = parse_ipv4(d).ok_or(ConfigError::BadAddress)?;
        dns.push(d).map_err(|_| ConfigError::TooManyDns)?;
    }
    Ok(Mode::Static(Static { addr, prefix, gateway, dns }))
}

/// A TCP endpoint by address or by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// An IPv4 address.
    Ip(Ipv4),
    /// A DNS name, to be resolved.
    Name(&'a str),
}

/// Whether `s` is a DNS name as RFC 1123 has host names: labels of letters, digits and
/// hyphens, 1 to 63 bytes, not starting or ending with a hyphen, 253 bytes in all.
pub fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !s.rsplit('.').next().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses `HOST:PORT`.
pub fn parse_endpoint(s: &str) -> Result<(Host<'_>, u16), ConfigError> {
    let (host, port) = s.rsplit_once(':').ok_or(ConfigError::BadEndpoint)?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('0') && !port.starts_with('+') => p,
        _ => return Err(ConfigError::BadEndpoint),
    };
    if let Some(ip) = parse_ipv4(host) {
        return Ok((Host::Ip(ip), port));
    }
    if is_dns_name(host) {
        return Ok((Host::Name(host), port));
    }
    Err(ConfigError::BadEndpoint)
}

/// Formats an IPv4 address.
pub struct Dotted(pub Ipv4);

impl fmt::Display for Dotted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("dhcp"), Ok(Mode::Dhcp));
        assert_eq!(parse_mode("off"), Ok(Mode::Off));
        let Ok(Mode::Static(s)) = parse_mode("192.168.1.50/24,192.168.1.1,1.1.1.1,8.8.8.8") else { panic!() };
        assert_eq!(s.addr, [192, 168, 1, 50]);
        assert_eq!(s.prefix, 24);
        assert_eq!(s.gateway, Some([192, 168, 1, 1]));
        assert_eq!(&s.dns[..], &[[1, 1, 1, 1], [8, 8, 8, 8]]);
        let Ok(Mode::Static(s)) = parse_mode("10.0.0.7/8") else { panic!() };
        assert_eq!((s.gateway, s.dns.len()), (None, 0));
        let Ok(Mode::Static(s)) = parse_mode("10.0.0.7/32") else { panic!() };
        assert_eq!(s.prefix, 32);
    }

    #[test]
    fn bad_modes_say_why() {
        for (s, e) in [
            ("", ConfigError::Syntax),
            ("static", ConfigError::Syntax),
            ("10.0.0.1", ConfigError::Syntax),
            ("10.0.0/24", ConfigError::BadAddress),
            ("10.0.0.256/24", ConfigError::BadAddress),
            ("10.0.0.01/24", ConfigError::BadAddress),
            ("10.0.0.1.1/24", ConfigError::BadAddress),
            ("+10.0.0.1/24", ConfigError::BadAddress),
            ("10.0.0.1/0", ConfigError::BadPrefix),
            ("10.0.0.1/33", ConfigError::BadPrefix),
            ("10.0.0.1/024", ConfigError::BadPrefix),
            ("10.0.0.1/x", ConfigError::BadPrefix),
            ("10.0.0.0/24", ConfigError::NotAHostAddress),
            ("10.0.0.255/24", ConfigError::NotAHostAddress),
            ("0.1.2.3/8", ConfigError::NotAHostAddress),
            ("224.0.0.1/4", ConfigError::NotAHostAddress),
            ("127.0.0.1/8", ConfigError::NotAHostAddress),
            ("10.0.0.1/24,10.0.1.1", ConfigError::GatewayOffLink),
            ("10.0.0.1/24,10.0.0.1", ConfigError::GatewayOffLink),
            ("10.0.0.1/24,10.0.0.2,1.1.1.1,1.1.1.2,1.1.1.3,1.1.1.4", ConfigError::TooManyDns),
            ("10.0.0.1/24,10.0.0.2,dns", ConfigError::BadAddress),
        ] {
            assert_eq!(parse_mode(s), Err(e), "{s}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(parse_endpoint("10.0.2.100:6443"), Ok((Host::Ip([10, 0, 2, 100]), 6443)));
        assert_eq!(parse_endpoint("api.example.com:443"), Ok((Host::Name("api.example.com"), 443)));
        assert_eq!(parse_endpoint("localhost:1"), Ok((Host::Name("localhost"), 1)));
        for bad in [
            "10.0.2.100",
            "10.0.2.100:0",
            "10.0.2.100:65536",
            "10.0.2.100:+80",
            "10.0.2.100:080",
            ":80",
            "a..b:80",
            "-a.b:80",
            "a_b:80",
            "1.2.3:80",
            "[::1]:80",
        ] {
            assert_eq!(parse_endpoint(bad), Err(ConfigError::BadEndpoint), "{bad}");
        }
        let long = "a".repeat(64) + ".com:80";
        assert_eq!(parse_endpoint(&long), Err(ConfigError::BadEndpoint));
        assert_eq!(Dotted([10, 0, 2, 15]).to_string(), "10.0.2.15");
        assert!(same_network([10, 0, 2, 15], [10, 0, 2, 2], 24));
        assert!(!same_network([10, 0, 3, 15], [10, 0, 2, 2], 24));
        assert!(same_network([1, 2, 3, 4], [1, 2, 3, 4], 32));
    }
}
