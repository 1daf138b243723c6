//! The writer of `bench/migrate-stage.sh`: a steady mix of what Kubernetes does to etcd.
//!
//! ```text
//! mixed_load --endpoints URL[,URL..] [--rate 200] [--prefix /bench/]
//! ```
//! Paced to `--rate` operations a second until SIGTERM or Ctrl-C, in turn: puts that overwrite
//! 1,000 keys, deletes of them, transactions of three puts and a delete, puts of keys attached to
//! a lease kept alive, and puts attached to 5-second leases nobody keeps alive (their keys'
//! deletion is a revision of its own). Prints `ops=N failed=M seconds=S` when stopped.
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, Txn, TxnOp};

fn arg(name: &str) -> Option<String> {
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == name {
            return it.next();
        }
    }
    None
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let endpoints: Vec<String> = arg("--endpoints")
        .unwrap_or_else(|| {
            eprintln!("usage: mixed_load --endpoints URL[,URL..] [--rate 200] [--prefix /bench/]");
            std::process::exit(2)
        })
        .split(',')
        .map(str::to_string)
        .collect();
    let rate: u64 = arg("--rate").and_then(|r| r.parse().ok()).unwrap_or(200);
    let prefix = arg("--prefix").unwrap_or_else(|| "/bench/".into());
    let mut c = Client::connect(endpoints, None).await.unwrap_or_else(|e| {
        eprintln!("mixed_load: {e}");
        std::process::exit(1)
    });
    let kept = c.lease_grant(30, None).await.expect("lease").id();
    let (mut keeper, mut acks) = c.lease_keep_alive(kept).await.expect("keepalive");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    let start = Instant::now();
    let (mut ops, mut failed, mut short) = (0u64, 0u64, 0i64);
    let mut last_keepalive = Instant::now();
    for i in 0u64.. {
        let due = start + Duration::from_micros(i * 1_000_000 / rate.max(1));
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        if last_keepalive.elapsed() > Duration::from_secs(5) {
            let _ = keeper.keep_alive().await;
            let _ = acks.message().await;
            last_keepalive = Instant::now();
        }
        let k = |n: u64| format!("{prefix}k/{:04}", n % 1000);
        let ok = match i % 10 {
            0..=5 => c.put(k(i * 31), format!("v{i}-").repeat(1 + (i % 13) as usize), None).await.is_ok(),
            6 => c.delete(k(i * 17), None).await.is_ok(),
            7 => {
                let ops = vec![
                    TxnOp::put(k(i + 1), format!("t{i}"), None),
                    TxnOp::put(k(i + 2), format!("t{i}"), None),
                    TxnOp::put(format!("{prefix}t/{}", i % 500), "txn", None),
                    TxnOp::delete(k(i + 3), None),
                ];
                c.txn(Txn::new().and_then(ops)).await.is_ok()
            }
            8 => c.put(format!("{prefix}leased/{}", i % 100), format!("l{i}"), Some(PutOptions::new().with_lease(kept))).await.is_ok(),
            _ => {
                if short == 0 || i % 500 == 9 {
                    short = c.lease_grant(5, None).await.map(|r| r.id()).unwrap_or(0);
                }
                c.put(format!("{prefix}short/{}", i % 40), format!("s{i}"), Some(PutOptions::new().with_lease(short))).await.is_ok()
            }
        };
        if ok {
            ops += 1;
        } else {
            failed += 1;
        }
    }
    println!("ops={ops} failed={failed} seconds={:.1}", start.elapsed().as_secs_f64());
}
