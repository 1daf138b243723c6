//! etcd's backend records as stored in a snapshot's buckets: revision keys
//! (`RevisionKey::parse`, `Revision::main_of`), `mvccpb.KeyValue` (the borrowed decoder
//! `KeyValueRef::decode` and the prost one), `leasepb.Lease`, `etcdserverpb.AlarmMember`,
//! `authpb.User/Role` names, and a replayed revision's entries (`replay::revision_entries`,
//! which decodes each put). Also the `--initial-cluster` flag parser. Errors are fine; panics,
//! hangs and unbounded allocation are not.
#![no_main]

use etcd_data::replay::{revision_entries, Change, RevisionChanges};
use etcd_data::schema::{AlarmMember, AuthName, KeyValue, KeyValueRef, Lease, Revision, RevisionKey};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let _ = RevisionKey::parse(data);
    let _ = Revision::main_of(data);
    let r = KeyValueRef::decode(data);
    let _ = KeyValue::decode(data);
    let _ = Lease::decode(data);
    if let Ok(a) = AlarmMember::decode(data) {
        let _ = a.alarm_name();
    }
    let _ = AuthName::decode(data);
    // The same bytes as a put (and its key as a delete) of the revision the KeyValue names.
    let revision = r.map(|kv| kv.mod_revision).unwrap_or(1);
    let key = r.map(|kv| kv.key.to_vec()).unwrap_or_default();
    let rc = RevisionChanges { revision, changes: vec![Change::Put { kv: data.to_vec() }, Change::Delete { key }] };
    let _ = revision_entries(&rc);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = etcd_data::cluster::parse_initial_cluster(s);
        let _ = etcd_data::cluster::ClusterSpec::new(s, "fuzz");
    }
});
