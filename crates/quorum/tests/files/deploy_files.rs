//! The deploy files fit together: deploy/agent.yaml, the systemd unit, the static pod and the
//! sidecar name the same paths, and each path the agent reads is mounted (read-only) and each it
//! writes is mounted writable (or, for systemd, in ReadWritePaths). The manifests are parsed into
//! the Kubernetes API types and serialized back, so a field the API does not know fails; the
//! unit passes `systemd-analyze verify`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume};
use serde::de::DeserializeOwned;
use serde::Serialize;

const CONFIG: &str = "/etc/quorum/agent.yaml";

fn deploy(name: &str) -> String {
    std::fs::read_to_string(testkit::project_root().join("deploy").join(name)).unwrap()
}

/// What the agent does with each path deploy/agent.yaml (and the command line) names.
struct Paths {
    /// Opened for reading: the config, certificates, secret files.
    read: Vec<PathBuf>,
    /// Written: the spool, the temporary directory.
    write: Vec<PathBuf>,
    /// Run from the image or the host: must not be hidden under a mount.
    exec: Vec<PathBuf>,
}

fn agent_paths() -> Paths {
    let cfg = agent::config::Config::load(&testkit::project_root().join("deploy/agent.yaml")).unwrap();
    let mut read = vec![PathBuf::from(CONFIG)];
    read.extend([&cfg.cacert, &cfg.cert, &cfg.key, &cfg.repo.password_file, &cfg.repo.key_file].into_iter().flatten().cloned());
    // The agent's temporary directory is /tmp in every deployment (no TMPDIR is set).
    let mut write = vec![cfg.backup.tmp_dir.clone().unwrap_or_else(|| "/tmp".into())];
    assert!(cfg.delta.enabled && cfg.delta.spool_dir.is_some(), "agent.yaml names its spool");
    write.push(cfg.delta.spool_dir_for(&cfg.cluster));
    let exec = cfg.drill.iter().filter_map(|d| d.etcd_bin.clone()).collect();
    let p = Paths { read, write, exec };
    assert!(p.read.len() >= 5 && p.write.len() == 2 && p.exec.len() == 1, "{:?} {:?} {:?}", p.read, p.write, p.exec);
    p
}

/// The first place two JSON values differ, as a path.
fn first_difference(a: &serde_json::Value, b: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value::{Array, Object};
    match (a, b) {
        (Object(x), Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                let (va, vb) = (x.get(k), y.get(k));
                match (va, vb) {
                    (Some(va), Some(vb)) => {
                        if let Some(d) = first_difference(va, vb, &format!("{at}.{k}")) {
                            return Some(d);
                        }
                    }
                    _ => return Some(format!("{at}.{k}: {va:?} in the file, {vb:?} after the Kubernetes types")),
                }
            }
            None
        }
        (Array(x), Array(y)) if x.len() == y.len() => x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{at}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{at}: {a} in the file, {b} after the Kubernetes types")),
    }
}

/// Parse `text` (YAML) into a Kubernetes API type and back: anything the type drops (a field
/// the API does not have, misspelled or misplaced) or changes is an error.
fn round_trip<T: DeserializeOwned + Serialize>(what: &str, text: &str) -> Result<T, String> {
    let input: serde_json::Value = yaml_serde::from_str(text).map_err(|e| format!("{what}: {e}"))?;
    let typed: T = serde_json::from_value(input.clone()).map_err(|e| format!("{what}: not a {}: {e}", std::any::type_name::<T>()))?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference(&input, &back, what) {
        Some(d) => Err(format!("{what} does not survive the Kubernetes API types: {d}")),
        None => Ok(typed),
    }
}

fn strict<T: DeserializeOwned + Serialize>(what: &str, text: &str) -> T {
    round_trip(what, text).unwrap_or_else(|e| panic!("{e}"))
}

/// The mount of `c` that holds `p` (the longest mountPath that is `p` or a parent of it).
fn mount_of<'a>(c: &'a Container, p: &Path) -> Option<&'a k8s_openapi::api::core::v1::VolumeMount> {
    c.volume_mounts.iter().flatten().filter(|m| p.starts_with(&m.mount_path)).max_by_key(|m| m.mount_path.len())
}

