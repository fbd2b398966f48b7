//! Who may call an app (`apps.<name>.ip_allow`): networks in CIDR notation, matched against the peer's
//! address before its token is looked at.

use std::net::IpAddr;

/// An IPv4 or IPv6 network in CIDR notation (a bare address is a network of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

/// An `ip_allow` entry that is neither an address nor a network.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not an IP address or CIDR network (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)")]
pub struct NotACidr(String);

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, NotACidr> {
        let s = s.trim();
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => ipnet::IpNet::from(s.parse::<IpAddr>().map_err(|_| NotACidr(s.to_string()))?),
        };
        Ok(Cidr(net.trunc()))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6 addresses.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.contains(&ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
    }
}
