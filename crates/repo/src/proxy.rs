//! Which requests go through an HTTP proxy.
//!
//! `--proxy URL` (default: `HTTPS_PROXY`, `https_proxy`, `HTTP_PROXY`, `http_proxy`) and
//! `--no-proxy LIST` (default: `NO_PROXY`, `no_proxy`). The repository talks to one endpoint
//! host, so the decision is made once per repository, here, with these rules (curl's, plus the
//! subdomain-only rule our users asked for):
//!
//! | entry            | matches                                                   |
//! |------------------|-----------------------------------------------------------|
//! | `*`              | every host: the proxy is never used                       |
//! | `.y.com`         | subdomains only: `x.y.com`, `a.b.y.com`; not `y.com`       |
//! | `y.com`          | `y.com` and its subdomains                                |
//! | `10.0.0.0/8`     | IP addresses in the range (IPv4 or IPv6 CIDR)              |
//! | `10.1.2.3`       | that address                                              |
//! | `host:port`      | that host (by the rules above) on that port only           |
//!
//! Matching ignores case and a trailing dot. The HTTP client's own reading of the proxy
//! environment variables is switched off (the binary clears them after reading them), so these
//! rules are the only ones in force.
use std::net::IpAddr;

/// The proxy settings of one invocation.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    pub proxy: Option<String>,
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    pub fn new(proxy: Option<String>, no_proxy: Option<&str>) -> ProxyConfig {
        let no_proxy = no_proxy.unwrap_or("").split(|c: char| c == ',' || c.is_whitespace()).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        ProxyConfig { proxy: proxy.filter(|p| !p.is_empty()), no_proxy }
    }

    /// From the conventional environment variables.
    pub fn from_env() -> ProxyConfig {
        let get = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()));
        let proxy = get(&["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]);
        let no = get(&["NO_PROXY", "no_proxy"]);
        ProxyConfig::new(proxy, no.as_deref())
    }

    /// The proxy to use for `host:port`, or `None` to connect directly.
    pub fn proxy_for(&self, host: &str, port: Option<u16>) -> Option<&str> {
        let p = self.proxy.as_deref()?;
        if self.no_proxy.iter().any(|e| bypass_matches(e, host, port)) {
            None
        } else {
            Some(p)
        }
    }
}

fn norm(h: &str) -> String {
    h.trim_end_matches('.').trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()
}

/// Whether one `--no-proxy` entry matches a host (and port).
pub fn bypass_matches(entry: &str, host: &str, port: Option<u16>) -> bool {
    let entry = entry.trim();
    if entry == "*" {
        return true;
    }
    let host = norm(host);
    // host:port (not an IPv6 literal, which has several colons unless bracketed).
    let (pattern, want_port) = split_port(entry);
    if let Some(wp) = want_port {
        if port != Some(wp) {
            return false;
        }
    }
    let pattern = norm(pattern);
    if pattern.is_empty() {
        return false;
    }
    if let Some((net, bits)) = pattern.split_once('/') {
        let (Ok(net), Ok(bits), Ok(ip)) = (net.parse::<IpAddr>(), bits.parse::<u32>(), host.parse::<IpAddr>()) else {
            return false;
        };
        return in_cidr(ip, net, bits);
    }
    if let (Ok(a), Ok(b)) = (pattern.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        return a == b;
    }
    if let Some(suffix) = pattern.strip_prefix('.') {
        // Subdomains only.
        return host.len() > suffix.len() + 1 && host.ends_with(&pattern);
    }
    host == pattern || (host.len() > pattern.len() && host.ends_with(&pattern) && host.as_bytes()[host.len() - pattern.len() - 1] == b'.')
}

fn split_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p.parse().ok());
        }
        return (rest.trim_end_matches(']'), None);
    }
    if entry.matches(':').count() == 1 {
        let (h, p) = entry.split_once(':').unwrap();
        if let Ok(p) = p.parse() {
            return (h, Some(p));
        }
    }
    (entry, None)
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u32) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_dot_is_subdomains_only() {
        assert!(bypass_matches(".y.com", "x.y.com", None));
        assert!(bypass_matches(".y.com", "a.b.Y.com.", None));
        assert!(!bypass_matches(".y.com", "y.com", None));
        assert!(!bypass_matches(".y.com", "xy.com", None));
    }

    #[test]
    fn plain_name_is_itself_and_subdomains() {
        assert!(bypass_matches("y.com", "y.com", None));
        assert!(bypass_matches("y.com", "x.y.com", None));
        assert!(!bypass_matches("y.com", "xy.com", None));
        assert!(!bypass_matches("y.com", "y.com.evil", None));
    }

    #[test]
    fn star_ips_cidr_and_ports() {
        assert!(bypass_matches("*", "anything", Some(1)));
        assert!(bypass_matches("127.0.0.1", "127.0.0.1", Some(9000)));
        assert!(!bypass_matches("127.0.0.1", "127.0.0.2", None));
        assert!(bypass_matches("10.0.0.0/8", "10.200.3.4", None));
        assert!(!bypass_matches("10.0.0.0/8", "11.0.0.1", None));
        assert!(bypass_matches("::1", "[::1]", None));
        assert!(bypass_matches("fd00::/8", "fd12::1", None));
        assert!(bypass_matches("minio.local:9000", "minio.local", Some(9000)));
        assert!(!bypass_matches("minio.local:9000", "minio.local", Some(443)));
        assert!(bypass_matches("[::1]:80", "::1", Some(80)));
    }

    #[test]
    fn decision() {
        let c = ProxyConfig::new(Some("http://proxy:3128".into()), Some(".internal, localhost ,10.0.0.0/8"));
        assert_eq!(c.proxy_for("s3.amazonaws.com", Some(443)), Some("http://proxy:3128"));
        assert_eq!(c.proxy_for("minio.internal", Some(9000)), None);
        assert_eq!(c.proxy_for("internal", Some(9000)), Some("http://proxy:3128"));
        assert_eq!(c.proxy_for("localhost", None), None);
        assert_eq!(ProxyConfig::new(None, Some("*")).proxy_for("x", None), None);
        assert_eq!(ProxyConfig::new(Some("http://p".into()), Some("*")).proxy_for("x", None), None);
    }
}
