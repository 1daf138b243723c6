#!/usr/bin/env bash
# Benchmark: the S3 test server's own throughput, to tell its limits from Quorum's. moto (as the
# other benches start it) is given 80 objects of 16 MiB (1.34 GB, about the packs of the 1.26 GB
# bench snapshot) and they are fetched with curl through presigned URLs, 1, 3 (as `restore --repo`)
# and 8 at a time. Compare with `restore --repo` from the same server in bench/k8s-repo.sh.
# Usage: bench/s3-server.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$root/scripts/setup.sh" >/dev/null
"$root/.tools/pyenv/bin/python3" - "$root/.tools/pyenv/bin/moto_server" "$(free_port)" <<'PY'
import concurrent.futures as cf, os, subprocess, sys, time
import boto3
server, port = sys.argv[1], sys.argv[2]
moto = subprocess.Popen([server, "-H", "127.0.0.1", "-p", port], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
    for _ in range(100):
        try:
            s3.list_buckets()
            break
        except Exception:
            time.sleep(0.2)
    s3.create_bucket(Bucket="raw")
    body = os.urandom(16 << 20)
    for i in range(80):
        s3.put_object(Bucket="raw", Key=f"o{i}", Body=body)
    urls = [s3.generate_presigned_url("get_object", Params={"Bucket": "raw", "Key": f"o{i}"}) for i in range(80)]
    get = lambda u: subprocess.run(["curl", "-sf", "-o", "/dev/null", u]).returncode
    for flight in (1, 3, 8):
        t = time.time()
        with cf.ThreadPoolExecutor(flight) as ex:
            assert all(rc == 0 for rc in ex.map(get, urls)), "a GET failed"
        d = time.time() - t
        print(f"moto: 80 GETs of 16 MiB (1.34 GB), {flight} in flight: {d:.2f} s, {80 * 16 * 1.048576 / d:.0f} MB/s")
finally:
    moto.kill()
PY
