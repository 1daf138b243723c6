//! etcd's backend schema: bucket names, revision keys and the protobuf values stored in them.
//!
//! Sources: `server/mvcc/buckets/bucket.go` (3.5), `server/storage/schema/bucket.go` (3.6),
//! `server/mvcc/revision.go`, `api/mvccpb/kv.proto`, `server/lease/leasepb/lease.proto`,
//! `api/etcdserverpb/rpc.proto` (AlarmMember), `api/authpb/auth.proto`.
//!
//! | bucket | key | value |
//! |---|---|---|
//! | `key` | revision: BE u64 main, `_`, BE u64 sub (17 bytes), plus `t` for a tombstone | `mvccpb.KeyValue` |
//! | `meta` | `consistent_index`, `term`, `confState`, `scheduledCompactRev`, `finishedCompactRev`, `storageVersion` | see the `META_*` keys below |
//! | `lease` | lease ID, BE i64 | `leasepb.Lease` |
//! | `alarm` | `etcdserverpb.AlarmMember` | empty |
//! | `cluster` | `clusterVersion`, `downgrade` | text / JSON |
//! | `members` | member ID, lower-case hex without padding | member JSON |
//! | `members_removed` | member ID, hex | `removed` |
//! | `auth` | `authEnabled` (1 byte), `authRevision` (BE u64) | |
//! | `authUsers`, `authRoles` | name | `authpb.User`, `authpb.Role` |

use std::fmt;

pub const KEY: &[u8] = b"key";
pub const META: &[u8] = b"meta";
pub const LEASE: &[u8] = b"lease";
pub const ALARM: &[u8] = b"alarm";
pub const CLUSTER: &[u8] = b"cluster";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const AUTH_ROLES: &[u8] = b"authRoles";

/// Every bucket etcd 3.4, 3.5 and 3.6 create.
pub const ALL_BUCKETS: &[&[u8]] = &[KEY, META, LEASE, ALARM, CLUSTER, MEMBERS, MEMBERS_REMOVED, AUTH, AUTH_USERS, AUTH_ROLES];

pub const META_CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const META_TERM: &[u8] = b"term";
pub const META_CONF_STATE: &[u8] = b"confState";
pub const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
pub const META_STORAGE_VERSION: &[u8] = b"storageVersion";

/// Length of a revision key; a tombstone adds one byte (`t`).
pub const REVISION_LEN: usize = 17;
pub const MARK_TOMBSTONE: u8 = b't';

/// A revision: the main revision (one per transaction) and the sub revision within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// A decoded `key`-bucket key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevisionKey {
    pub rev: Revision,
    pub tombstone: bool,
}

/// Why a revision key is malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionKeyError {
    Length(usize),
    Separator(u8),
    Mark(u8),
}

impl fmt::Display for RevisionKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RevisionKeyError::Length(n) => write!(f, "revision key of {n} bytes (want 17, or 18 for a tombstone)"),
            RevisionKeyError::Separator(b) => write!(f, "revision key byte 8 is {b:#04x} (want '_')"),
            RevisionKeyError::Mark(b) => write!(f, "revision key byte 17 is {b:#04x} (want 't' for a tombstone)"),
        }
    }
}

impl Revision {
    /// `revToBytes`: BE u64 main, `_`, BE u64 sub.
    pub fn to_bytes(self) -> [u8; REVISION_LEN] {
        let mut b = [0u8; REVISION_LEN];
        b[..8].copy_from_slice(&(self.main as u64).to_be_bytes());
        b[8] = b'_';
        b[9..].copy_from_slice(&(self.sub as u64).to_be_bytes());
        b
    }

    /// The main revision of a key as etcd's status reads it (`bytesToRev`: bytes 0..8), without
    /// the stricter checks of [`RevisionKey::parse`].
    pub fn main_of(key: &[u8]) -> Option<i64> {
        (key.len() >= REVISION_LEN).then(|| i64::from_be_bytes(key[..8].try_into().unwrap()))
    }
}

impl RevisionKey {
    pub fn parse(k: &[u8]) -> Result<RevisionKey, RevisionKeyError> {
        if k.len() != REVISION_LEN && k.len() != REVISION_LEN + 1 {
            return Err(RevisionKeyError::Length(k.len()));
        }
        if k[8] != b'_' {
            return Err(RevisionKeyError::Separator(k[8]));
        }
        let tombstone = k.len() == REVISION_LEN + 1;
        if tombstone && k[REVISION_LEN] != MARK_TOMBSTONE {
            return Err(RevisionKeyError::Mark(k[REVISION_LEN]));
        }
        let main = i64::from_be_bytes(k[..8].try_into().unwrap());
        let sub = i64::from_be_bytes(k[9..17].try_into().unwrap());
        Ok(RevisionKey { rev: Revision { main, sub }, tombstone })
    }
}

