//! Output formats shared by every reporting command (`-w`, as etcdctl's `--write-out`).

use clap::ValueEnum;

use crate::exit::Failure;

/// The end of writing a command's output: a reader that went away (`quorum k8s ls db | head`)
/// is not an error, as for any Unix filter; other write errors are.
pub fn written(r: std::io::Result<()>) -> Result<(), Failure> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::failed(format!("writing output: {e}"))),
        Ok(()) => Ok(()),
    }
}

/// `println!` to a closed pipe panics ("failed printing to stdout: Broken pipe"): end the
/// process quietly with status 0 instead, as `cat` or `grep` end when `head` has read enough.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).or_else(|| info.payload().downcast_ref::<&str>().copied()).unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One line, as etcdctl's default `simple` format.
    Simple,
    /// A table for people.
    Table,
    /// JSON for scripts; field names are stable.
    Json,
    /// YAML.
    Yaml,
    /// `"Field" : value` lines, as etcdctl's `fields` format.
    Fields,
}

/// Render a table as etcdctl's tablewriter does: headers centred, cells right-aligned, one
/// space of padding, `+---+` rules.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = Vec::new();
    write_table(&mut out, headers, rows.len(), |i| rows[i].iter().map(String::as_str).collect::<Vec<_>>()).expect("writing to memory");
    String::from_utf8(out).expect("UTF-8 cells")
}

/// [`table`] written to `w` row by row, for tables too large to build as one string: `row(i)`
/// gives row i's cells (called twice per row: widths, then printing).
pub fn write_table<'a, R: AsRef<[&'a str]>>(w: &mut impl std::io::Write, headers: &[&str], n: usize, row: impl Fn(usize) -> R) -> std::io::Result<()> {
    // Characters, not bytes, as tablewriter counts them; most cells are ASCII.
    let chars = |c: &str| if c.is_ascii() { c.len() } else { c.chars().count() };
    let mut widths: Vec<usize> = headers.iter().map(|h| chars(h)).collect();
    for i in 0..n {
        for (c, width) in row(i).as_ref().iter().zip(widths.iter_mut()) {
            *width = (*width).max(chars(c));
        }
    }
    let rule: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    w.write_all(rule.as_bytes())?;
    for (h, width) in headers.iter().zip(&widths) {
        let gap = width - h.chars().count();
        write!(w, "| {}{}{} ", " ".repeat(gap / 2), h, " ".repeat(gap - gap / 2))?;
    }
    w.write_all(b"|\n")?;
    w.write_all(rule.as_bytes())?;
    // Cells padded by hand: `write!`'s `{:>width$}` writes its fill one character at a time,
    // which showed in `k8s ls` of 385,000 objects.
    const SPACES: [u8; 64] = [b' '; 64];
    for i in 0..n {
        for (c, width) in row(i).as_ref().iter().zip(&widths) {
            w.write_all(b"| ")?;
            let mut gap = width - chars(c);
            while gap > 0 {
                let k = gap.min(SPACES.len());
                w.write_all(&SPACES[..k])?;
                gap -= k;
            }
            w.write_all(c.as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(b"|\n")?;
    }
    w.write_all(rule.as_bytes())
}

/// Warnings that go with a result, one `Warning:` line each on stderr.
pub fn warnings(ws: &[String]) {
    for w in ws {
        eprintln!("Warning: {w}");
    }
}

fn formats(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names.iter().copied()).map(|s: String| Format::from_str(&s, true).expect("a Format name"))
}

/// `-w` of a command whose human form is a table (or a report): table, json, yaml. Any other
/// value is refused by the parser with this list.
pub fn table_formats() -> impl clap::builder::TypedValueParser<Value = Format> {
    formats(&["table", "json", "yaml"])
}

/// `-w` of a command whose human form is one line or a few (etcdctl's `simple`): simple, json,
/// yaml.
pub fn simple_formats() -> impl clap::builder::TypedValueParser<Value = Format> {
    formats(&["simple", "json", "yaml"])
}

/// Print a command's result: JSON or YAML of `v` when asked for, else what `human` prints (a
/// table, a line, the `simple` or `fields` form).
pub fn print<T: serde::Serialize>(w: Format, v: &T, human: impl FnOnce()) {
    match w {
        Format::Json => println!("{}", json(v)),
        Format::Yaml => print!("{}", yaml(v)),
        _ => human(),
    }
}

pub fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

pub fn yaml<T: serde::Serialize>(v: &T) -> String {
    yaml_serde::to_string(v).expect("serializable")
}

#[cfg(test)]
mod tests {
    #[test]
    fn table_matches_etcdctl() {
        // etcdctl 3.4.23 `snapshot status -w table`, captured.
        let want = "\
+----------+----------+------------+------------+
|   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |
+----------+----------+------------+------------+
| a75a5c7f |       21 |         24 |      25 kB |
+----------+----------+------------+------------+
";
        let got = super::table(&["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], &[vec!["a75a5c7f".into(), "21".into(), "24".into(), "25 kB".into()]]);
        assert_eq!(got, want);
    }

    /// Widths count characters (a non-ASCII name is as wide as it looks), and padding longer
    /// than the 64-space block the writer uses comes out whole.
    #[test]
    fn table_pads_by_characters_and_at_any_width() {
        let long = "x".repeat(150);
        let got = super::table(&["NAME", "N"], &[vec!["zoë".into(), "1".into()], vec![long.clone(), "22".into()]]);
        let lines: Vec<&str> = got.lines().collect();
        assert_eq!(lines[3], format!("| {}zoë |  1 |", " ".repeat(147)));
        assert_eq!(lines[4], format!("| {long} | 22 |"));
        assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "{got}");
    }
}
