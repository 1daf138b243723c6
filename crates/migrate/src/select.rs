//! Which keys a migration moves, and the group (namespace, prefix, top-level prefix) each key
//! is counted, hashed and reported under.
//!
//! * Namespaces: every key kube-data's key layout ([`kube_data::keys::parse`]) places in the
//!   namespace (`/registry/<resource>/<ns>/<name>`, grouped resources
//!   `/registry/<group>/<plural>/<ns>/<name>`, OpenShift's `/kubernetes.io` and `/openshift.io`
//!   prefixes), plus the Namespace object itself (`/registry/namespaces/<ns>`).
//! * Prefixes: raw byte prefixes; a key belongs to the longest one it starts with.
//! * Whole: every key, grouped by its first path segment (`/registry`, `/kubernetes.io`, …).

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub enum Selection {
    #[default]
    Whole,
    Namespaces(Vec<String>),
    Prefixes(Vec<String>),
}

/// Keys outside any `/`-rooted path, in a whole-cluster grouping.
pub const NO_ROOT: &str = "(keys without a / prefix)";

impl Selection {
    /// The group `key` belongs to, or None when it is not selected.
    pub fn group_of(&self, key: &[u8]) -> Option<String> {
        match self {
            Selection::Whole => Some(root_of(key).map(str::to_string).unwrap_or_else(|| NO_ROOT.to_string())),
            Selection::Prefixes(ps) => ps.iter().filter(|p| key.starts_with(p.as_bytes())).max_by_key(|p| p.len()).cloned(),
            Selection::Namespaces(ns) => {
                let info = kube_data::keys::parse(key)?;
                let n = match &info.namespace {
                    Some(n) => n,
                    None if info.resource == "namespaces" => &info.name,
                    None => return None,
                };
                ns.iter().find(|x| *x == n).cloned()
            }
        }
    }

    /// The groups that are reported even when empty (whole clusters: none).
    pub fn groups(&self) -> Vec<String> {
        match self {
            Selection::Whole => vec![],
            Selection::Namespaces(v) | Selection::Prefixes(v) => v.clone(),
        }
    }

