//! Initial-cluster configuration, member and cluster IDs, as etcd computes them.
//!
//! * URLs (`client/pkg/types/urls.go` `NewURLs`): trimmed; scheme http, https, unix or unixs;
//!   `host:port` required; no path; the list sorted by string.
//! * `--initial-cluster` (`types.NewURLsMap`): `name=url,...`, split on `,` then on the first
//!   `=`; a name may repeat to add URLs.
//! * Member ID (`membership/member.go` `computeMemberId`): the first 8 bytes, big-endian, of
//!   SHA-1 over the member's sorted peer URLs concatenated with no separator, followed by the
//!   cluster token.
//! * Cluster ID (`membership/cluster.go` `genID`): the first 8 bytes, big-endian, of SHA-1
//!   over the big-endian u64 of every member ID in ascending order.
//! * Bootstrap checks (`config.VerifyBootstrap`): the name is in the cluster; its advertised
//!   peer URLs equal the cluster's URLs for it; no URL belongs to two members.

use std::collections::BTreeMap;

use sha1::{Digest, Sha1};

/// A member of the new cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub name: String,
    /// Sorted peer URLs.
    pub peer_urls: Vec<String>,
}

impl Member {
    /// `json.Marshal(Member)`: `{"id":<decimal>,"peerURLs":[...],"name":"..."}` (name omitted when empty).
    pub fn to_json(&self) -> String {
        let urls: Vec<String> = self.peer_urls.iter().map(|u| crate::gojson::string(u)).collect();
        let mut s = format!("{{\"id\":{},\"peerURLs\":[{}]", self.id, urls.join(","));
        if !self.name.is_empty() {
            s += &format!(",\"name\":{}", crate::gojson::string(&self.name));
        }
        s + "}"
    }

    /// `json.Marshal(RaftAttributes)`: `{"peerURLs":[...]}`.
    pub fn raft_attributes_json(&self) -> String {
        let urls: Vec<String> = self.peer_urls.iter().map(|u| crate::gojson::string(u)).collect();
        format!("{{\"peerURLs\":[{}]}}", urls.join(","))
    }

    /// The hex form etcd uses for member IDs (`types.ID.String()`): lower case, no padding.
    pub fn hex_id(&self) -> String {
        format!("{:x}", self.id)
    }
}

/// A new cluster: its members in ascending ID order and its ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub members: Vec<Member>,
    pub cluster_id: u64,
    pub token: String,
}

/// What is wrong with a cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid URL {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("initial cluster entry {0:?} is not of the form name=url")]
    Entry(String),
    #[error("the initial cluster names no member")]
    Empty,
    #[error("member {name:?} is not in the initial cluster (members: {members})")]
    NameNotInCluster { name: String, members: String },
    #[error("advertised peer URLs {advertised} do not match the initial cluster's URLs for {name:?}: {expected}")]
    AdvertiseMismatch { name: String, advertised: String, expected: String },
    #[error("the initial cluster has duplicate URL {0}")]
    DuplicateUrl(String),
    #[error("members {0} and {1} have the same ID {2:x}; give them different peer URLs")]
    DuplicateId(String, String, u64),
}

/// Validate and sort a list of URLs as `types.NewURLs` does.
pub fn parse_urls(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for raw in list.split(',') {
        let u = raw.trim();
        let bad = |why: &str| ConfigError::Url { url: u.to_string(), why: why.into() };
        let (scheme, rest) = u.split_once("://").ok_or_else(|| bad("no scheme (want http://host:port)"))?;
        if !matches!(scheme, "http" | "https" | "unix" | "unixs") {
            return Err(bad("scheme must be http, https, unix or unixs"));
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad("URL must not contain a path"));
        }
        let port_ok = match rest.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()),
            None => false,
        };
        if !port_ok {
            return Err(bad("URL address does not have the form \"host:port\""));
        }
        out.push(u.to_string());
    }
    out.sort();
    Ok(out)
}

/// Parse `--initial-cluster` into name → sorted URLs.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry.split_once('=').ok_or_else(|| ConfigError::Entry(entry.to_string()))?;
        if name.is_empty() {
            return Err(ConfigError::Entry(entry.to_string()));
        }
        m.entry(name.to_string()).or_default().extend(parse_urls(url)?);
    }
    if m.is_empty() {
        return Err(ConfigError::Empty);
    }
    for v in m.values_mut() {
        v.sort();
    }
    Ok(m)
}

pub fn member_id(sorted_peer_urls: &[String], token: &str) -> u64 {
    let mut h = Sha1::new();
    for u in sorted_peer_urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap())
}

pub fn cluster_id(ids: &[u64]) -> u64 {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut h = Sha1::new();
    for id in sorted {
        h.update(id.to_be_bytes());
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().unwrap())
}

