//! The NUMA and hugepage model of a compute host as nova 34 sees it, and nova's decisions on it:
//! readers for the host's real state (sysfs, /proc/meminfo, lscpu), nova.conf and OVS-DPDK
//! settings; nova's CPU sets and thread siblings ([`cpu`]); a request's NUMA constraints
//! ([`constraints`]); the placement fit and CPU pinning ([`fit`], over sets in CPython's
//! iteration order, [`pyset`]); all brought together in [`compute_host`]; and the diagnosis of
//! instances that nova places where the kernel has no free hugepages
//! (`os_mem_prealloc: Insufficient free host memory pages available to allocate guest RAM`).
//! Every answer is checked against the real nova by `crates/numa/tests/nova/differential.py`.
//!
//! ```
//! use numa::constraints::{numa_get_constraints, Flavor};
//! let host = numa::host::synthetic(&[(0, 1024), (1, 1024)], 2048, 8);
//! let flavor = Flavor::new(1, 512).spec("hw:mem_page_size", "large").spec("hw:cpu_policy", "dedicated");
//! let mut inst = numa_get_constraints(&flavor).unwrap().unwrap();
//! let placed = numa::fit::fit_instance_to_host(&host, &mut inst, false, None).unwrap().unwrap();
//! assert_eq!((placed[0].id, placed[0].pagesize_kb), (0, Some(2048)));
//! // Not CPU 0: nova walks the sibling sets in the order CPython iterates {(0,), (1,), … (7,)}.
//! assert_eq!(placed[0].cpu_pinning[&0], 6);
//! ```

pub mod compute_host;
pub mod config;
pub mod constraints;
pub mod cpu;
pub mod diagnose;
mod error;
pub mod fit;
pub mod host;
pub mod libvirt;
pub mod model;
pub mod pyset;
pub mod units;

pub use error::Error;
