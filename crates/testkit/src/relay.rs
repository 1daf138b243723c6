//! A fault-injecting TCP relay: sits between a client and a server on 127.0.0.1 and, on
//! command, delays, stalls, resets or truncates the traffic, or answers HTTP requests itself
//! with an error status. Tests put it in front of an object-storage server to see what
//! Quorum does when the network or the store misbehaves; `bench/soak.sh` uses it (through
//! `quorum-testkit relay`) to cut the repository off for a while.
//!
//! Written here because the fault tools people use for this (toxiproxy, tc netem) are a Go
//! service and a kernel facility needing network namespaces; this is two threads a
//! connection, and a fault is changed with one call, effective at once on live connections.
//!
//! ```no_run
//! use testkit::relay::{Fault, Relay};
//! let relay = Relay::start("127.0.0.1:9000".parse()?)?;
//! relay.set(Fault::Status { code: 503, times: 3 }); // the next 3 requests get a 503
//! relay.set(Fault::Reset); // every connection, new or open, is reset
//! relay.set(Fault::Pass);
//! # Ok::<(), anyhow::Error>(())
//! ```
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the relay does to traffic from now on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged.
    Pass,
    /// Delay every chunk forwarded, either way, by this much.
    Latency(Duration),
    /// Accept connections and hold every byte (either way) until the fault changes: a server
    /// that stopped answering, or a network that drops packets.
    Stall,
    /// Reset every open connection and every new one (TCP RST): the store is cut off.
    Reset,
    /// Pass requests through but close each response after this many bytes, mid-body.
    Truncate(usize),
    /// Answer the next `times` HTTP requests with this status (and no body) instead of
    /// forwarding them, one request per connection, then pass again. Open connections are
    /// closed when this is set, so the next request of every client meets the fault.
    Status { code: u16, times: u32 },
}

/// Counts of what the relay did, for assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub connections: u64,
    pub resets: u64,
    pub statuses: u64,
    pub truncations: u64,
    /// Bytes forwarded to the server (requests) and to clients (responses), counted as each
    /// chunk is handed to the socket (a chunk whose write fails still counts).
    pub bytes_up: u64,
    pub bytes_down: u64,
}

struct Shared {
    upstream: SocketAddr,
    fault: Mutex<Fault>,
    /// Bumped whenever a fault that ends open connections is set; a pump whose connection
    /// started in an older generation ends its connection.
    generation: AtomicU64,
    stopping: AtomicBool,
    connections: AtomicU64,
    resets: AtomicU64,
    statuses: AtomicU64,
    truncations: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// A running relay; stopped (its listener closed, open connections reset) on drop.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Relay {
    /// Listen on a free port of 127.0.0.1 and forward to `upstream`.
    pub fn start(upstream: SocketAddr) -> anyhow::Result<Relay> {
        Relay::listen("127.0.0.1:0".parse()?, upstream)
    }

