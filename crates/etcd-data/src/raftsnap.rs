//! The raft snapshot file a restore writes (`etcdserver/api/snap/snapshotter.go`).
//!
//! File `member/snap/<term %016x>-<index %016x>.snap`, mode 0644:
//! `snappb.Snapshot{1 crc, 2 data}` where `crc = CRC-32C(data)` and
//! `data = raftpb.Snapshot{1 data = v2 store JSON, 2 metadata = SnapshotMetadata{1 ConfState,
//! 2 index N, 3 term 1}}`.
//!
//! The v2 store JSON is `json.Marshal` of etcd's v2 store after the restore created
//! `/0/members/<hex>/raftAttributes` for each member in ascending ID order (store indices 1..N;
//! `v2store/store.go` `Save`, `node.go`, `event*.go`, `watcher_hub.go`, `stats.go`). Servers
//! 3.4 and 3.5 read membership from it. Map keys are sorted as strings, so member hex IDs sort
//! lexicographically; the event queue has capacity 1000.

use crate::cluster::ClusterSpec;
use crate::gojson;
use crate::pbwire::Buf;
use crate::wal::conf_state;

const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn node(path: &str, index: u64, value: &str, children: Option<&str>) -> String {
    format!(
        "{{\"Path\":{},\"CreatedIndex\":{index},\"ModifiedIndex\":{index},\"ExpireTime\":\"{ZERO_TIME}\",\"Value\":{},\"Children\":{}}}",
        gojson::string(path),
        gojson::string(value),
        children.unwrap_or("null")
    )
}

/// The v2 store JSON (`store.Save()`) of a restored cluster.
pub fn v2_store_json(cluster: &ClusterSpec) -> String {
    let n = cluster.members.len() as u64;
    // Creation index of each member: ascending ID order.
    let mut by_hex: Vec<(String, u64, String)> =
        cluster.members.iter().enumerate().map(|(i, m)| (m.hex_id(), i as u64 + 1, m.raft_attributes_json())).collect();
    let events: Vec<String> = by_hex
        .iter()
        .map(|(hex, i, attrs)| {
            format!(
                "{{\"action\":\"create\",\"node\":{{\"key\":{},\"value\":{},\"modifiedIndex\":{i},\"createdIndex\":{i}}}}}",
                gojson::string(&format!("/0/members/{hex}/raftAttributes")),
                gojson::string(attrs)
            )
        })
        .collect();
    by_hex.sort_by(|a, b| a.0.cmp(&b.0));
    let members: Vec<String> = by_hex
        .iter()
        .map(|(hex, i, attrs)| {
            let p = format!("/0/members/{hex}");
            let leaf = node(&format!("{p}/raftAttributes"), *i, attrs, None);
            format!("{}:{}", gojson::string(hex), node(&p, *i, "", Some(&format!("{{\"raftAttributes\":{leaf}}}"))))
        })
        .collect();
    let members_dir = node("/0/members", 1, "", Some(&format!("{{{}}}", members.join(","))));
    let zero = node("/0", 0, "", Some(&format!("{{\"members\":{members_dir}}}")));
    let one = node("/1", 0, "", Some("{}"));
    let root = node("/", 0, "", Some(&format!("{{\"0\":{zero},\"1\":{one}}}")));
    let mut queue = events;
    queue.extend(std::iter::repeat_n("null".to_string(), 1000 - n as usize));
    format!(
        concat!(
            "{{\"Root\":{root},\"WatcherHub\":{{\"EventHistory\":{{\"Queue\":{{\"Events\":[{events}],\"Size\":{n},\"Front\":0,\"Back\":{n},\"Capacity\":1000}},",
            "\"StartIndex\":1,\"LastIndex\":{n}}}}},\"CurrentIndex\":{n},\"Stats\":{{\"getsSuccess\":0,\"getsFail\":0,\"setsSuccess\":0,\"setsFail\":0,",
            "\"deleteSuccess\":0,\"deleteFail\":0,\"updateSuccess\":0,\"updateFail\":0,\"createSuccess\":{n},\"createFail\":0,",
            "\"compareAndSwapSuccess\":0,\"compareAndSwapFail\":0,\"compareAndDeleteSuccess\":0,\"compareAndDeleteFail\":0,",
            "\"expireCount\":0,\"watchers\":0}},\"CurrentVersion\":2}}"
        ),
        root = root,
        events = queue.join(","),
        n = n
    )
}

/// File name of the raft snapshot at (`term`, `index`).
pub fn snap_file_name(term: u64, index: u64) -> String {
    format!("{term:016x}-{index:016x}.snap")
}

/// The `.snap` file of a restored cluster: index N (members), term 1.
pub fn restore_snap(cluster: &ClusterSpec) -> Vec<u8> {
    let n = cluster.members.len() as u64;
    let voters: Vec<u64> = cluster.members.iter().map(|m| m.id).collect();
    let mut b = Buf::default();
    let meta = b.bytes(1, &conf_state(&voters)).uint(2, n).uint(3, 1).take();
    let data = b.bytes(1, v2_store_json(cluster).as_bytes()).bytes(2, &meta).take();
    b.uint(1, crc32c::crc32c(&data) as u64).bytes(2, &data).take()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_json_shape() {
        let c = ClusterSpec::new("m1=http://127.0.0.1:24800,m2=http://127.0.0.1:25800", "tok").unwrap();
        let j = v2_store_json(&c);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["CurrentIndex"], 2);
        // hex IDs sort as strings: "620fc3831b019c9" < "926ecc1f78366a58"
        let members = v["Root"]["Children"]["0"]["Children"]["members"]["Children"].as_object().unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(v["WatcherHub"]["EventHistory"]["Queue"]["Events"].as_array().unwrap().len(), 1000);
        assert!(j.contains(r#""Value":"{\"peerURLs\":[\"http://127.0.0.1:24800\"]}""#));
        assert_eq!(snap_file_name(1, 2), "0000000000000001-0000000000000002.snap");
    }
}