/// Check one pod spec's agent container against agent.yaml's paths. `external` names volumes the
/// spec may mount without defining (the sidecar's etcd data volume, defined by the StatefulSet).
fn check_pod(what: &str, spec: &PodSpec, container: &str, external: &[&str]) {
    let paths = agent_paths();
    let c = spec.containers.iter().find(|c| c.name == container).unwrap_or_else(|| panic!("{what}: no container {container}"));
    let cmd = c.command.clone().unwrap_or_default();
    assert!(cmd.windows(2).any(|w| w[0] == "--config" && w[1] == CONFIG), "{what}: {cmd:?} does not read {CONFIG}");
    let ro_root = c.security_context.as_ref().and_then(|s| s.read_only_root_filesystem);
    assert_eq!(ro_root, Some(true), "{what}: the root file system is writable: only the mounts should be");
    let volumes: BTreeMap<&str, &Volume> = spec.volumes.iter().flatten().map(|v| (v.name.as_str(), v)).collect();
    for m in c.volume_mounts.iter().flatten() {
        assert!(volumes.contains_key(m.name.as_str()) || external.contains(&m.name.as_str()), "{what}: mount {} of an undefined volume", m.name);
    }
    for p in &paths.read {
        let m = mount_of(c, p).unwrap_or_else(|| panic!("{what}: {} (read by the agent) is not mounted", p.display()));
        assert_eq!(m.read_only, Some(true), "{what}: {} is mounted writable; the agent only reads it", p.display());
        let rel = p.strip_prefix(&m.mount_path).unwrap();
        let v = volumes[m.name.as_str()];
        if let Some(h) = &v.host_path {
            assert_eq!(Path::new(&h.path).join(rel), *p, "{what}: {} comes from another host path", p.display());
        } else if let Some(s) = &v.secret {
            let items: Vec<&str> = s.items.iter().flatten().map(|i| i.path.as_str()).collect();
            assert!(items.contains(&rel.to_str().unwrap()), "{what}: secret volume {} has no item {} (items {items:?})", m.name, rel.display());
        } else {
            panic!("{what}: {} comes from volume {}, neither a host path nor a secret", p.display(), m.name);
        }
    }
    for p in &paths.write {
        let m = mount_of(c, p).unwrap_or_else(|| panic!("{what}: {} (written by the agent) is not mounted: the root file system is read-only", p.display()));
        assert_ne!(m.read_only, Some(true), "{what}: {} is mounted read-only; the agent writes it", p.display());
        match volumes.get(m.name.as_str()) {
            Some(v) if v.empty_dir.is_some() => assert_eq!(p, Path::new("/tmp"), "{what}: {} would be lost with the pod (emptyDir)", p.display()),
            Some(v) if v.host_path.is_some() => {
                let h = v.host_path.as_ref().unwrap();
                assert_eq!(Path::new(&h.path).join(p.strip_prefix(&m.mount_path).unwrap()), *p, "{what}: {} is another host path", p.display());
                assert_eq!(h.type_.as_deref(), Some("DirectoryOrCreate"), "{what}: the host path of {} is not created when missing", p.display());
            }
            Some(_) => panic!("{what}: {} on volume {}: neither the host's disk nor a scratch /tmp", p.display(), m.name),
            // The etcd member's persistent volume, in a directory of its own.
            None => assert!(m.sub_path.as_deref().is_some_and(|s| !s.is_empty()), "{what}: {} shares the root of volume {}", p.display(), m.name),
        }
    }
    for p in &paths.exec {
        assert!(mount_of(c, p).is_none(), "{what}: a mount hides the image's {}", p.display());
    }
}

#[test]
fn static_pod_is_a_kubernetes_pod_that_mounts_what_agent_yaml_names() {
    let pod: Pod = strict("deploy/static-pod.yaml", &deploy("static-pod.yaml"));
    check_pod("deploy/static-pod.yaml", pod.spec.as_ref().unwrap(), "agent", &[]);
}

#[test]
fn sidecar_is_a_kubernetes_pod_spec_that_mounts_what_agent_yaml_names() {
    let spec: PodSpec = strict("deploy/sidecar.yaml", &deploy("sidecar.yaml"));
    check_pod("deploy/sidecar.yaml", &spec, "quorum-agent", &["data"]);
}

/// An unknown field fails the round trip (the check above is not vacuous).
#[test]
fn a_field_the_kubernetes_api_does_not_have_fails() {
    let text = deploy("static-pod.yaml").replace("readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true");
    let e = round_trip::<Pod>("misspelled", &text).map(drop).unwrap_err();
    assert!(e.contains(".spec.containers[0].securityContext.readOnlyRootFileSystem"), "{e}");
    // A field at the wrong level, and a value of the wrong type.
    let text = deploy("sidecar.yaml").replace("  volumeMounts:", "  volumes: []\n  volumeMounts:");
    assert!(round_trip::<PodSpec>("misplaced", &text).map(drop).unwrap_err().contains(".containers[0].volumes"));
    let text = deploy("static-pod.yaml").replace("hostNetwork: true", "hostNetwork: yes-please");
    assert!(round_trip::<Pod>("mistyped", &text).map(drop).unwrap_err().contains("not a"));
}

