#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs (fuzz/seeds/<target>/) from the formats' own
definitions, with fixed keys, nonces and salts so that a rerun writes the same bytes.

    python3 fuzz/seeds/make_seeds.py [ETCD_DATA_DIR SNAPSHOT_DB]

With an etcd 3.5 data dir and a `snapshot save` file (fuzz/run.sh documents how they were
made), the WAL and bbolt seeds are cut from them; without, those seeds are left as they are.
Needs python3 with `cryptography` (AES, HKDF, Argon2) and the `zstd` command.
"""
import base64, hashlib, json, os, struct, subprocess, sys

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protobuf wire format --------------------------------------------------------------
def varint(v):
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_uint(n, v):
    return varint(n << 3) + varint(v)


def f_bytes(n, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(n << 3 | 2) + varint(len(b)) + b


def msg(*fields):
    return b"".join(fields)


def zstd(data):
    return subprocess.run(["zstd", "-q", "-1", "-c", "--no-check"], input=data, stdout=subprocess.PIPE, check=True).stdout


# --- etcd ------------------------------------------------------------------------------
def keyvalue(key, create, mod, version, value, lease=0):
    f = [f_bytes(1, key), f_uint(2, create), f_uint(3, mod), f_uint(4, version), f_bytes(5, value)]
    if lease:
        f.append(f_uint(6, lease))
    return msg(*f)


def revkey(main, sub, tomb=False):
    return struct.pack(">Q", main) + b"_" + struct.pack(">Q", sub) + (b"t" if tomb else b"")


def etcd_records():
    t = "etcd_records"
    put(t, "kv-put", keyvalue(b"/registry/pods/default/web", 2, 5, 3, b"k8s\x00value", lease=0x694D8A1B2C3D4E5F))
    put(t, "kv-tombstone", msg(f_bytes(1, b"/registry/k1")))
    put(t, "revision-key", revkey(12, 0))
    put(t, "revision-key-tombstone", revkey(13, 1, True))
    put(t, "lease", msg(f_uint(1, 0x694D8A1B2C3D4E5F), f_uint(2, 60), f_uint(3, 42)))
    put(t, "alarm", msg(f_uint(1, 0x8E9E05C52164694D), f_uint(2, 1)))
    put(t, "initial-cluster", "m1=http://127.0.0.1:2380,m2=http://127.0.0.1:2381,m2=https://10.0.0.2:2380")


def wal_frames(seg):
    at, out = 0, []
    while at + 8 <= len(seg):
        field = struct.unpack_from("<Q", seg, at)[0]
        if field == 0:
            break
        n = field & ~(0xFF << 56)
        pad = (field >> 56) & 0x7 if field >> 63 else 0
        out.append(seg[at : at + 8 + n + pad])
        at += 8 + n + pad
    return out


def from_etcd(data_dir, db):
    seg = open(os.path.join(data_dir, "member/wal/0000000000000000-0000000000000000.wal"), "rb").read(1 << 20)
    frames = wal_frames(seg)
    put("wal_segment", "etcd35-head", b"".join(frames[:4]))
    head = b""
    for fr in frames:
        if len(head) + len(fr) > 3072:
            break
        head += fr
    put("wal_segment", "etcd35-records", head + b"\x00" * 16)
    put("bolt_file", "etcd35-snapshot.db", open(db, "rb").read())


# --- Kubernetes ------------------------------------------------------------------------
def meta(name, ns=None, uid="6b1a3c1e-1111-4222-8333-944455556666", secs=1498504170, labels=None):
    f = [f_bytes(1, name)]
    if ns:
        f.append(f_bytes(3, ns))
    f.append(f_bytes(5, uid))
    f.append(f_bytes(6, "12345"))
    f.append(f_bytes(8, msg(f_uint(1, secs))))
    for k, v in (labels or {}).items():
        f.append(f_bytes(11, msg(f_bytes(1, k), f_bytes(2, v))))
    return msg(*f)


def envelope(api_version, kind, raw):
    return b"k8s\x00" + msg(f_bytes(1, msg(f_bytes(1, api_version), f_bytes(2, kind))), f_bytes(2, raw), f_bytes(3, ""), f_bytes(4, ""))


def pod_spec():
    c = msg(
        f_bytes(1, "web"),
        f_bytes(2, "nginx:1.27"),
        f_bytes(3, "nginx"),
        f_bytes(6, msg(f_uint(3, 80), f_bytes(4, "TCP"))),
        f_bytes(7, msg(f_bytes(1, "MODE"), f_bytes(2, "prod"))),
    )
    return msg(f_bytes(2, c), f_bytes(3, "Always"), f_uint(4, 30))


def kube():
    t = "kube_value"
    pod = msg(f_bytes(1, meta("web", "default", labels={"app": "web"})), f_bytes(2, pod_spec()), f_bytes(3, msg(f_bytes(1, "Running"))))
    secret = msg(f_bytes(1, meta("db-pass", "default")), f_bytes(2, msg(f_bytes(1, "password"), f_bytes(2, b"hunter2"))), f_bytes(3, "Opaque"))
    cm = msg(f_bytes(1, meta("settings", "kube-system")), f_bytes(2, msg(f_bytes(1, "mode"), f_bytes(2, "fast"))))
    deploy = msg(
        f_bytes(1, meta("web", "default")),
        f_bytes(2, msg(f_uint(1, 3), f_bytes(2, msg(f_bytes(1, msg(f_bytes(1, "app"), f_bytes(2, "web"))))), f_bytes(3, msg(f_bytes(1, meta("")), f_bytes(2, pod_spec()))))),
    )
    lease = msg(f_bytes(1, meta("node-1", "kube-node-lease")), f_bytes(2, msg(f_bytes(1, "node-1"), f_uint(2, 40), f_bytes(3, msg(f_uint(1, 1498504170), f_uint(2, 5000))))))
    put(t, "pod.pb", envelope("v1", "Pod", pod))
    put(t, "secret.pb", envelope("v1", "Secret", secret))
    put(t, "deployment.pb", envelope("apps/v1", "Deployment", deploy))
    put(t, "unknown-kind.pb", envelope("example.com/v1", "Widget", msg(f_bytes(1, meta("w")))))
    # Selector mode: first byte = index into the target's KINDS, then the object's bytes.
    put(t, "sel-configmap", bytes([2]) + cm)
    put(t, "sel-lease", bytes([22]) + lease)
    put(t, "json", json.dumps({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default", "uid": "u-1", "creationTimestamp": "2017-06-26T19:09:30Z"}, "spec": {"size": 3, "tags": ["a", None, True, 1.5]}}))
    put(t, "cbor", b"\xd9\xd9\xf7\xa1\x64kind\x63Pod")
    put(t, "key", "/registry/deployments/default/web")
    put(t, "key-grouped", "/registry/example.com/widgets/default/w")


def enc_config():
    t = "encryption_config"
    k32 = base64.b64encode(bytes(range(32))).decode()
    k16 = base64.b64encode(bytes(range(16))).decode()
    put(t, "aescbc.yaml", f"""apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources:
      - secrets
      - configmaps
    providers:
      - aescbc:
          keys:
            - name: key1
              secret: {k32}
            - name: key2
              secret: {k16}
      - identity: {{}}
