//! One leader per cluster through etcd's election API: each agent holds a lease (TTL
//! `election.ttl_seconds`, kept alive at a third of it) and campaigns on
//! `/quorum/agent/<cluster>/leader`. The campaign returns when this agent leads; leadership
//! ends when the lease can no longer be kept alive (the agent then stops leader work at once
//! and campaigns again). An agent that dies loses its lease after the TTL, so another leads
//! within one TTL plus its campaign round trip; one that is stopped (SIGTERM) revokes its lease
//! first ([`resign`]), and another leads at once.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;

pub fn election_name(cluster: &str) -> String {
    format!("/quorum/agent/{cluster}/leader")
}

/// The lease this agent campaigns with (0 when none), for [`resign`].
pub type CurrentLease = Arc<std::sync::atomic::AtomicI64>;

/// Campaign forever; `leader` is true while this agent leads.
pub async fn run(
    mut client: Client,
    cluster: String,
    me: String,
    ttl: i64,
    leader: Arc<AtomicBool>,
    on_change: Arc<dyn Fn(bool) + Send + Sync>,
    current: CurrentLease,
) {
    loop {
        if let Err(e) = one_term(&mut client, &cluster, &me, ttl, &leader, &on_change, &current).await {
            tracing::warn!(cluster = %cluster, operation = %"election", agent = %me, error = %e, "election failed; retrying");
        }
        if leader.swap(false, Ordering::SeqCst) {
            on_change(false);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn one_term(
    client: &mut Client,
    cluster: &str,
    me: &str,
    ttl: i64,
    leader: &Arc<AtomicBool>,
    on_change: &Arc<dyn Fn(bool) + Send + Sync>,
    current: &CurrentLease,
) -> Result<(), etcd_client::Error> {
    // These two answer at once from a healthy cluster; bound them (the client has no timeout).
    let bound = Duration::from_secs(10);
    let lease = match tokio::time::timeout(bound, client.lease_grant(ttl, None)).await {
        Ok(r) => r?.id(),
        Err(_) => return Err(etcd_client::Error::InvalidArgs("lease grant timed out".into())),
    };
    current.store(lease, Ordering::SeqCst);
    let (mut keeper, mut responses) = match tokio::time::timeout(bound, client.lease_keep_alive(lease)).await {
        Ok(r) => r?,
        Err(_) => {
            let _ = tokio::time::timeout(bound, client.lease_revoke(lease)).await;
            return Err(etcd_client::Error::InvalidArgs("lease keepalive timed out".into()));
        }
    };
    let alive = Arc::new(AtomicBool::new(true));
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(300));
    let alive2 = alive.clone();
    let keep = tokio::spawn(async move {
        loop {
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(period * 2, responses.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                _ => break,
            }
            tokio::time::sleep(period).await;
        }
        alive2.store(false, Ordering::SeqCst);
    });
    let mut ec = client.election_client();
    let campaign = ec.campaign(election_name(cluster), me, lease);
    let r = tokio::select! {
        r = campaign => r.map(|_| ()),
        _ = wait_false(&alive) => Ok(()),
    };
    if let Err(e) = r {
        keep.abort();
        let _ = tokio::time::timeout(Duration::from_secs(10), client.lease_revoke(lease)).await;
        return Err(e);
    }
    if alive.load(Ordering::SeqCst) {
        leader.store(true, Ordering::SeqCst);
        on_change(true);
        wait_false(&alive).await;
    }
    keep.abort();
    let _ = tokio::time::timeout(Duration::from_secs(10), client.lease_revoke(lease)).await;
    Ok(())
}

/// Give up the campaign or the leadership now: revoke the lease, which deletes this agent's
/// election key, so the next candidate leads at once instead of after the TTL. Bounded by
/// `within`; returns whether a lease was revoked.
pub async fn resign(client: &mut Client, current: &CurrentLease, within: Duration) -> bool {
    let lease = current.swap(0, Ordering::SeqCst);
    if lease == 0 {
        return false;
    }
    matches!(tokio::time::timeout(within, client.lease_revoke(lease)).await, Ok(Ok(_)))
}

async fn wait_false(flag: &AtomicBool) {
    while flag.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
