//! The backup repository on local disk and S3/Azure/GCS servers: backups, restores, retention, pinned formats, point-in-time restore.
//!
//! One test binary per group of test modules: linking is most of a rebuild.

#[path = "../common/mod.rs"]
mod common;

mod flaky_store;
mod full_disk;
mod openshift;
mod pitr;
mod repo_cloud;
mod repo_local;
mod repo_pinned;
mod repo_retention;