""")
    put(t, "all-providers.yaml", f"""apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms:
          apiVersion: v2
          name: vault
          endpoint: unix:///var/run/kms.sock
          timeout: 3s
      - aesgcm:
          keys: [{{name: g1, secret: {k32}}}]
      - secretbox:
          keys: [{{name: s1, secret: {k32}}}]
      - identity: {{}}
  - resources: ["*.apps", "events"]
    providers: [{{identity: {{}}}}]
  - resources: ["*.*"]
    providers:
      - aescbc:
          keys: [{{name: wide, secret: {k32}}}]
""")
    put(t, "config.json", json.dumps({"kind": "EncryptionConfiguration", "apiVersion": "apiserver.config.k8s.io/v1", "resources": [{"resources": ["secrets"], "providers": [{"aesgcm": {"keys": [{"name": "k", "secret": k16}]}}, {"identity": {}}]}]}))


def enc_values():
    t = "encrypted_value"
    key = bytes(range(32))
    pt = envelope("v1", "Secret", msg(f_bytes(1, meta("db-pass", "default")), f_bytes(2, msg(f_bytes(1, "password"), f_bytes(2, b"hunter2")))))
    iv = bytes(range(16))
    p = padding.PKCS7(128).padder()
    padded = p.update(pt) + p.finalize()
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    put(t, "aescbc", b"k8s:enc:aescbc:v1:key1:" + iv + e.update(padded) + e.finalize())
    nonce = bytes(range(12))
    put(t, "aesgcm", b"k8s:enc:aesgcm:v1:key1:" + nonce + AESGCM(key).encrypt(nonce, pt, b"/registry/secrets/default/x"))
    put(t, "aesgcm-192", b"k8s:enc:aesgcm:v1:k24:" + nonce + AESGCM(bytes(range(24))).encrypt(nonce, pt, b"/registry/secrets/default/x"))
    put(t, "secretbox-shape", b"k8s:enc:secretbox:v1:key1:" + bytes(range(24)) + hashlib.sha256(pt).digest() + pt[:32])
    put(t, "kms-v2", b"k8s:enc:kms:v2:mock:" + f_bytes(1, b"ciphertext") + f_bytes(2, b"encrypted-dek") + f_bytes(3, b"key-id"))
    put(t, "plain", pt)


# --- agent, numa -------------------------------------------------------------------------
def agent():
    t = "agent_config"
    put(t, "minimal.yaml", "cluster: prod\nrepo:\n  url: file:///var/lib/quorum/repo\n  key_file: /etc/quorum/repo.key\n")
    put(t, "full.yaml", """cluster: prod
