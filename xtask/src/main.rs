//! `cargo run -p xtask -- k8s-fields [--check]`: see the library's modules.

use std::process::ExitCode;

const USAGE: &str = "usage: cargo run -p xtask -- k8s-fields [--check]

  k8s-fields          regenerate crates/kube-data/src/kube_schema.rs from the k8s-pb and
                      k8s-openapi sources in the cargo registry (run after changing their versions)
  k8s-fields --check  exit 1 when the committed table differs from a fresh one";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["k8s-fields"] => false,
        ["k8s-fields", "--check"] => true,
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let table = match xtask::k8s_fields::generate() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let path = xtask::k8s_fields::workspace_root().join(xtask::k8s_fields::OUTPUT);
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if check {
        if current == table {
            println!("{} is up to date", path.display());
            return ExitCode::SUCCESS;
        }
        eprintln!("{} differs from the generated table: run `cargo run -p xtask -- k8s-fields`", path.display());
        return ExitCode::FAILURE;
    }
    if current == table {
        println!("{} unchanged", path.display());
        return ExitCode::SUCCESS;
    }
    let tmp = path.with_extension("rs.tmp");
    if let Err(e) = std::fs::write(&tmp, &table).and_then(|_| std::fs::rename(&tmp, &path)) {
        eprintln!("Error: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {} ({} bytes)", path.display(), table.len());
    ExitCode::SUCCESS
}
