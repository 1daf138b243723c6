//! The agent's main loop: HTTP endpoints, the election, the cluster observer, and the leader's
//! schedule (full backups, retention, drills, auto-defrag), one operation at a time.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use repo::{Repository, StoreOptions, Unlock};

use crate::config::Config;
use crate::defrag::{self, Decision};
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use repo::live::{self as ops, LiveBackup};
use tracing::{info, warn};

/// Shared state of a running agent.
#[derive(Clone)]
pub struct State {
    pub metrics: Metrics,
    pub leader: Arc<AtomicBool>,
    /// The cluster answered the last observation and the repository is open.
    pub ready: Arc<AtomicBool>,
    /// What keeps the agent from doing its work: `/healthz` answers 503 with it.
    pub health: Health,
}

/// Why the agent cannot work, by the check that found it (`/healthz` is 200 while empty).
#[derive(Clone, Default)]
pub struct Health(Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>>);

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<&'static str, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record `check`'s finding; true when it is new or changed (worth a log line).
    pub fn set(&self, check: &'static str, why: String) -> bool {
        self.lock().insert(check, why.clone()).as_ref() != Some(&why)
    }

    /// `check` finds nothing wrong any more; true when it had found something.
    pub fn clear(&self, check: &'static str) -> bool {
        self.lock().remove(check).is_some()
    }

    /// Every finding, one per line; empty when healthy.
    pub fn reasons(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }
}