name: agent-1
endpoints: [https://127.0.0.1:2379, https://10.0.0.2:2379]
cacert: /etc/kubernetes/pki/etcd/ca.crt
listen: 0.0.0.0:9479
election: {ttl_seconds: 10}
repo:
  url: s3://etcd-backups/prod
  password_file: /etc/quorum/repo.pass
  endpoint: http://127.0.0.1:9000
  region: us-east-1
  refresh_seconds: 30
backup: {schedule: "0 * * * *", from: follower, tags: [agent, hourly]}
retention:
  schedule: "30 3 * * *"
  keep_last: 3
  keep_hourly: 48
  keep_daily: 14
  keep_pitr_hours: 72
  prune: true
drill: {schedule: "0 4 * * 1-5", max_age_hours: 48}
delta: {enabled: true, interval_seconds: 5, max_mib: 16, rpo_alert_seconds: 60, spool_max_mib: 1024}
consolidate: {after_mib: 256, after_hours: 24, check_seconds: 60}
defrag: {enabled: true, min_fragmentation: 45, min_db_size: 100000000, interval_seconds: 660}
quota_backend_bytes: 8589934592
""")


def numa_seeds():
    put("nova_conf", "nova.conf", """[DEFAULT]
# compute host
reserved_host_memory_mb = 4096
reserved_host_cpus = 1
cpu_allocation_ratio = 4.0
initial_ram_allocation_ratio = 1.0
reserved_huge_pages = node:0,size:2048,count:64
reserved_huge_pages = node:1,size:1GB,count:1
[compute]
cpu_dedicated_set = 2-7,^4
cpu_shared_set = 0,1
packing_host_numa_cells_allocation_strategy = true
""")
    put("nova_conf", "vcpu-pin-set.conf", "[DEFAULT]\nvcpu_pin_set = 0-15,^0,^8\n; old style\n[libvirt]\nvirt_type = kvm\n")
    put("nova_conf", "ovs-vsctl.txt", '_uuid               : 1f2e\nother_config        : {dpdk-init="true", dpdk-socket-limit="2048,2048", dpdk-socket-mem="1024,1024", pmd-cpu-mask="0x6"}\n')
    t = "sysfs_values"
    put(t, "tree", "Node 0 MemTotal:       16318020 kB\nNode 0 MemFree:        1000 kB\n|0-3,8-11\n|512|500|0|0,8")
    put(t, "cpu-spec", "1-4,^3,6,+7")
    put(t, "lscpu", "NUMA node(s):        2\nNUMA node0 CPU(s):   0-7,16-23\nNUMA node1 CPU(s):   8-15,24-31\n")
    put(t, "meminfo", "MemTotal:       32658108 kB\nHugePages_Total:     512\nHugepagesize:       2048 kB\n")
    put(t, "reserved", "node:0,size:2MiB,count:64")
    put(t, "size", "1.5GiB")
    put("libvirt_domain", "domain.xml", """<domain type='kvm' id='3'>
  <name>instance-00000001</name>
  <memory unit='KiB'>4194304</memory>
  <memoryBacking><hugepages><page size='2048' unit='KiB' nodeset='0-1'/></hugepages></memoryBacking>
  <vcpu placement='static'>4</vcpu>
  <cputune>
    <vcpupin vcpu='0' cpuset='2'/><vcpupin vcpu='1' cpuset='3'/>
    <vcpupin vcpu='2' cpuset='10'/><vcpupin vcpu='3' cpuset='11'/>
    <emulatorpin cpuset='2-3,10-11'/>
  </cputune>
  <numatune>
    <memory mode='strict' nodeset='0-1'/>
    <memnode cellid='0' mode='strict' nodeset='0'/>
    <memnode cellid='1' mode='strict' nodeset='1'/>
  </numatune>
  <cpu mode='host-model'>
    <topology sockets='2' cores='2' threads='1'/>
    <numa>
      <cell id='0' cpus='0-1' memory='2097152' unit='KiB' memAccess='shared'/>
      <cell id='1' cpus='2-3' memory='2097152' unit='KiB' memAccess='shared'/>
    </numa>
  </cpu>
</domain>
""")
    put("libvirt_domain", "no-numa.xml", "<domain type='kvm'><name>i-2</name><memory unit='MiB'>512</memory><vcpu>1</vcpu></domain>")


# --- repository ----------------------------------------------------------------------------
def entry(t, i, off, length, plain):
    return bytes([t]) + bytes([i]) * 32 + struct.pack("<III", off, length, plain)


def repo_seeds():
    chunk = b"etcd page " * 40
    stored = b"\x00" + chunk
    packed = b"\x01" + zstd(chunk)
    blobs = stored + packed
    entries = [entry(0, 1, 0, len(stored), len(chunk)), entry(1, 2, len(stored), len(packed), len(chunk))]
    header = b"QPK1" + struct.pack("<I", len(entries)) + b"".join(entries)
    put("repo_pack", "two-blobs", struct.pack("<H", len(blobs)) + blobs + header)
    put("repo_pack", "bundle-blob", struct.pack("<H", 64) + b"\x00" * 64 + b"QPK1" + struct.pack("<I", 1) + entry(2, 3, 0, 64, 63))
    idx = b"QIX1" + struct.pack("<I", 2)
    idx += bytes([9]) * 32 + struct.pack("<I", 2) + b"".join(entries)
    idx += bytes([8]) * 32 + struct.pack("<I", 1) + entry(3, 4, 0, 100, 300)
    put("repo_index", "plain", b"\x00" + idx)
    put("repo_index", "zstd-stream", b"\x01" + zstd(idx))

    ids = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    manifest = {
        "cluster": "prod", "cluster_id": "cdf818194e3a8c32", "member_id": "8e9e05c52164694d", "member": "m1",
        "etcd_version": "3.5.16", "source": "https://127.0.0.1:2379", "time": "2026-12-04T07:00:00Z", "host": "node-1",
        "tags": ["agent"],
        "snapshot": {"size": 28704, "sha256": hashlib.sha256(b"db").hexdigest(), "hash": 1386449893, "revision": 12,
                     "total_key": 9, "version": "3.5.0", "hash_kv": 3183616416, "compact_revision": 0, "live_keys": 8},
        "chunk_lists": ids[:1], "chunks": 14,
        "bundle": {"table": ids[1], "files": 2, "bytes": 4096, "blobs": ids[1:]},
        "added_bytes": 30000, "added_blobs": 15,
        "consolidated": {"base": ids[2], "base_revision": 5, "to_revision": 12, "segments": 2, "revisions": 7},
    }
    put("repo_manifest", "manifest.json", json.dumps(manifest))
    put("repo_manifest", "verification.json", json.dumps({"backup": ids[0], "cluster": "prod", "time": "2026-12-04T08:00:00Z", "host": "node-1", "ok": False, "etcd_version": "3.5.16", "seconds": 12.5, "checks": ["hashkv", "status"], "failure": "hash mismatch"}))
    put("repo_manifest", "retention.json", json.dumps({"cluster": "prod", "time": "2026-12-04T03:30:00Z", "keep_pitr_seconds": 259200, "delta_floor": 1200}))
    put("repo_manifest", "bundle-table.json", json.dumps([{"path": "/etc/kubernetes/manifests/etcd.yaml", "mode": 0o600, "size": 2048, "sha256": ids[0], "chunks": ids[1:]}]))
    put("repo_manifest", "config.json", json.dumps({"format": "quorum-repository", "version": 2, "id": ids[2][:32], "created": "2026-12-01T00:00:00Z", "chunker": {"min": 8192, "avg": 16384, "max": 65536, "pages": 2}, "pack_size": 16777216, "compression": 3}))

    # Key files: a key-file (HKDF) wrapping and a cheap-Argon2 passphrase wrapping, both real.
    master = bytes(range(64))
    salt = bytes(range(16))
    nonce = bytes(range(100, 112))
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"quorum repository key file").derive(b"\x42" * 32)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, master, b"quorum-master-key:data")
    b64 = lambda b: base64.b64encode(b).decode()
    put("repo_key_file", "keyfile.json", json.dumps({"purpose": "data", "kdf": "keyfile", "salt": b64(salt), "wrapped": b64(wrapped), "created": "2026-12-01T00:00:00Z", "host": "node-1"}))
    try:
        from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
        kek = Argon2id(salt=salt, length=32, iterations=1, lanes=1, memory_cost=64).derive(b"fuzz passphrase")
        wrapped = nonce + AESGCM(kek).encrypt(nonce, master, b"quorum-master-key:bundle")
    except ImportError:
        wrapped = nonce + bytes(80)
    put("repo_key_file", "passphrase.json", json.dumps({"purpose": "bundle", "kdf": "passphrase", "argon2": {"m_kib": 64, "t": 1, "p": 1}, "salt": b64(salt), "wrapped": b64(wrapped), "created": "2026-12-01T00:00:00Z", "host": "node-1"}))

    put("repo_lock", "shared.json", json.dumps({"host": "node-1", "pid": 4242, "operation": "backup", "exclusive": False, "created": "2026-12-04T07:00:00Z", "expires": "2026-12-04T07:30:00Z", "boot_id": "0b7e2d9c-8f6a-4f55-9d4e-1c2b3a4d5e6f", "pid_ns": "pid:[4026531836]", "start_time": 123456}))
    put("repo_lock", "exclusive-old.json", json.dumps({"host": "node-2", "pid": 1, "operation": "prune", "exclusive": True, "created": "2020-01-01T00:00:00Z", "expires": "2020-01-01T00:30:00Z"}))

    # Key map segment: entries sorted by key.
    km = b"QKM1" + struct.pack("<I", 3)
    for i, (k, rev) in enumerate([(b"/registry/leases/kube-node-lease/node-1", revkey(15, 0)), (b"/registry/pods/default/web", revkey(9, 1)), (b"/registry/secrets/default/db", revkey(12, 0))]):
        km += struct.pack("<H", len(k)) + k + bytes([len(rev)]) + rev + struct.pack("<QI", 4096 * (i + 2) + 64, 120 + i)
    put("repo_keymap", "segment", km)

    # Delta segment plaintext: header, then records.
    def record(rev, ms, events):
        b = struct.pack("<qqI", rev, ms, len(events))
        for kind, body, prev in events:
            b += bytes([kind]) + struct.pack("<I", len(body)) + body + struct.pack("<q", prev)
        return b

    recs = record(13, 1764831600000, [(0, keyvalue(b"/registry/k9", 13, 13, 1, b"v9"), 0), (1, b"/registry/k2", 3)])
    recs += record(15, 1764831601000, [(0, keyvalue(b"/registry/k9", 13, 15, 2, b"v10", lease=7), 13)])
    hdr = json.dumps({"format": "quorum-delta", "version": 1, "cluster": "c", "base": ids[0], "cluster_id": "cdf818194e3a8c32",
                      "first_revision": 13, "last_revision": 15, "revisions": 2, "events": 3, "first_time_ms": 1764831600000,
                      "last_time_ms": 1764831601000, "host": "node-1", "created": "2026-12-04T07:00:01Z", "leases": [[7, 60]]}).encode()
    plain = b"QDS1" + struct.pack("<I", len(hdr)) + hdr + recs
    put("repo_delta", "segment", b"\x00" + plain)
    put("repo_delta", "segment-zstd", b"\x01" + zstd(plain))


# --- OpenShift static resources ------------------------------------------------------------
def openshift_seeds():
    import gzip, io, tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        def add(name, data=None, mode=0o644, kind=tarfile.REGTYPE, link=""):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime, ti.uname, ti.gname, ti.linkname = kind, mode, 1764831600, "root", "root", link
            ti.size = len(data) if data is not None else 0
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        add("static-pod-resources/kube-apiserver-pod-7/", kind=tarfile.DIRTYPE, mode=0o755)
        add("static-pod-resources/kube-apiserver-pod-7/secrets/encryption-config/encryption-config",
            b'{"kind":"EncryptionConfiguration","apiVersion":"apiserver.config.k8s.io/v1","resources":[]}', mode=0o600)
        add("static-pod-resources/kube-apiserver-pod-7/pod.yaml", kind=tarfile.SYMTYPE, mode=0o777, link="kube-apiserver-pod.yaml")
        add("static-pod-resources/etcd-pod-2/etcd-pod.yaml", b"apiVersion: v1\nkind: Pod\n")
        add("static-pod-resources/kube-scheduler-pod-9/" + "long-name-" * 12, b"x" * 300)
    put("openshift_tarball", "static_kuberesources.tar.gz", gzip.compress(buf.getvalue(), mtime=0))


if __name__ == "__main__":
    etcd_records()
    kube()
    enc_config()
    enc_values()
    agent()
    numa_seeds()
    repo_seeds()
    openshift_seeds()
    if len(sys.argv) == 3:
        from_etcd(sys.argv[1], sys.argv[2])
