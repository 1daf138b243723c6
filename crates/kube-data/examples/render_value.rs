//! Print a stored value file (as kube-apiserver wrote it to etcd) the way kubectl prints it:
//! `cargo run -p kube-data --example render_value -- FILE [json]`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let v = std::fs::read(&args[1]).expect("read the value file");
    let v = v.strip_suffix(b"\n").unwrap_or(&v);
    match kube_data::typed::render(v) {
        Ok(r) => {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            let out = if args.get(2).map(String::as_str) == Some("json") { kube_data::print::to_json(&r.value) } else { kube_data::print::to_yaml(&r.value) };
            print!("{out}");
        }
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1);
        }
    }
}
