//! Commands on files: snapshot status/verify/restore against etcd's own tools, bad input, hashkv, the NUMA host files, and the deploy files.
//!
//! One test binary per group of test modules: linking is most of a rebuild.

#[path = "../common/mod.rs"]
mod common;

mod deploy_files;
mod flag_mixups;
mod hashkv_compat;
mod help_pages;
mod numa_diagnose;
mod numa_nova;
mod output_formats;
mod recover_plan;
mod restore_compat;
mod restore_safety;
mod snapshot_bad_input;
mod snapshot_status_compat;
