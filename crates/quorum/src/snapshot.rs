//! `quorum snapshot ...`: printing only; the work is in `etcd-data`.

use std::io::IsTerminal;
use std::path::Path;

use etcd_data::{humanize, Status, Trailer, VerifyReport};

use crate::exit::Failure;
use crate::output::{self, Format};

pub fn status(file: &Path, w: Format) -> Result<(), Failure> {
    let st = etcd_data::status(file)?;
    print!("{}", render_status(&st, w));
    Ok(())
}

fn status_cells(st: &Status) -> Vec<String> {
    let mut v = vec![format!("{:x}", st.hash), st.revision.to_string(), st.total_key.to_string(), humanize::bytes(st.total_size as u64)];
    if let Some(ver) = &st.version {
        v.push(ver.clone());
    }
    v
}

fn status_headers(st: &Status) -> Vec<&'static str> {
    let mut h = vec!["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"];
    if st.version.is_some() {
        h.push("VERSION");
    }
    h
}

pub fn render_status(st: &Status, w: Format) -> String {
    match w {
        Format::Simple => status_cells(st).join(", ") + "\n",
        Format::Table => output::table(&status_headers(st), &[status_cells(st)]),
        Format::Json => output::json(st) + "\n",
        Format::Yaml => output::yaml(st),
        Format::Fields => {
            let mut s = format!("\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n", st.hash, st.revision, st.total_key, st.total_size);
            if let Some(v) = &st.version {
                s += &format!("\"Version\" : {v:?}\n");
            }
            s
        }
    }
}

pub fn verify(file: &Path, w: Format, quiet: bool) -> Result<(), Failure> {
    let report = with_progress(file, quiet, "verifying", |progress| etcd_data::verify(file, progress))?;
    print!("{}", render_verify(&report, w));
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure::quiet(crate::exit::DAMAGE))
    }
}

/// Run `work` with a progress callback `(done, total)` drawn as a bar (files over 64 MiB, on a
/// terminal, unless quiet), cleared when it returns.
pub fn with_progress<T>(file: &Path, quiet: bool, what: &str, work: impl FnOnce(&(dyn Fn(u64, u64) + Sync)) -> T) -> T {
    let bar = progress_bar(file, quiet, what);
    let r = work(&|done, total| {
        if let Some(b) = &bar {
            b.set_length(total);
            b.set_position(done);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    r
}

fn progress_bar(file: &Path, quiet: bool, what: &str) -> Option<indicatif::ProgressBar> {
    let big = std::fs::metadata(file).map(|m| m.len() > 64 << 20).unwrap_or(false);
    if quiet || !big || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(0);
    b.set_style(
        indicatif::ProgressStyle::with_template(&format!("{{spinner}} {what} {{decimal_bytes}}/{{decimal_total_bytes}} [{{bar:30}}] {{eta}}"))
            .expect("template")
            .progress_chars("=> "),
    );
    Some(b)
}

pub fn render_verify(r: &VerifyReport, w: Format) -> String {
    match w {
        Format::Json => return output::json(r) + "\n",
        Format::Yaml => return output::yaml(r),
        _ => {}
    }
    let faults = r.fault_lines();
    let mut s = if faults.is_empty() {
        format!("{}: OK\n", r.path.display())
    } else {
        format!("{}: DAMAGED ({} faults)\n", r.path.display(), r.structure_fault_count + r.schema_fault_count + usize::from(r.trailer.is_mismatch()))
    };
    let trailer = match &r.trailer {
        Trailer::Absent => "absent (a raw db file, not a saved snapshot; restore needs --skip-hash-check)".to_string(),
        Trailer::Match { sha256 } => format!("matches ({sha256})"),
        Trailer::Mismatch { .. } => "MISMATCH".to_string(),
    };
    s += &format!("  sha256 trailer  {trailer}\n");
    s += &format!(
        "  structure       {} pages of {} bytes: {} in use, {} free; {}\n",
        r.pages_total,
        r.page_size,
        r.pages_in_use,
        r.pages_free,
        count(r.structure_fault_count, "fault")
    );
    let sc = &r.schema;
    s += &format!(
        "  schema          {} revisions ({} puts, {} tombstones), {} leases, {} members; {}\n",
        sc.revisions,
        sc.puts,
        sc.tombstones,
        sc.leases,
        sc.members.len(),
        count(r.schema_fault_count, "fault")
    );
    if let Some(ci) = sc.consistent_index {
        s += &format!("  raft            consistent index {ci}{}\n", sc.term.map(|t| format!(", term {t}")).unwrap_or_default());
    }
    if let Some(c) = sc.compact_revision {
        s += &format!("  compacted at    revision {c}\n");
    }
    if let Some(st) = &r.status {
        s += &format!("  status          {}\n", status_cells(st).join(", "));
    }
    for wn in &r.warnings {
        s += &format!("  warning: {wn}\n");
    }
    for f in faults {
        s += &format!("  fault: {f}\n");
    }
    s
}

fn count(n: usize, what: &str) -> String {
    match n {
        0 => format!("no {what}s"),
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}
