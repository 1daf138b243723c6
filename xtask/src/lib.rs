//! Developer commands of the Quorum repository (`cargo run -p xtask -- COMMAND`): generators
//! whose output is committed, so that building Quorum itself needs neither network nor other
//! crates' sources, and a test that regenerates each output and fails on any difference.

pub mod k8s_fields;
