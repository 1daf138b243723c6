//! Test support for Quorum: real etcd clusters of each supported version on loopback (free
//! ports, temporary directories, killed by PID on drop), Kubernetes-like keyspace loaders, and
//! runners for the reference tools (`etcdctl`, `etcdutl`) whose output Quorum must match.
//!
//! ```no_run
//! use testkit::{Cluster, ClusterOptions, EtcdVersion, KubeKeyspace};
//! let c = Cluster::start(ClusterOptions::new(EtcdVersion::V3_5, 3))?;
//! testkit::load(&c.endpoints(), &KubeKeyspace { objects: 500, ..Default::default() })?;
//! c.save_snapshot(&c.dir().join("snap.db"))?;
//! # Ok::<(), anyhow::Error>(())
//! ```

mod cluster;
mod fixtures;
mod loader;
mod mount;
pub mod relay;
pub mod servers;
mod tls;
mod tools;

pub use cluster::{plan_members, Cluster, ClusterOptions, Member, MemberPlan};
pub use fixtures::{fixtures_available, kube_fixture, kube_vector};
pub use loader::{bulk, dump, hash_kv, load, load_async, object_key, object_value, put, KubeKeyspace, Kv, LoadSummary};
pub use mount::Mount;
pub use tls::{generate_tls, TlsFiles};
pub use tools::{project_root, setup_tool, shared_fixtures, EtcdVersion};

/// Temporaries a writer left in `dir` (`NAME.partial-XXXXXX`, see `etcd_data::durable`): a
/// failed or refused write must leave none.
pub fn partial_leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains(".partial")).collect())
        .unwrap_or_default()
}
