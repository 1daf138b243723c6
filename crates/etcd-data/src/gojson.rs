//! JSON strings exactly as Go's `encoding/json` writes them: `"` and `\` escaped, control
//! characters as `\n`, `\r`, `\t` or `\u00XX`, and `<`, `>`, `&`, U+2028 and U+2029 as `\uXXXX`
//! (`encoding/json/encode.go` `appendString` with HTML escaping on, the default).
//! Needed wherever etcd stores JSON that must be reproduced byte for byte.

pub fn string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => o.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_like_go() {
        assert_eq!(super::string(r#"{"a":"<b>&"}"#), r#""{\"a\":\"\u003cb\u003e\u0026\"}""#);
        assert_eq!(super::string("x\u{1}\n"), r#""x\u0001\n""#);
    }
}