    /// Listen on `addr` and forward to `upstream`.
    pub fn listen(addr: SocketAddr, upstream: SocketAddr) -> anyhow::Result<Relay> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            fault: Mutex::new(Fault::Pass),
            generation: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            statuses: AtomicU64::new(0),
            truncations: AtomicU64::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::Builder::new().name("relay-accept".into()).spawn(move || accept_loop(listener, s))?;
        Ok(Relay { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Change the fault; it applies at once, to open connections too.
    pub fn set(&self, fault: Fault) {
        let ends_open = matches!(fault, Fault::Reset | Fault::Status { .. });
        *self.shared.fault.lock().unwrap() = fault;
        if ends_open {
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The fault now in force (a `Status` burst that ran out reads as `Pass`).
    pub fn fault(&self) -> Fault {
        self.shared.fault.lock().unwrap().clone()
    }

    pub fn stats(&self) -> RelayStats {
        let s = &self.shared;
        RelayStats {
            connections: s.connections.load(Ordering::SeqCst),
            resets: s.resets.load(Ordering::SeqCst),
            statuses: s.statuses.load(Ordering::SeqCst),
            truncations: s.truncations.load(Ordering::SeqCst),
            bytes_up: s.bytes_up.load(Ordering::SeqCst),
            bytes_down: s.bytes_down.load(Ordering::SeqCst),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(listener: TcpListener, s: Arc<Shared>) {
    for conn in listener.incoming() {
        if s.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        s.connections.fetch_add(1, Ordering::SeqCst);
        let s = s.clone();
        let _ = std::thread::Builder::new().name("relay-conn".into()).spawn(move || serve(client, s));
    }
}

/// Close with a TCP RST rather than a FIN: what a cut network or a crashed peer looks like.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    let _ = stream.shutdown(Shutdown::Both);
}

fn serve(client: TcpStream, s: Arc<Shared>) {
    let generation = s.generation.load(Ordering::SeqCst);
    let fault = s.fault.lock().unwrap().clone();
    match fault {
        Fault::Reset => {
            s.resets.fetch_add(1, Ordering::SeqCst);
            reset(&client);
            return;
        }
        Fault::Status { code, .. } if take_status(&s) => {
            answer_status(client, code, &s);
            return;
        }
        _ => {}
    }
    let Ok(upstream) = TcpStream::connect_timeout(&s.upstream, Duration::from_secs(5)) else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (c2, u2) = match (client.try_clone(), upstream.try_clone()) {
        (Ok(c), Ok(u)) => (c, u),
        _ => return,
    };
    let s2 = s.clone();
    let up = std::thread::Builder::new().name("relay-up".into()).spawn(move || pump(c2, u2, &s2, generation, false));
    pump(upstream, client, &s, generation, true);
    if let Ok(h) = up {
        let _ = h.join();
    }
}

/// Take one answer of a `Status` burst: false when none is left.
fn take_status(s: &Shared) -> bool {
    let mut f = s.fault.lock().unwrap();
    let Fault::Status { times, .. } = &mut *f else { return false };
    if *times == 0 {
        *f = Fault::Pass;
        return false;
    }
    *times -= 1;
    if *times == 0 {
        *f = Fault::Pass;
    }
    true
}

/// Answer one HTTP request with `code` and close. The request head is read first so the
/// client sees a response, not a write error.
fn answer_status(mut client: TcpStream, code: u16, s: &Shared) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 1 << 16 {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    s.statuses.fetch_add(1, Ordering::SeqCst);
    let reason = match code {
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let _ = write!(client, "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Both);
}

/// Copy `from` → `to` under the fault in force at each chunk. `response` is the server's
/// direction (where `Truncate` applies).
fn pump(mut from: TcpStream, mut to: TcpStream, s: &Shared, generation: u64, response: bool) {
    // Short read timeouts so a pump notices a fault change while its peer is quiet.
    let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut forwarded = 0usize;
    loop {
        if s.generation.load(Ordering::SeqCst) != generation {
            if s.stopping.load(Ordering::SeqCst) || *s.fault.lock().unwrap() == Fault::Reset {
                s.resets.fetch_add(1, Ordering::SeqCst);
            }
            reset(&from);
            reset(&to);
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => {
                reset(&to);
                return;
            }
        };
        let mut chunk = &buf[..n];
        // Hold the chunk while stalled; apply latency; truncate responses.
        loop {
            let fault = s.fault.lock().unwrap().clone();
            match fault {
                Fault::Stall if s.generation.load(Ordering::SeqCst) == generation => std::thread::sleep(Duration::from_millis(50)),
                Fault::Latency(d) => {
                    std::thread::sleep(d);
                    break;
                }
                Fault::Truncate(limit) if response => {
                    if forwarded + chunk.len() > limit {
                        chunk = &chunk[..limit.saturating_sub(forwarded)];
                        let _ = to.write_all(chunk);
                        s.truncations.fetch_add(1, Ordering::SeqCst);
                        reset(&to);
                        reset(&from);
                        return;
                    }
                    break;
                }
                _ => break,
            }
        }
        // Counted before the write: a peer that has read the bytes then finds them counted
        // (counted after, a test reading the stats once its response arrived could miss them).
        if response { &s.bytes_down } else { &s.bytes_up }.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if to.write_all(chunk).is_err() {
            reset(&from);
            return;
        }
        forwarded += chunk.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// A tiny HTTP server answering every request on a connection with "ok" and a counter.
    fn server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    loop {
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let body = "x".repeat(1000);
                        if write!(w, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut c = TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(&[b'x'; 10]) && out.len() > 1000 {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn faults_apply_and_clear() {
        let relay = Relay::start(server()).unwrap();
        assert!(get(relay.addr()).unwrap().starts_with("HTTP/1.1 200"));

        relay.set(Fault::Status { code: 503, times: 2 });
        assert!(get(relay.addr()).unwrap().starts_with("HTTP/1.1 503"));
        assert!(get(relay.addr()).unwrap().starts_with("HTTP/1.1 503"));
        assert_eq!(relay.fault(), Fault::Pass, "a burst runs out by itself");
        assert!(get(relay.addr()).unwrap().starts_with("HTTP/1.1 200"));

        relay.set(Fault::Reset);
        let e = get(relay.addr());
        assert!(e.is_err() || e.as_ref().unwrap().is_empty(), "{e:?}");

        relay.set(Fault::Truncate(500));
        let body = get(relay.addr()).unwrap_or_default();
        assert!(body.len() <= 500, "{}", body.len());

        relay.set(Fault::Stall);
        assert!(get(relay.addr()).is_err(), "a stalled relay answers nothing within the timeout");
        relay.set(Fault::Pass);
        assert!(get(relay.addr()).unwrap().starts_with("HTTP/1.1 200"));
        let st = relay.stats();
        assert_eq!(st.statuses, 2);
        assert!(st.resets >= 1 && st.truncations == 1, "{st:?}");
        assert!(st.bytes_down >= 3 * 1000 && st.bytes_up > 0, "{st:?}");
    }
}
