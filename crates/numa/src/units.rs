//! Size strings as nova reads them.
//!
//! * `oslo_utils.strutils.string_to_bytes(v, 'IEC')`: regex `(^[-+]?\d*\.?\d+)([KMGT]i?)?(b|bit|B)$`,
//!   powers of 1024; a `b`/`bit` suffix means bits (divided by 8); `return_int` rounds up.
//! * `hw:mem_page_size` (`nova/virt/hardware.py::_get_numa_pagesize_constraint`, read in
//!   [`crate::constraints`]): `small` → -1, `large` → -2, `any` → -3, all digits → KiB, else
//!   `string_to_bytes(v, IEC) / 1024`, else invalid.

/// `string_to_bytes(text, 'IEC')` (without rounding), or None when it does not parse.
pub fn string_to_bytes(text: &str) -> Option<f64> {
    let t = text;
    // number part
    let mut i = 0;
    let b = t.as_bytes();
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let num_start = i;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    let num = &t[..i];
    let digits = &t[num_start..i];
    // \d*\.?\d+ : at most one dot, ends with a digit
    if digits.is_empty() || digits.matches('.').count() > 1 || digits.ends_with('.') {
        return None;
    }
    let value: f64 = num.parse().ok()?;
    let rest = &t[i..];
    let (mult, rest) = match rest.chars().next() {
        Some(c @ ('K' | 'M' | 'G' | 'T')) => {
            let p = match c {
                'K' => 1,
                'M' => 2,
                'G' => 3,
                _ => 4,
            };
            let r = &rest[1..];
            let r = r.strip_prefix('i').unwrap_or(r);
            (1024f64.powi(p), r)
        }
        _ => (1.0, rest),
    };
    let bits = match rest {
        "B" => false,
        "b" | "bit" => true,
        _ => return None,
    };
    let bytes = value * mult;
    Some(if bits { bytes / 8.0 } else { bytes })
}

/// A requested page size (`hw:mem_page_size`, as the `InstanceNUMACell.pagesize` integer
/// holds it: nova's markers -1, -2, -3 for small, large, any, else KiB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PageRequest {
    Small,
    Large,
    Any,
    /// An explicit size in KiB.
    Size(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_bytes_like_oslo() {
        assert_eq!(string_to_bytes("2MB"), Some(2097152.0));
        assert_eq!(string_to_bytes("2MiB"), Some(2097152.0));
        assert_eq!(string_to_bytes("2048KB"), Some(2097152.0));
        assert_eq!(string_to_bytes("1GB"), Some(1073741824.0));
        assert_eq!(string_to_bytes("2Mb"), Some(262144.0), "bits");
        for bad in ["2048kB", "2M", "1G", "2 MB", "foo", ""] {
            assert_eq!(string_to_bytes(bad), None, "{bad}");
        }
    }
}
