#!/usr/bin/env bash
# What an egress proxy costs a cold pull: regcache pulls the 512 MiB library/big from the
# upstream directly and through tinyproxy (an HTTP CONNECT tunnel, `[fetch] proxy`), each run
# on an empty cache, alternating. Wall seconds from fetch.py (the kit's verifying client),
# regcache's and tinyproxy's CPU seconds (utime+stime from /proc/PID/stat). Loopback only.
#
# Needs: the bench kit's upstream running (../shared/bench/upstream.sh start $W/up 15000 --auth
# token, with make-images.py --big-size 512M pushed), `cargo build --release` (or REGCACHE_BIN),
# tinyproxy (Debian's tinyproxy-bin), python3, curl, bc.
# Usage: benches/egress-bench.sh [WORKDIR]   (default /tmp/regcache-egress-bench; RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
R="${REGCACHE_BIN:-$PWD/target/release/regcache}"
KIT="${BENCH_KIT:-$PWD/../shared/bench}"
W="${1:-/tmp/regcache-egress-bench}"
RUNS="${RUNS:-3}"
rm -rf "$W" && mkdir -p "$W"

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
ticks=$(getconf CLK_TCK)
secs() { echo "scale=2; $1 / $ticks" | bc; }

cat > "$W/tinyproxy.conf" <<EOF_TP
Port 18888
Listen 127.0.0.1
Allow 127.0.0.1
Timeout 60
MaxClients 64
LogLevel Warning
DisableViaHeader Yes
EOF_TP
tinyproxy -d -c "$W/tinyproxy.conf" > "$W/tinyproxy.log" 2>&1 &
TP=$!
RC=""
trap 'kill $TP ${RC:-} 2>/dev/null || true' EXIT
sleep 0.5

for run in $(seq "$RUNS"); do
    for mode in direct proxy; do
        rm -rf "$W/cache"
        proxy='"none"'
        [ "$mode" = proxy ] && proxy='"http://127.0.0.1:18888"'
        cat > "$W/regcache.toml" <<EOF_RC
listen = "127.0.0.1:16300"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:16301"
[cache]
dir = "$W/cache"
[fetch]
proxy = $proxy
[[upstreams]]
host = "docker.io"
url = "http://127.0.0.1:15000"
default = true
EOF_RC
        "$R" serve --config "$W/regcache.toml" > "$W/regcache-$mode.log" 2>&1 &
        RC=$!
        for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:16301/readyz && break; sleep 0.1; done
        tp0=$(cpu $TP)
        start=$(date +%s.%N)
        out=$(python3 "$KIT/fetch.py" http://127.0.0.1:16300 library/big:latest)
        end=$(date +%s.%N)
        ok=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
        printf '%-6s run %s: wall %.2f s, regcache %s CPU-s, tinyproxy %s CPU-s, verified %s\n' \
            "$mode" "$run" "$(echo "$end - $start" | bc)" "$(secs "$(cpu $RC)")" \
            "$(secs $(($(cpu $TP) - tp0)))" "$ok"
        kill $RC && wait $RC 2>/dev/null || true
        RC=""
    done
done
