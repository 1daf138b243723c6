//! Operate a running etcd cluster the way `etcdctl` does, with the safety checks a bad day
//! needs: `snapshot save` (streamed, sha256 checked as it arrives, written to a temporary and
//! renamed without clobbering), cluster `status` (fragmentation, quota use, leader, raft indices, alarms, hashkv
//! agreement), rolling `defrag` (followers first, leader last, one at a time, health-gated),
//! alarms, membership changes that refuse to cost quorum, and recovery from quorum loss.
//!
//! Connections follow etcdctl: endpoints, `--cacert/--cert/--key` TLS, user and password,
//! dial and command timeouts ([`ConnConfig`]).
//!
//! ```no_run
//! # async fn f() -> Result<(), etcd_cluster::Error> {
//! let cfg = etcd_cluster::ConnConfig { endpoints: vec!["127.0.0.1:2379".into()], ..Default::default() };
//! let view = etcd_cluster::observe(&cfg, etcd_cluster::DEFAULT_QUOTA).await?;
//! println!("leader {:?}, {} members", view.leader, view.members.len());
//! # Ok(()) }
//! ```

pub mod conn;
mod error;
pub mod maintenance;
pub mod members;
pub mod recover;
pub mod save;
pub mod view;

pub use conn::{ConnConfig, Secret};
pub use error::{AuthProblem, Error, Result};
pub use view::{observe, ClusterView, EndpointStatus, DEFAULT_QUOTA};