    /// What the table's first column is called.
    pub fn group_label(&self) -> &'static str {
        match self {
            Selection::Whole => "PREFIX",
            Selection::Namespaces(_) => "NAMESPACE",
            Selection::Prefixes(_) => "PREFIX",
        }
    }

    /// One line for the plan and the migration record.
    pub fn describe(&self) -> String {
        match self {
            Selection::Whole => "the whole keyspace".into(),
            Selection::Namespaces(v) => format!("namespace(s) {}", v.join(", ")),
            Selection::Prefixes(v) => format!("prefix(es) {}", v.join(", ")),
        }
    }

    /// Check the selection is usable.
    pub fn validate(&self) -> crate::Result<()> {
        match self {
            Selection::Whole => Ok(()),
            Selection::Namespaces(v) => {
                if let Some(bad) = v.iter().find(|n| n.is_empty() || n.contains('/')) {
                    return Err(crate::Error::Usage(format!("namespace {bad:?}: a namespace name has no '/' and is not empty")));
                }
                Ok(())
            }
            Selection::Prefixes(v) => {
                if v.iter().any(|p| p.is_empty()) {
                    return Err(crate::Error::Usage("an empty prefix would select every key: that is a whole-cluster migration".into()));
                }
                Ok(())
            }
        }
    }

    /// The same selection with its names sorted and without repeats: `-n b -n a` and
    /// `-n a -n b -n a` are one migration.
    pub fn normalized(&self) -> Selection {
        let norm = |v: &Vec<String>| {
            let mut v = v.clone();
            v.sort();
            v.dedup();
            v
        };
        match self {
            Selection::Whole => Selection::Whole,
            Selection::Namespaces(v) => Selection::Namespaces(norm(v)),
            Selection::Prefixes(v) => Selection::Prefixes(norm(v)),
        }
    }

    /// The target range a selected source key is looked for in, as `(start, end)`: for a
    /// namespace, the key's resource in its namespace (`/registry/pods/<ns>/`) or the
    /// Namespace object itself; for prefixes, the prefix.
    pub fn scan_range(&self, key: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        match self {
            Selection::Whole => Some((vec![0], vec![0])),
            Selection::Prefixes(ps) => {
                ps.iter().filter(|p| key.starts_with(p.as_bytes())).min_by_key(|p| p.len()).map(|p| (p.as_bytes().to_vec(), prefix_end(p.as_bytes())))
            }
            Selection::Namespaces(_) => {
                let info = kube_data::keys::parse(key)?;
                if info.namespace.is_some() {
                    // `<prefix>/<resource path>/<ns>/<name>`: the name is the last segment.
                    let cut = key.iter().rposition(|b| *b == b'/')? + 1;
                    Some((key[..cut].to_vec(), prefix_end(&key[..cut])))
                } else {
                    let mut end = key.to_vec();
                    end.push(0);
                    Some((key.to_vec(), end))
                }
            }
        }
    }

    /// The target ranges to read: those of the selection's own names (each namespace's
    /// Namespace object, each prefix) and `seen` (the [`Selection::scan_range`]s of the
    /// source's selected keys), sorted and merged, so that one pass over them reads keys in
    /// key order and each key once. A namespace's resources the source does not have are not
    /// read: a target key there is neither compared nor counted.
    pub fn target_ranges(&self, seen: &std::collections::BTreeSet<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut all: Vec<(Vec<u8>, Vec<u8>)> = seen.iter().cloned().collect();
        match self {
            Selection::Whole => return vec![(vec![0], vec![0])],
            Selection::Prefixes(ps) => all.extend(ps.iter().map(|p| (p.as_bytes().to_vec(), prefix_end(p.as_bytes())))),
            Selection::Namespaces(ns) => all.extend(ns.iter().filter_map(|n| self.scan_range(format!("/registry/namespaces/{n}").as_bytes()))),
        }
        merge_ranges(all)
    }
}

/// Sort `(start, end)` ranges (`end == [0]`: to the end of the keyspace) and merge the ones
/// that overlap or touch.
pub fn merge_ranges(mut rs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let open = |e: &Vec<u8>| e.as_slice() == [0];
    rs.sort();
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (s, e) in rs {
        if let Some(last) = out.last_mut() {
            if open(&last.1) || s <= last.1 {
                if !open(&last.1) && (open(&e) || e > last.1) {
                    last.1 = e;
                }
                continue;
            }
        }
        out.push((s, e));
    }
    out
}

/// `/registry` for `/registry/pods/a/b`; None for a key without a leading `/` or a second `/`.
pub fn root_of(key: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(key).ok()?;
    let rest = s.strip_prefix('/')?;
    let end = rest.find('/')?;
    Some(&s[..end + 1])
}

