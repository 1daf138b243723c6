//! Helpers shared by the integration tests: run the built `quorum` binary and the reference tools.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

pub fn quorum() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quorum"))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut c: Command) -> Run {
    let Output { status, stdout, stderr } = c.output().expect("spawn");
    Run { code: status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&stdout).into(), stderr: String::from_utf8_lossy(&stderr).into() }
}

pub fn quorum_args(args: &[&str], file: &Path) -> Run {
    let mut c = quorum();
    c.args(args).arg(file);
    run(c)
}