/// Serve `/metrics`, `/healthz`, `/readyz` on `listen`; returns the bound address. `/healthz`
/// answers 503 with the reasons while the agent cannot do its work (the delta capture's spool
/// does not open or take a new file), so a liveness probe sees it; `/readyz` answers 503 while
/// the cluster does not answer.
pub async fn serve(listen: &str, state: State) -> Result<std::net::SocketAddr, String> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let st = state.clone();
    let st2 = state.clone();
    let st3 = state.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let st = st.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], st.metrics.encode()) }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let st = st3.clone();
                async move {
                    let why = st.health.reasons();
                    if why.is_empty() {
                        (StatusCode::OK, "ok\n".to_string())
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {}\n", why.join("\nunhealthy: ")))
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let st = st2.clone();
                async move {
                    if st.ready.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready: the cluster or the repository does not answer\n")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// Run the agent until the process is stopped.
/// On SIGTERM or SIGINT (systemd stopping the unit, the kubelet deleting the pod), resign the
/// election before exiting, so another agent leads at once rather than after the lease's TTL.
/// Work in flight is abandoned as after a crash, which every operation survives.
async fn resign_on_stop(cfg: Config, conn: etcd_cluster::ConnConfig, lease: crate::election::CurrentLease) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    let resigned = match conn.connect_all().await {
        Ok(mut c) => crate::election::resign(&mut c, &lease, Duration::from_secs(3)).await,
        Err(_) => false,
    };
    info!(cluster = %cfg.cluster, operation = %"election", agent = %cfg.agent_name(), resigned, "{which}: stopping{}", if resigned { "; resigned the election" } else { "" });
    std::process::exit(0);
}

pub async fn run(cfg: Config, conn: etcd_cluster::ConnConfig, unlock: Unlock, store: StoreOptions) -> Result<(), String> {
    let state = State {
        metrics: Metrics::new(&cfg.cluster, &cfg.agent_name()),
        leader: Arc::new(AtomicBool::new(false)),
        ready: Arc::new(AtomicBool::new(false)),
        health: Health::default(),
    };
    let addr = serve(&cfg.listen, state.clone()).await?;
    info!(cluster = %cfg.cluster, agent = %cfg.agent_name(), listen = %addr, "{} for cluster {}: serving /metrics, /healthz, /readyz on http://{addr}", cfg.agent_name(), cfg.cluster);

    // The repository: retried until it opens (an outage at start is not fatal); a wrong
    // secret or a missing repository is.
    let repo = loop {
        let loc = repo::Location::open(&cfg.repo.url, &store, false).map_err(|e| e.to_string())?;
        match Repository::open(loc, &unlock).await {
            Ok(mut r) => {
                // Scheduled work waits for a conflicting lock (a prune, a drill) rather than fail.
                r.lock_retry = Duration::from_secs(300);
                break Arc::new(r);
            }
            Err(e @ (repo::Error::WrongSecret { .. } | repo::Error::Usage(_) | repo::Error::Missing(_))) => return Err(e.to_string()),
            Err(e) => {
                warn!(cluster = %cfg.cluster, operation = %"repository", error = %e, "repository not available yet; retrying in 10s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    };

    // The election. A campaign blocks until this agent leads: its client has no per-request
    // timeout (with one, a waiting follower's campaign would be cut off every few seconds and
    // start again, writing a new candidate key each time).
    let mut election_conn = conn.clone();
    election_conn.command_timeout = Duration::from_secs(365 * 24 * 3600);
    let client = loop {
        match election_conn.connect_all().await {
            Ok(c) => break c,
            Err(e) => {
                warn!(cluster = %cfg.cluster, operation = %"election", error = %e, "etcd not reachable yet; retrying in 2s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let m = state.metrics.clone();
    let (name, cluster) = (cfg.agent_name(), cfg.cluster.clone());
    let on_change: Arc<dyn Fn(bool) + Send + Sync> = Arc::new(move |lead| {
        m.is_leader.set(i64::from(lead));
        info!(cluster = %cluster, operation = %"election", agent = %name, leads = lead, "{name} {}", if lead { "leads" } else { "no longer leads" });
    });
    let lease = crate::election::CurrentLease::default();
    tokio::spawn(crate::election::run(client, cfg.cluster.clone(), cfg.agent_name(), cfg.election.ttl_seconds, state.leader.clone(), on_change, lease.clone()));
    tokio::spawn(resign_on_stop(cfg.clone(), conn.clone(), lease));

    // The observer: every agent exports its view of the cluster.
    {
        let st = state.clone();
        let conn = conn.clone();
        let cluster = cfg.cluster.clone();
        let quota = cfg.quota_backend_bytes;
        let rpo_alert = cfg.delta.rpo_alert_seconds;
        tokio::spawn(async move {
            loop {
                match etcd_cluster::observe(&conn, quota).await {
                    Ok(v) => {
                        st.metrics.observe(&v, Utc::now().timestamp_millis() as f64 / 1000.0);
                        st.ready.store(true, Ordering::SeqCst);
                        // Recovery point: how long the newest change etcd has has waited.
                        let rev = v.statuses.iter().map(|s| s.revision).max().unwrap_or(0);
                        let captured = st.metrics.last_delta_revision.get();
                        let lag = if st.metrics.capture_running.get() == 0 || captured == 0 || rev <= captured {
                            0.0
                        } else {
                            (Utc::now().timestamp_millis() as f64 / 1000.0 - st.metrics.last_delta_timestamp.get()).max(0.0)
                        };
                        st.metrics.rpo_lag.set(lag);
                        st.metrics.rpo_breached.set(i64::from(lag > rpo_alert));
                    }
                    Err(e) => {
                        st.ready.store(false, Ordering::SeqCst);
                        st.metrics.observe_failed();
                        warn!(cluster = %cluster, operation = %"observe", error = %e, "cluster not observable");
                    }
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
    }
    // What the repository says of the cluster's backups and drills, read by every agent.
    let refresh_now = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(freshness_loop(repo.clone(), cfg.clone(), state.metrics.clone(), refresh_now.clone()));
    let backup_now = Arc::new(AtomicBool::new(false));
    if cfg.delta.enabled {
        tokio::spawn(capture_loop(cfg.clone(), conn.clone(), repo.clone(), state.clone(), backup_now.clone()));
    }

    let backup_s = Schedule::parse(&cfg.backup.schedule)?;
    if let Some(d) = backup_s.max_interval(Utc::now()) {
        state.metrics.backup_max_interval.set(d.num_milliseconds() as f64 / 1000.0);
    }
    state.metrics.delta_enabled.set(i64::from(cfg.delta.enabled));
    state.metrics.defrag_min_fragmentation.set(cfg.defrag.min_fragmentation / 100.0);
    state.metrics.defrag_min_db_size.set(cfg.defrag.min_db_size);
    let retention_s = cfg.retention.as_ref().map(|r| Schedule::parse(&r.schedule)).transpose()?;
    let drill_s = cfg.drill.as_ref().map(|d| Schedule::parse(&d.schedule)).transpose()?;
    let mut next_backup = backup_s.next_after(Utc::now());
    let mut next_retention = retention_s.as_ref().and_then(|s| s.next_after(Utc::now()));
    let mut next_drill = drill_s.as_ref().and_then(|s| s.next_after(Utc::now()));
    let mut next_defrag = Instant::now() + cfg.defrag.interval();
    let mut next_consolidate = cfg.consolidate.as_ref().map(|c| Instant::now() + Duration::from_secs_f64(c.check_seconds));
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = Utc::now();
        refresh_age(&cfg, &state.metrics);
        if !state.leader.load(Ordering::SeqCst) {
            continue;
        }
        // One operation at a time: a defrag never runs during a backup.
        if backup_now.swap(false, Ordering::SeqCst) || next_backup.is_some_and(|t| now >= t) {
            next_backup = backup_s.next_after(now);
            run_backup(&cfg, &conn, &repo, &state.metrics).await;
            release_free_memory();
            refresh_now.notify_one();
            continue;
        }
        if next_retention.is_some_and(|t| now >= t) {
            next_retention = retention_s.as_ref().and_then(|s| s.next_after(now));
            run_retention(&cfg, &repo, &state.metrics).await;
            release_free_memory();
            continue;
        }
        if next_drill.is_some_and(|t| now >= t) {
            next_drill = drill_s.as_ref().and_then(|s| s.next_after(now));
            run_drill(&cfg, &repo, &state.metrics).await;
            release_free_memory();
            refresh_now.notify_one();
            continue;
        }
        if let (Some(c), Some(t)) = (&cfg.consolidate, next_consolidate) {
            if Instant::now() >= t {
                next_consolidate = Some(Instant::now() + Duration::from_secs_f64(c.check_seconds));
                run_consolidate(&cfg, c, &repo, &state.metrics).await;
                release_free_memory();
                refresh_now.notify_one();
                continue;
            }
        }
        if Instant::now() >= next_defrag {
            next_defrag = Instant::now() + cfg.defrag.interval();
            run_defrag(&cfg, &conn, &state.metrics).await;
        }
    }
}

/// Hands the heap's free pages back to the kernel once a large operation is over.
///
/// A full backup, a retention run, a drill or a consolidation moves hundreds of megabytes
/// through buffers on several runtime threads, and glibc keeps what those threads free in
/// per-thread arenas. Without this, an agent that runs for months holds its largest
/// operation's working set for good: the 2-hour soak (`bench/soak.sh`) measured 2.4 MiB of
/// heap before an agent's first full backup and 31 MiB after it, with nothing in use. Also
/// called when a delta capture stops: the soak after that fix still saw a kept agent's heap
/// step up after faults that moved leadership (2.9 to 13.2 MiB in 2 hours).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it takes no
    // pointer from us and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

async fn run_backup(cfg: &Config, conn: &etcd_cluster::ConnConfig, repo: &Arc<Repository>, m: &Metrics) {
    let b = LiveBackup {
        cluster: cfg.cluster.clone(),
        from: cfg.backup.from.clone(),
        tmp_dir: cfg.backup.tmp_dir.clone(),
        tags: cfg.backup.tags.clone(),
        includes: vec![],
        uploads: 8,
        openshift_root: None,
    };
    let started = Instant::now();
    match ops::live_backup(conn, repo.clone(), &b, Arc::new(|_, _| {})).await {
        Ok(r) => {
            m.last_full_backup_duration.set(started.elapsed().as_secs_f64());
            m.last_full_backup_added_bytes.set(r.manifest.added_bytes as i64);
            m.uploaded_bytes.inc_by(r.manifest.added_bytes);
            m.op("backup", true);
            info!(
                cluster = %cfg.cluster,
                operation = %"backup",
                backup = %repo::short(&r.id),
                revision = r.manifest.snapshot.revision,
                duration = started.elapsed().as_secs_f64(),
                added_bytes = r.manifest.added_bytes,
                "backup {} at revision {} ({} added)",
                repo::short(&r.id),
                r.manifest.snapshot.revision,
                r.manifest.added_bytes
            );
        }
        Err(e) => {
            m.op("backup", false);
            warn!(cluster = %cfg.cluster, operation = %"backup", duration = started.elapsed().as_secs_f64(), error = %e, "backup failed");
        }
    }
}

async fn run_retention(cfg: &Config, repo: &Arc<Repository>, m: &Metrics) {
    let Some(r) = &cfg.retention else { return };
    let policy = repo::retention::Policy { last: r.keep_last, hourly: r.keep_hourly, daily: r.keep_daily, weekly: r.keep_weekly, monthly: r.keep_monthly };
    let keep_pitr = r.keep_pitr_hours.map(|h| Duration::from_secs_f64(h * 3600.0));
    match repo::prune::forget(repo, &policy, Some(&cfg.cluster), keep_pitr, false).await {
        Ok(f) => {
            m.op("forget", f.refused.is_empty());
            let segs: usize = f.deltas.iter().map(|d| d.remove.len()).sum();
            info!(
                cluster = %cfg.cluster,
                operation = %"forget",
                removed = f.removed.len(),
                refused = f.refused.len(),
                "retention removed {} backup(s){}; {segs} delta segment(s) no longer needed",
                f.removed.len(),
                if f.refused.is_empty() { String::new() } else { format!("; the bucket refused {}", f.refused.len()) }
            );
        }
        Err(e) => {
            m.op("forget", false);
            warn!(cluster = %cfg.cluster, operation = %"forget", error = %e, "retention failed");
            return;
        }
    }
    if r.prune {
        match repo::prune::prune(repo.clone(), Some(&cfg.cluster), 0.10, false, Duration::from_secs(3600)).await {
            Ok(p) => {
                m.op("prune", p.refused.is_empty());
                info!(
                    cluster = %cfg.cluster,
                    operation = %"prune",
                    "prune deleted {} pack(s), repacked {}, deleted {} delta segment(s)",
                    p.packs_deleted,
                    p.packs_repacked,
                    p.segments_deleted
                );
            }
            Err(e) => {
                m.op("prune", false);
                warn!(cluster = %cfg.cluster, operation = %"prune", error = %e, "prune failed");
            }
        }
    }
}

/// Consolidate when the chain since the newest full backup passed the size or age set.
async fn run_consolidate(cfg: &Config, c: &crate::config::Consolidate, repo: &Arc<Repository>, m: &Metrics) {
    let since = match repo::consolidate::chain_since_newest(repo, &cfg.cluster).await {
        Ok(s) => s,
        Err(repo::Error::Missing(_)) => return,
        Err(e) => {
            warn!(cluster = %cfg.cluster, operation = %"consolidate", error = %e, "consolidate: cannot read the chain since the newest backup");
            return;
        }
    };
    if since.segments == 0 || since.to_revision <= since.base_revision {
        return;
    }
    let age_h =
        chrono::DateTime::parse_from_rfc3339(&since.base_time).map(|t| (Utc::now() - t.with_timezone(&Utc)).num_seconds() as f64 / 3600.0).unwrap_or(0.0);
    let by_size = c.after_mib.is_some_and(|mib| since.bytes >= mib.saturating_mul(1 << 20));
    let by_age = c.after_hours.is_some_and(|h| age_h >= h);
    if !(by_size || by_age) {
        return;
    }
    let why = if by_size { format!("{} bytes of segments", since.bytes) } else { format!("newest full backup {age_h:.1} h old") };
    let o = repo::consolidate::ConsolidateOptions {
        cluster: cfg.cluster.clone(),
        at_revision: None,
        work_dir: cfg.backup.tmp_dir.clone(),
        parallel: 8,
        tags: vec!["agent".into()],
    };
    let started = Instant::now();
    match repo::consolidate::consolidate(repo.clone(), &o, Arc::new(|_, _| {})).await {
        Ok(r) => {
            m.op("consolidate", true);
            info!(
                cluster = %cfg.cluster,
                operation = %"consolidate",
                backup = %repo::short(&r.backup.id),
                revision = r.to_revision,
                duration = started.elapsed().as_secs_f64(),
                "consolidated backup {} at revision {} from {} + {} segment(s) ({why})",
                repo::short(&r.backup.id),
                r.to_revision,
                repo::short(&r.base),
                r.segments
            );
        }
        Err(e) => {
            m.op("consolidate", false);
            warn!(cluster = %cfg.cluster, operation = %"consolidate", duration = started.elapsed().as_secs_f64(), error = %e, "consolidate failed");
        }
    }
}

async fn run_drill(cfg: &Config, repo: &Arc<Repository>, m: &Metrics) {
    let Some(d) = &cfg.drill else { return };
    let (id, man) = match repo.resolve("latest", Some(&cfg.cluster)).await {
        Ok(x) => x,
        Err(e) => {
            m.op("drill", false);
            warn!(cluster = %cfg.cluster, operation = %"drill", error = %e, "drill: no backup to restore");
            return;
        }
    };
    let opts = repo::drill::DrillOptions { etcd_bin: d.etcd_bin.clone(), ..Default::default() };
    let started = Instant::now();
    match repo::drill::drill(repo.clone(), &id, &man, &opts).await {
        Ok(v) => {
            m.op("drill", v.ok);
            let (backup, revision, duration) = (repo::short(&id), man.snapshot.revision, started.elapsed().as_secs_f64());
            match &v.failure {
                None if v.ok => info!(cluster = %cfg.cluster, operation = %"drill", backup = %backup, revision, duration, "drill of {backup}: passed"),
                f => warn!(
                    cluster = %cfg.cluster,
                    operation = %"drill",
                    backup = %backup,
                    revision,
                    duration,
                    error = %f.as_deref().unwrap_or_default(),
                    "drill of {backup}: FAILED"
                ),
            }
        }
        Err(e) => {
            m.op("drill", false);
            warn!(cluster = %cfg.cluster, operation = %"drill", duration = started.elapsed().as_secs_f64(), error = %e, "drill failed");
        }
    }
}

/// Every `repo.refresh_seconds`, and at once when the leader wrote a backup or a drill record:
/// the cluster's newest backup and newest passed drill as the repository holds them. Every
/// agent exports them, so an alert on their age does not depend on which agent leads.
async fn freshness_loop(repo: Arc<Repository>, cfg: Config, m: Metrics, now: Arc<tokio::sync::Notify>) {
    let mut fresh = repo::freshness::Freshness::new(&cfg.cluster);
    let mut failing = false;
    loop {
        match fresh.refresh(&repo).await {
            Ok(s) => {
                if failing {
                    info!(cluster = %cfg.cluster, operation = %"repository", "the repository's backup and drill records read again");
                    failing = false;
                }
                m.last_full_backup_timestamp.set(s.newest_backup.as_ref().map_or(0.0, |b| b.time.timestamp_millis() as f64 / 1000.0));
                m.last_full_backup_revision.set(s.newest_backup.as_ref().map_or(0, |b| b.revision));
                m.last_verified_timestamp.set(s.newest_passed_drill.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0));
                m.repository_read_timestamp.set(Utc::now().timestamp_millis() as f64 / 1000.0);
                refresh_age(&cfg, &m);
            }
            Err(e) => {
                if !failing {
                    warn!(cluster = %cfg.cluster, operation = %"repository", error = %e, "reading the backup and drill records failed; the last read values stay exported");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(cfg.repo.refresh_seconds)) => {}
            _ = now.notified() => {}
        }
    }
}

fn refresh_age(cfg: &Config, m: &Metrics) {
    let t = m.last_verified_timestamp.get();
    let age = if t > 0.0 { Utc::now().timestamp() as f64 - t } else { f64::INFINITY };
    m.last_verified_age.set(if age.is_finite() { age } else { -1.0 });
    if let Some(d) = &cfg.drill {
        m.drill_overdue.set(i64::from(!age.is_finite() || age > d.max_age_hours * 3600.0));
    }
}

async fn run_defrag(cfg: &Config, conn: &etcd_cluster::ConnConfig, m: &Metrics) {
    let view = match etcd_cluster::observe(conn, cfg.quota_backend_bytes).await {
        Ok(v) => v,
        Err(e) => {
            warn!(cluster = %cfg.cluster, operation = %"defrag", error = %e, "defrag check: cluster not observable");
            return;
        }
    };
    match defrag::decide(&cfg.defrag, &view, Utc::now()) {
        Decision::Nothing(_) => {}
        Decision::Refused(why) => info!(cluster = %cfg.cluster, operation = %"defrag", "auto-defrag due but not started: {why}"),
        Decision::Defrag(members) => {
            info!(cluster = %cfg.cluster, operation = %"defrag", "auto-defrag: {} due ({})", members.len(), members.join(", "));
            let opts = etcd_cluster::maintenance::DefragOptions {
                min_fragmentation: cfg.defrag.min_fragmentation,
                pause: Duration::from_secs(5),
                dry_run: false,
                disarm: false,
                quota_fallback: cfg.quota_backend_bytes,
                recover_timeout: Duration::from_secs(60),
            };
            let started = Instant::now();
            let step = |s: &etcd_cluster::maintenance::DefragStep| info!(cluster = %cfg.cluster, operation = %"defrag", member = %s.name, "defrag {}: {}", s.name, s.action);
            match etcd_cluster::maintenance::defrag(conn, &opts, &step).await {
                Ok(r) => {
                    let n = r.steps.iter().filter(|s| s.db_size_after.is_some()).count();
                    m.defrags.inc_by(n as u64);
                    m.op("defrag", true);
                }
                Err(e) => {
                    m.op("defrag", false);
                    warn!(cluster = %cfg.cluster, operation = %"defrag", duration = started.elapsed().as_secs_f64(), error = %e, "auto-defrag failed");
                }
            }
        }
    }
}

/// The spool's health check (it opens, takes a new file, and the capture's last write into it
/// succeeded), every 5 s.
const SPOOL: &str = "spool";
const SPOOL_RETRY: Duration = Duration::from_secs(5);

/// While this agent leads: capture every change into delta segments chained to the newest
/// full backup, from the end of its chain, and on across later backups. Segments go through the local spool
/// ([`crate::spool`]), whose uploader runs for as long as the agent does (leading or not), so
/// segments spooled earlier, by this run or an earlier one, are uploaded first; the chain end
/// counts spooled segments, and while the repository cannot be read the capture resumes after
/// the last spooled one. A compacted start (changes lost) asks for a full backup at once; any
/// other failure restarts the capture from the end of the chain after a pause.
async fn capture_loop(cfg: Config, conn: etcd_cluster::ConnConfig, repo: Arc<Repository>, state: State, backup_now: Arc<AtomicBool>) {
    let root = cfg.delta.spool_dir_for(&cfg.cluster);
    // Without its spool the capture cannot run: /healthz says so until the spool opens.
    let spool = loop {
        match crate::spool::Spool::open(&root, &repo.config.id, &cfg.cluster, cfg.delta.spool_max_bytes(), state.metrics.spool.clone()) {
            Ok(s) => {
                if state.health.clear(SPOOL) {
                    info!(cluster = %cfg.cluster, operation = %"spool", "the delta spool {} opens again", s.dir().display());
                }
                break s;
            }
            Err(e) => {
                if state.health.set(SPOOL, format!("the delta capture cannot run: cannot open its spool: {e}")) {
                    warn!(cluster = %cfg.cluster, operation = %"spool", spool = %root.display(), error = %e, "capture: cannot open the delta spool; retrying every 5s");
                }
                tokio::time::sleep(SPOOL_RETRY).await;
            }
        }
    };
    // ... and while it takes no new file or the capture's last write into it failed.
    tokio::spawn({
        let (spool, health, cluster) = (spool.clone(), state.health.clone(), cfg.cluster.clone());
        async move {
            loop {
                tokio::time::sleep(SPOOL_RETRY).await;
                match spool.probe().err().or_else(|| spool.write_failing()) {
                    None => {
                        if health.clear(SPOOL) {
                            info!(cluster = %cluster, operation = %"spool", "the delta spool {} is writable again", spool.dir().display());
                        }
                    }
                    Some(e) => {
                        if health.set(SPOOL, format!("the delta capture cannot run: its spool is not writable: {e}")) {
                            warn!(cluster = %cluster, operation = %"spool", error = %e, "the delta spool is not writable");
                        }
                    }
                }
            }
        }
    });
    if !spool.is_empty() {
        info!(
            cluster = %cfg.cluster,
            operation = %"spool",
            "spool {}: {} segment(s), {} bytes from an earlier run: uploading them first",
            spool.dir().display(),
            spool.len(),
            spool.bytes()
        );
    }
    let m = state.metrics.clone();
    let on_upload: crate::spool::OnUpload = Arc::new(move |u| {
        if u.last_revision > m.last_delta_revision.get() {
            m.last_delta_revision.set(u.last_revision);
        }
        m.last_delta_timestamp.set(Utc::now().timestamp_millis() as f64 / 1000.0);
        m.delta_segments.inc();
        m.uploaded_bytes.inc_by(u.bytes);
    });
    tokio::spawn(spool.clone().run_uploader(repo.clone(), Some(on_upload)));
    // A back-fill start that etcd had already compacted: not tried again.
    let mut backfill_refused: Option<i64> = None;
    loop {
        if !state.leader.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        // The spool before the listing: a segment uploaded in between is in one of them.
        let spooled = spool.refs();
        let listed = match repo.resolve("latest", Some(&cfg.cluster)).await {
            Ok((base, man)) => repo::delta::list_segments(&repo, &cfg.cluster).await.map(|segs| (base, man.snapshot.revision, segs)),
            Err(repo::Error::Missing(_)) => {
                // Nothing to chain to yet: the first full backup starts the chain.
                backup_now.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => Err(e),
        };
        let mut backfill = false;
        let (base, from) = match listed {
            Ok((base, base_rev, mut segs)) => {
                let uploaded = repo::delta::plan_chain(&segs, base_rev + 1, None).contiguous_to.max(base_rev);
                if state.metrics.last_delta_revision.get() < uploaded {
                    state.metrics.last_delta_revision.set(uploaded);
                    state.metrics.last_delta_timestamp.set(Utc::now().timestamp_millis() as f64 / 1000.0);
                }
                segs.extend(spooled);
                let mut from = repo::delta::plan_chain(&segs, base_rev + 1, None).contiguous_to.max(base_rev) + 1;
                // Nothing after this backup yet, and the chain before it stops short of it (the
                // previous leader died between taking it and its capture moving on to it, or
                // with segments it never wrote): capture from where that chain stops, so every
                // revision stays restorable from the older backups too (overlap is harmless:
                // a restore replays only revisions after its base).
                let tail = segs.iter().map(|s| s.last).filter(|&l| l <= base_rev).max();
                if let Some(end) = tail.filter(|&e| e < base_rev && from == base_rev + 1 && backfill_refused != Some(e + 1)) {
                    info!(
                        cluster = %cfg.cluster,
                        operation = %"capture",
                        revision = end + 1,
                        "capture: the delta chain before backup {} stops at revision {end}: capturing from {} to close it",
                        repo::short(&base),
                        end + 1
                    );
                    from = end + 1;
                    backfill = true;
                }
                (base, from)
            }
            Err(e) => match resume_from_spool(&spool, &repo, &spooled).await {
                Some((base, end)) => {
                    warn!(
                        cluster = %cfg.cluster,
                        operation = %"capture",
                        revision = end + 1,
                        error = %e,
                        "capture: the repository does not answer; resuming after the spooled segments, at revision {}",
                        end + 1
                    );
                    (base, end + 1)
                }
                None => {
                    warn!(cluster = %cfg.cluster, operation = %"capture", error = %e, "capture: cannot find the end of the delta chain");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            },
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let leader = state.leader.clone();
        // Stop when leadership ends. A newer full backup does not restart the capture: the
        // segments go on adjoining, and a restore from that backup replays only the revisions
        // after it (a restart would only add a pause after every backup).
        let watcher = tokio::spawn(async move {
            while leader.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let _ = stop_tx.send(true);
        });
        let mut opts = crate::capture::CaptureOptions::new(&cfg.cluster, &base, from);
        opts.policy = crate::capture::SegmentPolicy {
            interval: Duration::from_secs_f64(cfg.delta.interval_seconds.max(0.1)),
            max_bytes: (cfg.delta.max_mib.max(1) << 20) as usize,
        };
        opts.spool = Some(spool.clone());
        info!(
            cluster = %cfg.cluster,
            operation = %"capture",
            revision = from,
            backup = %repo::short(&base),
            "capturing deltas from revision {from} (chained to backup {}; spool {})",
            repo::short(&base),
            spool.dir().display()
        );
        state.metrics.capture_running.set(1);
        let r = crate::capture::capture(&conn, repo.clone(), opts, stop_rx).await;
        state.metrics.capture_running.set(0);
        watcher.abort();
        // The capture's watch, batches and uploads are gone (leadership moved, or it failed).
        release_free_memory();
        match r {
            Ok(rep) => info!(cluster = %cfg.cluster, operation = %"capture", revision = rep.last_revision, "capture stopped at revision {}", rep.last_revision),
            Err(e @ crate::capture::CaptureError::Compacted { .. }) if backfill => {
                // The backup covers those revisions; capture after it.
                warn!(cluster = %cfg.cluster, operation = %"capture", error = %e, "capture: the hole before backup {} stays, capturing after it", repo::short(&base));
                backfill_refused = Some(from);
            }
            Err(e @ crate::capture::CaptureError::Compacted { .. }) => {
                state.metrics.op("capture", false);
                warn!(cluster = %cfg.cluster, operation = %"capture", error = %e, "capture: changes were compacted away; taking a full backup now");
                backup_now.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                state.metrics.op("capture", false);
                warn!(cluster = %cfg.cluster, operation = %"capture", error = %e, "capture failed; restarting from the end of the chain");
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }
    }
}

/// While the repository cannot be read: the base and last revision of the spooled chain (the
/// newest spooled segment names its base backup), to capture on from there.
async fn resume_from_spool(spool: &crate::spool::Spool, repo: &Repository, spooled: &[repo::delta::SegmentRef]) -> Option<(String, i64)> {
    let (first, newest) = (spooled.first()?, spooled.last()?);
    let end = repo::delta::plan_chain(spooled, first.first, None).contiguous_to;
    let path = spool.dir().join(newest.name.rsplit('/').next()?);
    let (key, name) = (repo.data_key().clone(), newest.name.clone());
    let header = tokio::task::spawn_blocking(move || {
        let stored = std::fs::read(path).ok()?;
        repo::delta::open_segment(&key, &name, &stored).ok().map(|s| s.header)
    })
    .await
    .ok()??;
    Some((header.base, end))
}
