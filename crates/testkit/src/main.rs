//! `quorum-testkit`: load a Kubernetes-like keyspace into a running etcd (for the demo and
//! the benchmarks).
// The doc comments on clap's structs are the --help text, written for a terminal: `<stamp>`
// and `[:password]` in them are neither HTML nor links.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "quorum-testkit", about = "Test and demo helpers for Quorum")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load /registry/<resource>/<ns>/<name> objects with overwrites, deletes and a compaction.
    Load {
        #[arg(long, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',')]
        endpoints: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        objects: usize,
        #[arg(long, default_value_t = 10)]
        namespaces: usize,
        #[arg(long, default_value_t = 0.3)]
        overwrite_fraction: f64,
        #[arg(long, default_value_t = 0.1)]
        delete_fraction: f64,
        #[arg(long)]
        no_compact: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Fill quickly with unique objects (start etcd with large --max-request-bytes/--max-txn-ops).
    Bulk {
        #[arg(long, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',')]
        endpoints: Vec<String>,
        /// Total value bytes, in MiB.
        #[arg(long)]
        mib: u64,
        /// Smallest value, bytes.
        #[arg(long, default_value_t = 256)]
        min_value: usize,
        /// Largest value, bytes.
        #[arg(long, default_value_t = 8192)]
        max_value: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Relay TCP from --listen to --to, with the fault read from --control (polled every 0.1 s):
    /// `pass`, `latency MS`, `stall`, `reset`, `truncate BYTES`, `status CODE TIMES`. Counts
    /// are written beside it (its extension replaced by `stats`): `bytes_up bytes_down connections
    /// resets statuses truncations`.
    Relay {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long)]
        control: std::path::PathBuf,
    },
}

/// One line of a relay control file as a fault.
fn parse_fault(line: &str) -> Option<testkit::relay::Fault> {
    use testkit::relay::Fault;
    let w: Vec<&str> = line.split_whitespace().collect();
    Some(match w.as_slice() {
        [] | ["pass"] => Fault::Pass,
        ["latency", ms] => Fault::Latency(std::time::Duration::from_millis(ms.parse().ok()?)),
        ["stall"] => Fault::Stall,
        ["reset"] => Fault::Reset,
        ["truncate", n] => Fault::Truncate(n.parse().ok()?),
        ["status", code, times] => Fault::Status { code: code.parse().ok()?, times: times.parse().ok()? },
        _ => return None,
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Load { endpoints, objects, namespaces, overwrite_fraction, delete_fraction, no_compact, seed } => {
            let spec = testkit::KubeKeyspace { objects, namespaces, overwrite_fraction, delete_fraction, compact: !no_compact, seed, ..Default::default() };
            let s = testkit::load(&endpoints, &spec)?;
            println!(
                "loaded {} objects: {} puts, {} deletes, {} live keys, revision {}{}",
                objects,
                s.puts,
                s.deletes,
                s.live_keys,
                s.revision,
                s.compacted_at.map(|c| format!(", compacted at {c}")).unwrap_or_default()
            );
        }
        Cmd::Bulk { endpoints, mib, min_value, max_value, concurrency } => {
            let s = testkit::bulk(&endpoints, mib << 20, min_value, max_value, concurrency)?;
            println!("bulk-loaded {} objects ({} MiB of values), revision {}", s.puts, s.value_bytes >> 20, s.revision);
        }
        Cmd::Relay { listen, to, control } => {
            let relay = testkit::relay::Relay::listen(listen, to)?;
            eprintln!("relay {} -> {to}; fault from {}", relay.addr(), control.display());
            let mut last = String::new();
            loop {
                let now = std::fs::read_to_string(&control).unwrap_or_default().trim().to_string();
                if now != last {
                    match parse_fault(&now) {
                        Some(f) => {
                            eprintln!("relay: {f:?}");
                            relay.set(f);
                        }
                        None => eprintln!("relay: ignoring unknown fault {now:?}"),
                    }
                    last = now;
                }
                let st = relay.stats();
                let line = format!("{} {} {} {} {} {}\n", st.bytes_up, st.bytes_down, st.connections, st.resets, st.statuses, st.truncations);
                let stats = control.with_extension("stats");
                let tmp = control.with_extension("stats.tmp");
                if std::fs::write(&tmp, line).and_then(|_| std::fs::rename(&tmp, &stats)).is_err() {
                    eprintln!("relay: cannot write {}", stats.display());
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    Ok(())
}
