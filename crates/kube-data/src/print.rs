//! Printing objects the way kubectl does: `-o yaml` (sigs.k8s.io/yaml over go-yaml: sorted
//! keys, block style, sequences not indented under their key, literal blocks for multi-line
//! strings) and `-o json` (four-space indentation).
//!
//! The YAML is written here rather than with a YAML library because `kubectl apply` reads it
//! with YAML 1.1 rules: a string such as `yes`, `on`, `0755` or `2024-01-01` must be quoted or
//! it comes back as a bool, an octal number or a timestamp. [`needs_quotes`] applies 1.1's
//! resolution rules; everything else is printed plain, as kubectl prints it.

use serde_json::Value;

/// An object or list as `kubectl get -o yaml` prints it (ends with a newline).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => sequence(&mut out, a, 0),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

/// `kubectl get -o json`: four-space indentation, sorted keys, trailing newline.
pub fn to_json(v: &Value) -> String {
    use serde::Serialize;
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b"    "));
    v.serialize(&mut ser).expect("serializing a JSON value into memory");
    let mut s = String::from_utf8(buf).expect("serde_json writes UTF-8");
    s.push('\n');
    s
}

fn pad(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn mapping(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort();
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        out.push_str(&key(k));
        out.push(':');
        entry_value(out, &m[k], indent, true);
    }
}

/// The value after `key:` (or `-`): nested blocks on the next lines, scalars inline.
fn entry_value(out: &mut String, v: &Value, indent: usize, in_map: bool) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            pad(out, indent + 2);
            mapping(out, m, indent + 2);
        }
        // go-yaml does not indent a sequence under a mapping key.
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            let at = if in_map { indent } else { indent + 2 };
            pad(out, at);
            sequence(out, a, at);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, indent));
            out.push('\n');
        }
    }
}

fn sequence(out: &mut String, a: &[Value], indent: usize) {
    for (i, v) in a.iter().enumerate() {
        if i > 0 {
            pad(out, indent);
        }
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push(' ');
                mapping(out, m, indent + 2);
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push(' ');
                sequence(out, inner, indent + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other, indent));
                out.push('\n');
            }
        }
    }
}

fn key(k: &str) -> String {
    if needs_quotes(k) || k.contains('\n') {
        quoted(k)
    } else {
        k.to_string()
    }
}

fn scalar(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

fn string(s: &str, indent: usize) -> String {
    if s.contains('\n') && literal_ok(s) {
        // Literal block: `|` keeps one trailing newline, `|-` none, `|+` several.
        let body = s.trim_end_matches('\n');
        let trailing = s.len() - body.len();
        let chomp = match trailing {
            0 => "-",
            1 => "",
            _ => "+",
        };
        let mut out = format!("|{chomp}");
        let lines: Vec<&str> = if trailing > 1 { s[..s.len() - 1].split('\n').collect() } else { body.split('\n').collect() };
        for line in lines {
            out.push('\n');
            if !line.is_empty() {
                out.extend(std::iter::repeat_n(' ', indent + 2));
                out.push_str(line);
            }
        }
        return out;
    }
    if needs_quotes(s) || s.contains('\n') {
        quoted(s)
    } else {
        s.to_string()
    }
}

/// A literal block can hold `s` when no line starts with a space (that would need an
/// indentation indicator) and there are no control characters but tab and newline.
fn literal_ok(s: &str) -> bool {
    !s.starts_with(' ') && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') && !s.split('\n').any(|l| l.ends_with(' ') || l.ends_with('\t'))
}

fn quoted(s: &str) -> String {
    // JSON string syntax is valid YAML double-quoted syntax.
    serde_json::to_string(s).expect("a string serializes")
}

/// Whether a plain scalar would not read back as this string under YAML 1.1 (what
/// `kubectl apply` uses) or is not a valid plain scalar at all.
pub fn needs_quotes(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return true;
    }
    let first = s.chars().next().unwrap();
    if "[]{}#&*!|>'\"%@`,".contains(first) {
        return true;
    }
    if "-?:".contains(first) && (s.len() == 1 || s[1..].starts_with(' ')) {
        return true;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.chars().any(|c| c.is_control()) {
        return true;
    }
    if s == "-" || s == "---" || s == "..." || s == "<<" || s == "=" {
        return true;
    }
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
        "null", "Null", "NULL", "~", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF", ".nan", ".NaN", ".NAN",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    looks_numeric(s) || looks_like_timestamp(s)
}

/// YAML 1.1 int (decimal, 0b, 0x, octal, sexagesimal, underscores) or float forms.
fn looks_numeric(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    if t.is_empty() {
        return false;
    }
    let digits = |x: &str, ok: fn(char) -> bool| !x.is_empty() && x.chars().all(|c| ok(c) || c == '_');
    if let Some(h) = t.strip_prefix("0x") {
        return digits(h, |c| c.is_ascii_hexdigit());
    }
    if let Some(b) = t.strip_prefix("0b") {
        return digits(b, |c| c == '0' || c == '1');
    }
    // Sexagesimal: 1:20, 190:20:30.15
    if t.contains(':') {
        let mut parts = t.split(':');
        let head = parts.next().unwrap();
        return digits(head, |c| c.is_ascii_digit()) && parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '_'));
    }
    // Decimal int or float: [digits][.digits][e[+-]digits], at least one digit.
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    if let Some(e) = exp {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        if e.is_empty() || !e.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let mut dots = 0;
    let mut any_digit = false;
    for c in mant.chars() {
        match c {
            '0'..='9' => any_digit = true,
            '_' => {}
            '.' => dots += 1,
            _ => return false,
        }
    }
    any_digit && dots <= 1
}

/// YAML 1.1 timestamps start `YYYY-M-D`.
fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 8
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[5].is_ascii_digit()
        && s[5..].split('-').nth(1).is_some_and(|d| d.bytes().next().is_some_and(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_1_1_ambiguities_are_quoted() {
        for s in [
            "yes",
            "on",
            "N",
            "0755",
            "1e3",
            "0x1F",
            "1:20",
            "2024-01-01",
            "2017-06-27T16:35:34Z",
            "",
            " x",
            "True",
            "420",
            "-1",
            ".5",
            "~",
            "a: b",
            "#x",
            "*x",
        ] {
            assert!(needs_quotes(s), "{s}");
        }
        for s in [
            "100m",
            "10.244.2.8",
            "perl",
            "-Mbignum=bpi",
            "default-scheduler",
            "/dev/termination-log",
            "kubernetes.io/created-by",
            "1.2.3",
            "v1",
            "docker://sha256:9fc8",
        ] {
            assert!(!needs_quotes(s), "{s}");
        }
    }

    #[test]
    fn layout_matches_kubectl() {
        let v = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"labels": {"a": "b"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "command": ["perl", "-e"], "resources": {}}], "tolerations": []},
            "data": {"note": "line1\nline2\n", "n": "yes"}});
        let want = "apiVersion: v1\ndata:\n  \"n\": \"yes\"\n  note: |\n    line1\n    line2\nkind: Pod\nmetadata:\n  creationTimestamp: null\n  labels:\n    a: b\nspec:\n  containers:\n  - command:\n    - perl\n    - -e\n    name: c\n    resources: {}\n  tolerations: []\n";
        assert_eq!(to_yaml(&v), want);
        let back: serde_json::Value = yaml_serde::from_str(&to_yaml(&v)).unwrap();
        assert_eq!(back, v);
    }
}