/// `[Service]` of the unit: key → values (space-separated lists split, repeated keys joined).
fn unit_service() -> BTreeMap<String, Vec<String>> {
    let text = deploy("quorum-agent.service");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_service = false;
    for l in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if l.starts_with('[') {
            in_service = l == "[Service]";
            continue;
        }
        if let (true, Some((k, v))) = (in_service, l.split_once('=')) {
            out.entry(k.to_string()).or_default().extend(v.split_whitespace().map(str::to_string));
        }
    }
    out
}

#[test]
fn systemd_unit_lets_the_agent_write_exactly_where_agent_yaml_says() {
    let paths = agent_paths();
    let s = unit_service();
    let get = |k: &str| s.get(k).cloned().unwrap_or_default();
    let exec = get("ExecStart");
    assert!(exec.windows(2).any(|w| w[0] == "--config" && w[1] == CONFIG), "ExecStart {exec:?} does not read {CONFIG}");
    assert_eq!(get("ProtectSystem"), ["strict"], "the file system is read-only but for what the agent writes");
    let rw: Vec<PathBuf> = get("ReadWritePaths").iter().map(|p| PathBuf::from(p.trim_start_matches('-'))).collect();
    let private_tmp = get("PrivateTmp") == ["true"];
    for p in &paths.write {
        let covered = rw.iter().any(|r| p.starts_with(r)) || (private_tmp && p.starts_with("/tmp"));
        assert!(covered, "{} (written by the agent) is read-only under the unit: ReadWritePaths {rw:?}, PrivateTmp {private_tmp}", p.display());
    }
    // The spool's directory is the unit's state directory: created on start, kept across restarts.
    let state: Vec<PathBuf> = get("StateDirectory").iter().map(|d| Path::new("/var/lib").join(d)).collect();
    for p in paths.write.iter().filter(|p| !p.starts_with("/tmp")) {
        assert!(state.iter().any(|d| p.starts_with(d)), "{} is not under StateDirectory {state:?}", p.display());
    }
    for p in rw.iter() {
        assert!(paths.write.iter().any(|w| w.starts_with(p)), "ReadWritePaths {} is written by nothing agent.yaml names", p.display());
    }
    // What the agent reads must not be hidden from it.
    let hidden: Vec<&str> = if get("ProtectHome") == ["true"] { vec!["/home", "/root", "/run/user"] } else { vec![] };
    for p in paths.read.iter().chain(&paths.exec) {
        assert!(!hidden.iter().any(|h| p.starts_with(h)), "{} is hidden by ProtectHome", p.display());
        assert!(!get("InaccessiblePaths").iter().any(|h| p.starts_with(h)), "{} is inaccessible", p.display());
    }
    for f in get("EnvironmentFile") {
        assert!(Path::new(f.trim_start_matches('-')).starts_with("/etc/quorum"), "EnvironmentFile {f} outside /etc/quorum");
    }
}

/// `systemd-analyze verify` of the unit as installed: in a root holding the unit, the quorum
/// binary at /usr/local/bin/quorum and the system's own units (verify resolves its
/// dependencies). It reports unknown keys and bad values on stderr with exit 0, so any output
/// fails too.
#[test]
fn systemd_analyze_verifies_the_unit() {
    const TEST: &str = "files::deploy_files::systemd_analyze_verifies_the_unit";
    let Some(tool) = testkit::setup_tool(TEST, "systemd-analyze") else { return };
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"].into_iter().map(Path::new).find(|p| p.join("sysinit.target").exists());
    let Some(system_units) = system_units else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{TEST}: no systemd units on this host: run bash scripts/setup.sh");
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("skipped {TEST}: no systemd units here (bash scripts/setup.sh installs systemd)\n").as_bytes(),
        );
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["etc/systemd/system", "usr/local/bin", "usr/lib/systemd/system"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let cp = std::process::Command::new("cp").arg("-a").arg(format!("{}/.", system_units.display())).arg(r.join("usr/lib/systemd/system")).status().unwrap();
    assert!(cp.success());
    std::fs::copy(env!("CARGO_BIN_EXE_quorum"), r.join("usr/local/bin/quorum")).unwrap();
    std::fs::write(r.join("etc/systemd/system/quorum-agent.service"), deploy("quorum-agent.service")).unwrap();
    let out =
        std::process::Command::new(tool).arg(format!("--root={}", r.display())).args(["verify", "/etc/systemd/system/quorum-agent.service"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("systemd-analyze verify deploy/quorum-agent.service: exit {}, output {:?}", out.status.code().unwrap_or(-1), text);
    assert!(out.status.success() && text.trim().is_empty(), "systemd-analyze verify: {text}");
}
