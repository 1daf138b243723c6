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
                    return Err(crate::Error::Usage(format!("-n {bad:?}: a namespace name has no '/' and is not empty")));
                }
                Ok(())
            }
            Selection::Prefixes(v) => {
                if v.iter().any(|p| p.is_empty()) {
                    return Err(crate::Error::Usage("--prefix \"\" would select every key; leave out -n/--prefix to migrate the whole cluster".into()));
                }
                Ok(())
            }
        }
    }

    /// Key ranges of the target that can hold selected keys: `(start, end)` as etcd ranges
    /// (end exclusive; `[0]` = to the end of the keyspace). `roots` are the top-level prefixes
    /// seen among the source's selected keys (namespaced keys sit under any of them).
    pub fn target_ranges(&self, roots: &[String]) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            Selection::Whole => vec![(vec![0], vec![0])],
            Selection::Prefixes(ps) => {
                let mut ps = ps.clone();
                ps.sort();
                // A prefix under another is read by the other's range already.
                let mut out: Vec<String> = Vec::new();
                for p in ps {
                    if !out.iter().any(|o| p.starts_with(o.as_str())) {
                        out.push(p);
                    }
                }
                out.into_iter().map(|p| (p.as_bytes().to_vec(), prefix_end(p.as_bytes()))).collect()
            }
            Selection::Namespaces(_) => {
                let mut rs: Vec<String> = roots.iter().map(|r| format!("{r}/")).collect();
                rs.push("/registry/".into());
                rs.sort();
                rs.dedup();
                rs.into_iter().map(|p| (p.as_bytes().to_vec(), prefix_end(p.as_bytes()))).collect()
            }
        }
    }
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
        assert_eq!(s.target_ranges(&[]), vec![(b"/a/".to_vec(), b"/a0".to_vec()), (b"/c".to_vec(), b"/d".to_vec())]);
        assert_eq!(prefix_end(&[0x61, 0xff]), vec![0x62]);
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn whole_groups_by_root() {
        let s = Selection::Whole;
        assert_eq!(s.group_of(b"/registry/pods/a/b").as_deref(), Some("/registry"));
        assert_eq!(s.group_of(b"foo").as_deref(), Some(NO_ROOT));
        assert_eq!(s.group_of(b"/x").as_deref(), Some(NO_ROOT));
    }
}