/// `mvccpb.KeyValue` (proto3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// `leasepb.Lease` (proto3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// `etcdserverpb.AlarmMember` (proto3).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AlarmMember {
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
    #[prost(int32, tag = "2")]
    pub alarm: i32,
}

impl AlarmMember {
    pub fn alarm_name(&self) -> &'static str {
        match self.alarm {
            0 => "NONE",
            1 => "NOSPACE",
            2 => "CORRUPT",
            _ => "UNKNOWN",
        }
    }
}

/// The name field shared by `authpb.User` and `authpb.Role` (other fields are skipped).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuthName {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn revision_round_trip_and_layout() {
        let r = Revision { main: 0x0102, sub: 3 };
        let b = r.to_bytes();
        assert_eq!(&b[..], &[0, 0, 0, 0, 0, 0, 1, 2, b'_', 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(RevisionKey::parse(&b).unwrap(), RevisionKey { rev: r, tombstone: false });
        let mut t = b.to_vec();
        t.push(b't');
        assert!(RevisionKey::parse(&t).unwrap().tombstone);
        t[17] = b'x';
        assert_eq!(RevisionKey::parse(&t), Err(RevisionKeyError::Mark(b'x')));
        assert_eq!(RevisionKey::parse(&b[..16]), Err(RevisionKeyError::Length(16)));
        assert_eq!(Revision::main_of(&b), Some(0x0102));
    }

    #[test]
    fn keyvalue_wire_format_is_mvccpb() {
        // protoc --encode=mvccpb.KeyValue: key:"a" create_revision:2 mod_revision:3 version:1 value:"v"
        let kv = KeyValue { key: b"a".to_vec(), create_revision: 2, mod_revision: 3, version: 1, value: b"v".to_vec(), lease: 0 };
        assert_eq!(kv.encode_to_vec(), vec![0x0a, 1, b'a', 0x10, 2, 0x18, 3, 0x20, 1, 0x2a, 1, b'v']);
    }
}

/// A borrowed view of an encoded `mvccpb.KeyValue`: decoding copies nothing, so scanning a
/// whole `key` bucket does not copy every value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyValueRef<'a> {
    pub key: &'a [u8],
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub value: &'a [u8],
    pub lease: i64,
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

impl<'a> KeyValueRef<'a> {
    /// Decode, or None when the bytes are not a well-formed KeyValue (unknown fields skipped).
    pub fn decode(b: &'a [u8]) -> Option<KeyValueRef<'a>> {
        let mut kv = KeyValueRef::default();
        let mut at = 0;
        while at < b.len() {
            let tag = varint(b, &mut at)?;
            let (field, wire) = (tag >> 3, tag & 7);
            match wire {
                0 => {
                    let v = varint(b, &mut at)? as i64;
                    match field {
                        2 => kv.create_revision = v,
                        3 => kv.mod_revision = v,
                        4 => kv.version = v,
                        6 => kv.lease = v,
                        _ => {}
                    }
                }
                2 => {
                    let len = usize::try_from(varint(b, &mut at)?).ok()?;
                    let end = at.checked_add(len).filter(|e| *e <= b.len())?;
                    match field {
                        1 => kv.key = &b[at..end],
                        5 => kv.value = &b[at..end],
                        _ => {}
                    }
                    at = end;
                }
                1 => at = at.checked_add(8).filter(|e| *e <= b.len())?,
                5 => at = at.checked_add(4).filter(|e| *e <= b.len())?,
                _ => return None,
            }
        }
        Some(kv)
    }
}

#[cfg(test)]
mod kv_ref_tests {
    use super::*;
    use prost::Message;

    #[test]
    fn borrowed_view_equals_prost() {
        let kv = KeyValue { key: b"/registry/a".to_vec(), create_revision: 300, mod_revision: 70000, version: 2, value: vec![9; 500], lease: -1 };
        let b = kv.encode_to_vec();
        let r = KeyValueRef::decode(&b).unwrap();
        assert_eq!((r.key, r.create_revision, r.mod_revision, r.version, r.value, r.lease), (&kv.key[..], 300, 70000, 2, &kv.value[..], -1));
        assert!(KeyValueRef::decode(&b[..b.len() - 1]).is_none(), "truncated");
        assert_eq!(KeyValueRef::decode(&[]).unwrap(), KeyValueRef::default());
    }
}
