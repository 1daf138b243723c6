//! Connections to etcd members, configured as etcdctl is: endpoints, TLS files, credentials,
//! dial and command timeouts.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::error::{Error, Result};

/// A password that never prints itself.
#[derive(Clone, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How to reach the cluster (etcdctl's `--endpoints`, `--cacert`, `--cert`, `--key`, `--user`,
/// `--dial-timeout`, `--command-timeout`).
#[derive(Debug, Clone)]
pub struct ConnConfig {
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<(String, Secret)>,
    pub dial_timeout: Duration,
    pub command_timeout: Duration,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            cacert: None,
            cert: None,
            key: None,
            user: None,
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
        }
    }
}

impl ConnConfig {
    pub fn tls(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some()
    }

    /// An endpoint with its scheme: `host:port` gets `https://` when TLS is configured.
    pub fn url(&self, endpoint: &str) -> String {
        if endpoint.contains("://") {
            endpoint.to_string()
        } else if self.tls() {
            format!("https://{endpoint}")
        } else {
            format!("http://{endpoint}")
        }
    }

    fn options(&self) -> Result<ConnectOptions> {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(self.dial_timeout)
            .with_timeout(self.command_timeout)
            // etcd's server refuses pings more often than every 5 s (--grpc-keepalive-min-time)
            // and closes a connection that keeps sending them while a long call (a defrag of a
            // large db) sends nothing back: "broken pipe" after ~8 s. Waits are bounded by
            // the command timeout anyway.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        if self.tls() {
            let mut t = TlsOptions::new();
            if let Some(ca) = &self.cacert {
                let pem = std::fs::read(ca).map_err(|e| Error::Tls(format!("CA certificate {}: {e}", ca.display())))?;
                t = t.ca_certificate(Certificate::from_pem(pem));
            }
            match (&self.cert, &self.key) {
                (Some(c), Some(k)) => {
                    let cert = std::fs::read(c).map_err(|e| Error::Tls(format!("client certificate {}: {e}", c.display())))?;
                    let key = std::fs::read(k).map_err(|e| Error::Tls(format!("client key {}: {e}", k.display())))?;
                    t = t.identity(Identity::from_pem(cert, key));
                }
                (None, None) => {}
                _ => return Err(Error::Tls("a client certificate needs its key, and a key its certificate".into())),
            }
            o = o.with_tls(t);
        }
        if let Some((u, p)) = &self.user {
            o = o.with_user(u.clone(), p.0.clone());
        }
        Ok(o)
    }

    /// A client for exactly one endpoint (operations that must address a given member).
    pub async fn connect_one(&self, endpoint: &str) -> Result<Client> {
        let url = self.url(endpoint);
        let opts = self.options()?;
        match tokio::time::timeout(self.dial_timeout + Duration::from_millis(500), Client::connect([url.clone()], Some(opts))).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Error::Connect { endpoint: url, msg: describe(&e) }),
            Err(_) => Err(Error::Connect { endpoint: url, msg: format!("no answer within the dial timeout ({:?})", self.dial_timeout) }),
        }
    }

    /// A client balanced over every endpoint.
    pub async fn connect_all(&self) -> Result<Client> {
        let urls: Vec<String> = self.endpoints.iter().map(|e| self.url(e)).collect();
        let opts = self.options()?;
        match tokio::time::timeout(self.dial_timeout + Duration::from_millis(500), Client::connect(urls.clone(), Some(opts))).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(Error::Connect { endpoint: urls.join(","), msg: describe(&e) }),
            Err(_) => Err(Error::Connect { endpoint: urls.join(","), msg: format!("no answer within the dial timeout ({:?})", self.dial_timeout) }),
        }
    }

    /// Run `f` under `--command-timeout`.
    pub async fn timed<T, F>(&self, endpoint: &str, op: &'static str, f: F) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        match tokio::time::timeout(self.command_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            // The client's own deadline (the same command timeout) can fire first.
            Ok(Err(e)) if describe(&e).contains("Timeout expired") => Err(Error::Timeout { endpoint: self.url(endpoint), op, after: self.command_timeout }),
            Ok(Err(e)) => Err(Error::Rpc { endpoint: self.url(endpoint), op, msg: describe(&e) }),
            Err(_) => Err(Error::Timeout { endpoint: self.url(endpoint), op, after: self.command_timeout }),
        }
    }
}

/// A client error in one line: what the operating system's or the TLS library's reason means
/// when a connection failed (`connection refused`, `TLS: unknown authority`), else the server's status message; never the client
/// library's debug rendering of its error chain, which used to fill whole table columns.
pub fn describe(e: &etcd_client::Error) -> String {
    // etcd-client's error does not name its cause; the gRPC status inside it does.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        etcd_client::Error::TransportError(t) => Some(t),
        e => Some(e),
    };
    let mut io = None;
    while let Some(c) = cause {
        if let Some(i) = c.downcast_ref::<std::io::Error>() {
            io = Some(i);
        }
        cause = c.source();
    }
    if let Some(i) = io {
        return meaning(i);
    }
    match e {
        etcd_client::Error::GRpcStatus(s) if !s.message().is_empty() => s.message().to_string(),
        etcd_client::Error::GRpcStatus(s) => format!("{:?}", s.code()),
        e => e.to_string(),
    }
}

/// What an I/O error below the gRPC client means, in words: `connection refused`, `TLS: unknown
/// authority`, without the `(os error 111)` or rustls's enum names.
fn meaning(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let plain = match e.kind() {
        ConnectionRefused => return "connection refused".into(),
        ConnectionReset => return "connection reset by the server".into(),
        HostUnreachable | NetworkUnreachable => return "no route to the host".into(),
        TimedOut => return "connection timed out".into(),
        _ => e.to_string(),
    };
    // TLS failures arrive as the TLS library's error inside an I/O error.
    const TLS: [(&str, &str); 8] = [
        ("UnknownIssuer", "TLS: unknown authority (the server's certificate is not signed by --cacert)"),
        ("NotValidForName", "TLS: the server's certificate is not valid for this host name or IP"),
        ("Expired", "TLS: the server's certificate has expired"),
        ("NotValidYet", "TLS: the server's certificate is not valid yet (check the clocks)"),
        ("CertificateRequired", "TLS: the server wants a client certificate (--cert and --key)"),
        ("BadCertificate", "TLS: the server refused the client certificate"),
        ("UnknownCA", "TLS: the server does not trust the client certificate's authority"),
        ("InvalidContentType", "TLS: the server does not speak TLS (try http:// or leave out --cacert)"),
    ];
    for (needle, words) in TLS {
        if plain.contains(needle) {
            return words.into();
        }
    }
    match plain.find(" (os error") {
        Some(i) => plain[..i].to_lowercase(),
        None => plain,
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_refused_connection_reads_as_the_os_says_it() {
        // A port nothing listens on: connecting is lazy, the first call fails.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = super::ConnConfig { endpoints: vec![format!("127.0.0.1:{port}")], ..Default::default() };
        let err = match cfg.connect_one(&cfg.endpoints[0]).await {
            Err(e) => e,
            Ok(mut c) => cfg.timed(&cfg.endpoints[0], "status", c.status()).await.expect_err("nothing listens there"),
        };
        let text = err.to_string();
        assert!(text.contains("connection refused") && !text.contains("os error"), "{text}");
        assert!(!text.contains("tonic") && !text.contains("Os {") && text.len() < 200, "{text}");
    }
}
