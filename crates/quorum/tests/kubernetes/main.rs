//! Kubernetes objects in snapshots: listing, typed decoding, export, diff, encryption at rest.
//!
//! One test binary per group of test modules: linking is most of a rebuild.

#[path = "../common/mod.rs"]
mod common;

mod k8s_encryption;
mod k8s_ls;
mod k8s_objects;
mod k8s_repo;