/// etcd's `GetPrefixRangeEnd`: the first key after every key starting with `p`.
pub fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(last) = end.last_mut() {
        if *last < 0xff {
            *last += 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_take_their_objects_and_the_namespace() {
        let s = Selection::Namespaces(vec!["ns-03".into(), "shop".into()]);
        assert_eq!(s.group_of(b"/registry/pods/ns-03/web-0").as_deref(), Some("ns-03"));
        assert_eq!(s.group_of(b"/registry/namespaces/ns-03").as_deref(), Some("ns-03"));
        assert_eq!(s.group_of(b"/registry/apps/deployments/shop/web").as_deref(), None, "a non-dotted group path parses as a resource");
        assert_eq!(s.group_of(b"/registry/stable.example.com/crontabs/shop/c").as_deref(), Some("shop"));
        assert_eq!(s.group_of(b"/kubernetes.io/secrets/shop/s").as_deref(), Some("shop"));
        assert_eq!(s.group_of(b"/registry/pods/ns-030/web-0"), None);
        assert_eq!(s.group_of(b"/registry/namespaces/ns-04"), None);
        assert_eq!(s.group_of(b"/registry/clusterroles/ns-03"), None, "cluster-scoped objects named like the namespace stay");
        assert_eq!(s.group_of(b"compact_rev_key"), None);
    }

    #[test]
    fn prefixes_longest_wins_and_ranges_merge() {
        let s = Selection::Prefixes(vec!["/a/".into(), "/a/b/".into(), "/c".into()]);
        assert_eq!(s.group_of(b"/a/b/x").as_deref(), Some("/a/b/"));
        assert_eq!(s.group_of(b"/a/x").as_deref(), Some("/a/"));
        assert_eq!(s.group_of(b"/b"), None);
        assert_eq!(s.target_ranges(&Default::default()), vec![(b"/a/".to_vec(), b"/a0".to_vec()), (b"/c".to_vec(), b"/d".to_vec())]);
        assert_eq!(prefix_end(&[0x61, 0xff]), vec![0x62]);
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn normalized_sorts_and_dedups() {
        let a = Selection::Namespaces(vec!["b".into(), "a".into(), "b".into()]).normalized();
        assert_eq!(a, Selection::Namespaces(vec!["a".into(), "b".into()]));
        assert_eq!(a.describe(), Selection::Namespaces(vec!["a".into(), "b".into()]).normalized().describe());
        assert_eq!(Selection::Prefixes(vec!["/z".into(), "/a".into()]).normalized(), Selection::Prefixes(vec!["/a".into(), "/z".into()]));
    }

    #[test]
    fn namespace_ranges_are_per_resource_and_namespace() {
        let s = Selection::Namespaces(vec!["shop".into()]);
        let r = |k: &[u8]| s.scan_range(k).unwrap();
        assert_eq!(r(b"/registry/pods/shop/web-0"), (b"/registry/pods/shop/".to_vec(), b"/registry/pods/shop0".to_vec()));
        assert_eq!(
            r(b"/registry/stable.example.com/crontabs/shop/c"),
            (b"/registry/stable.example.com/crontabs/shop/".to_vec(), b"/registry/stable.example.com/crontabs/shop0".to_vec())
        );
        assert_eq!(r(b"/registry/namespaces/shop"), (b"/registry/namespaces/shop".to_vec(), b"/registry/namespaces/shop\0".to_vec()));
        let seen: std::collections::BTreeSet<_> = [r(b"/registry/pods/shop/a"), r(b"/registry/pods/shop/b"), r(b"/kubernetes.io/secrets/shop/s")].into();
        let got = s.target_ranges(&seen);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0].0, b"/kubernetes.io/secrets/shop/".to_vec());
        assert_eq!(got[1].0, b"/registry/namespaces/shop".to_vec());
        assert_eq!(got[2].0, b"/registry/pods/shop/".to_vec());
        assert!(got.windows(2).all(|w| w[0].1 <= w[1].0), "disjoint, in key order: {got:?}");
    }

    #[test]
    fn ranges_merge() {
        let v = |s: &str| s.as_bytes().to_vec();
        assert_eq!(merge_ranges(vec![(v("/b"), v("/d")), (v("/a"), v("/c")), (v("/x"), v("/y"))]), vec![(v("/a"), v("/d")), (v("/x"), v("/y"))]);
        assert_eq!(merge_ranges(vec![(v("/a"), vec![0]), (v("/b"), v("/c"))]), vec![(v("/a"), vec![0])]);
        assert_eq!(merge_ranges(vec![(v("/a"), v("/b")), (v("/b"), v("/c"))]), vec![(v("/a"), v("/c"))]);
    }

    #[test]
    fn whole_groups_by_root() {
        let s = Selection::Whole;
        assert_eq!(s.group_of(b"/registry/pods/a/b").as_deref(), Some("/registry"));
        assert_eq!(s.group_of(b"foo").as_deref(), Some(NO_ROOT));
        assert_eq!(s.group_of(b"/x").as_deref(), Some(NO_ROOT));
    }
}
