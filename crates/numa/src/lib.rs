//! The NUMA and hugepage model of a compute host, nova's placement fit, readers for the
//! host's real state (sysfs, /proc/meminfo, lscpu), nova.conf and OVS-DPDK settings (brought
//! together in [`compute_host`]: the host as nova sees it), and the
//! diagnosis of instances that nova places where the kernel has no free hugepages
//! (`os_mem_prealloc: Insufficient free host memory pages available to allocate guest RAM`).
//!
//! ```
//! use numa::model::Flavor;
//! let host = numa::host::synthetic(&[(0, 1024), (1, 1024)], 2048, 8);
//! let flavor = Flavor { name: "m1.tiny".into(), vcpus: 1, memory_mb: 512, numa_nodes: None,
//!     mem_page_size: Some("large".into()), cpu_policy: Some("dedicated".into()) };
//! let mut inst = numa::model::instance_topology(&flavor).unwrap().unwrap();
//! let placed = numa::fit::fit_instance_to_host(&host, &mut inst, false, None).unwrap();
//! assert_eq!((placed[0].id, placed[0].pagesize_kb), (0, Some(2048)));
//! ```

pub mod compute_host;
pub mod config;
pub mod diagnose;
mod error;
pub mod fit;
pub mod host;
pub mod libvirt;
pub mod model;
pub mod pyset;
pub mod units;

pub use error::Error;
