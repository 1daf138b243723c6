//! `quorum numa fit` against the real nova 34.0.0: `crates/numa/tests/nova/differential.py`
//! generates random compute hosts (the sysfs and procfs files Linux shows, the capabilities
//! libvirt derives from them, a nova.conf, guests nova placed itself) and one request each
//! (flavor extra specs, image properties), asks nova's own code for the answer (the libvirt
//! driver's host topology, the resource tracker's usage, `numa_get_constraints`,
//! `numa_fit_instance_to_host`), runs `quorum numa fit` on the same files and compares the
//! outcome, host cells, page sizes, CPU pinning, emulator pCPUs and rejection reasons.
//! nova lives in its own venv, `.tools/nova-venv`, made by `scripts/setup.sh`.

use std::path::PathBuf;
use std::process::Command;

use crate::common::run;

#[test]
fn nova_agrees_on_every_answer() {
    let test = "files::numa_nova::nova_agrees_on_every_answer";
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".tools/nova-venv/bin/python");
    if !python.exists() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{test}: nova is not installed: run bash scripts/setup.sh");
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped {test}: nova is not installed (bash scripts/setup.sh installs it into .tools/nova-venv)");
        return;
    }
    let mut c = Command::new(&python);
    c.arg(root.join("crates/numa/tests/nova/differential.py"));
    c.args(["run", "--seeds", "1,2", "--count", "150", "--quorum", env!("CARGO_BIN_EXE_quorum")]);
    let r = run(c);
    assert_eq!(r.code, 0, "nova and quorum disagree (or the comparison failed):\n{}\n{}", r.stdout, r.stderr);
}