impl ClusterSpec {
    /// Build the new cluster from `--initial-cluster` and `--initial-cluster-token`.
    pub fn new(initial_cluster: &str, token: &str) -> Result<ClusterSpec, ConfigError> {
        let map = parse_initial_cluster(initial_cluster)?;
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, urls) in &map {
            for u in urls {
                if seen.insert(u, name).is_some() {
                    return Err(ConfigError::DuplicateUrl(u.clone()));
                }
            }
        }
        let mut members: Vec<Member> =
            map.iter().map(|(name, urls)| Member { id: member_id(urls, token), name: name.clone(), peer_urls: urls.clone() }).collect();
        members.sort_by_key(|m| m.id);
        for w in members.windows(2) {
            if w[0].id == w[1].id {
                return Err(ConfigError::DuplicateId(w[0].name.clone(), w[1].name.clone(), w[0].id));
            }
        }
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        Ok(ClusterSpec { cluster_id: cluster_id(&ids), members, token: token.to_string() })
    }

    /// The member `name`, checked against its advertised peer URLs as etcd's bootstrap does.
    pub fn member(&self, name: &str, advertise_peer_urls: &str) -> Result<&Member, ConfigError> {
        let m = self.members.iter().find(|m| m.name == name).ok_or_else(|| ConfigError::NameNotInCluster {
            name: name.to_string(),
            members: self.members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        let adv = parse_urls(advertise_peer_urls)?;
        if adv != m.peer_urls {
            return Err(ConfigError::AdvertiseMismatch { name: name.to_string(), advertised: adv.join(","), expected: m.peer_urls.join(",") });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcd() {
        // Vectors checked against etcdutl 3.5.16 (research brief section 5.2).
        let c = ClusterSpec::new("default=http://localhost:2380", "etcd-cluster").unwrap();
        assert_eq!(c.members[0].id, 0x8e9e05c52164694d);
        assert_eq!(c.cluster_id, 0xcdf818194e3a8c32);
        let c = ClusterSpec::new("m1=http://127.0.0.1:24800,m2=http://127.0.0.1:25800", "tok").unwrap();
        let ids: Vec<u64> = c.members.iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![0x620fc3831b019c9, 0x926ecc1f78366a58]);
        assert_eq!(c.members[0].hex_id(), "620fc3831b019c9");
        assert_eq!(c.cluster_id, 0x1531751ea848dfdf);
    }

    #[test]
    fn bad_configs() {
        assert!(matches!(ClusterSpec::new("a=http://x:1,b=http://x:1", "t"), Err(ConfigError::DuplicateUrl(_))));
        assert!(matches!(ClusterSpec::new("a", "t"), Err(ConfigError::Entry(_))));
        assert!(matches!(ClusterSpec::new("a=ftp://x:1", "t"), Err(ConfigError::Url { .. })));
        assert!(matches!(ClusterSpec::new("a=http://x", "t"), Err(ConfigError::Url { .. })));
        assert!(matches!(ClusterSpec::new("a=http://x:1/p", "t"), Err(ConfigError::Url { .. })));
        assert!(matches!(ClusterSpec::new("", "t"), Err(ConfigError::Empty)));
        let c = ClusterSpec::new("a=http://x:1", "t").unwrap();
        assert!(matches!(c.member("b", "http://x:1"), Err(ConfigError::NameNotInCluster { .. })));
        assert!(matches!(c.member("a", "http://x:2"), Err(ConfigError::AdvertiseMismatch { .. })));
        assert!(c.member("a", " http://x:1 ").is_ok());
    }

    #[test]
    fn member_json_is_go_json() {
        let m = Member { id: 10276657743932975437, name: "default".into(), peer_urls: vec!["http://localhost:2380".into()] };
        assert_eq!(m.to_json(), r#"{"id":10276657743932975437,"peerURLs":["http://localhost:2380"],"name":"default"}"#);
        assert_eq!(m.raft_attributes_json(), r#"{"peerURLs":["http://localhost:2380"]}"#);
    }
}

/// A member as a running cluster stored it in the db's `members` bucket: key the hex ID,
/// value `json.Marshal(Member)` (`{"id":..,"peerURLs":[..],"name":..,"clientURLs":[..],
/// "isLearner":..}`, the last three omitted when empty). A member that never started has no
/// name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct StoredMember {
    pub id: u64,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

/// The members a db records (empty when it has no `members` bucket, as a db restored by
/// etcdctl 3.4 before its member first started).
pub fn stored_members(db: &std::path::Path) -> crate::Result<Vec<StoredMember>> {
    let bad = |what: String| crate::Error::Schema { path: db.to_path_buf(), what };
    let bolt = bolt::Db::open(db)?;
    let fault = |f: bolt::Fault| bad(format!("members bucket: {f}"));
    let Some(bucket) = bolt.bucket(&[crate::schema::MEMBERS]).map_err(fault)? else { return Ok(Vec::new()) };
    let mut cursor = bucket.cursor().map_err(fault)?;
    let mut out = Vec::new();
    while let Some(e) = cursor.next().map_err(fault)? {
        let m: StoredMember = serde_json::from_slice(e.value).map_err(|err| bad(format!("member {}: {err}", String::from_utf8_lossy(e.key))))?;
        out.push(m);
    }
    Ok(out)
}
