#!/usr/bin/env bash
# benches/tag-economy.sh: what repeated pulls of one cached tag cost the upstream, and how cached
# pulls fare with the upstream down, for regcache beside distribution in proxy mode. Loopback only.
#
#   benches/tag-economy.sh            # ~2 min; prints a Markdown table, raw lines in $W
#
# It uses the external benchmark kit in place (BENCH_KIT, default ../shared/bench relative to the
# repository root): its upstream (distribution + Docker-Hub-like token server), its test images
# and its distribution-proxy peer. Nothing of the kit is part of this repository.
#
# Knobs: PULLS [1000], W [/tmp/regcache-bench/tag-economy], PORT_BASE [19000],
#        REGCACHE_BIN [target/release/regcache], SKIP_BUILD=1.
#
# One "pull" of the tag = what a containerd client sends to resolve it: HEAD of the manifest by
# tag, then GET of the manifest by digest. Counted from the upstream's access log:
#   1. PULLS pulls within the tag TTL (regcache tag_ttl = 1h): manifest requests upstream.
#   2. PULLS pulls with every tag expired (regcache tag_ttl = 0s): one revalidation per pull.
#   3. upstream stopped: PULLS pulls; share that succeed, p50/p99 latency.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_KIT="${BENCH_KIT:-$ROOT/../shared/bench}"
PULLS="${PULLS:-1000}"
W="${W:-${BENCH_WORK:-/tmp/regcache-bench}/tag-economy}"
PORT_BASE="${PORT_BASE:-19000}"
UP_PORT=$PORT_BASE
RC_PORT=$((PORT_BASE + 100))
RC_ADMIN=$((PORT_BASE + 101))
DP_PORT=$((PORT_BASE + 200))
REGCACHE_BIN="${REGCACHE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/regcache}"
ACCEPT="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

[[ -x "$BENCH_KIT/upstream.sh" ]] || { echo "benchmark kit not found at $BENCH_KIT (set BENCH_KIT)" >&2; exit 2; }
mkdir -p "$W"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi

cleanup() {
  [[ -f "$W/regcache.pid" ]] && kill "$(cat "$W/regcache.pid")" 2>/dev/null || true
  "$BENCH_KIT/peer.sh" stop distribution-proxy "$W/dp" >/dev/null 2>&1 || true
  "$BENCH_KIT/upstream.sh" stop "$W/up" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BENCH_KIT/upstream.sh" start "$W/up" "$UP_PORT" --auth token >/dev/null
BENCH_WORK="$W" "$BENCH_KIT/make-images.py" --registry "127.0.0.1:$UP_PORT" --creds admin:admin-secret \
  --only small --workdir "$W/images" > "$W/pushed.json"
"$BENCH_KIT/peer.sh" start distribution-proxy "$W/dp" "$DP_PORT" "http://127.0.0.1:$UP_PORT" >/dev/null

start_regcache() { # $1 = tag_ttl; keeps the cache between starts
  [[ -f "$W/regcache.pid" ]] && { kill "$(cat "$W/regcache.pid")" 2>/dev/null || true; sleep 0.5; }
  cat > "$W/regcache.toml" <<EOF
listen = "127.0.0.1:$RC_PORT"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:$RC_ADMIN"
[log]
level = "warn"
[cache]
dir = "$W/regcache-cache"
tag_ttl = "$1"
[fetch]
breaker_threshold = 3
breaker_probe_interval = "1h"
[[upstreams]]
host = "docker.io"
url = "http://127.0.0.1:$UP_PORT"
default = true
EOF
  "$REGCACHE_BIN" serve --config "$W/regcache.toml" 2>>"$W/regcache.log" &
  echo $! > "$W/regcache.pid"
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$RC_ADMIN/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "regcache did not start" >&2; exit 1
}

upstream_manifest_requests() { grep -c '/manifests/' "$W/up/access.log" 2>/dev/null || true; }

# One containerd-style pull of library/alpine:latest; prints "ok seconds" or "fail seconds".
pull_once() { # $1 = port
  local t0 t1 digest
  t0=$(date +%s.%N)
  digest=$(curl -sfI -H "Accept: $ACCEPT" "http://127.0.0.1:$1/v2/library/alpine/manifests/latest" \
    | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest" {print $2}') || true
  if [[ -n "$digest" ]] && curl -sf -o /dev/null -H "Accept: $ACCEPT" "http://127.0.0.1:$1/v2/library/alpine/manifests/$digest"; then
    t1=$(date +%s.%N); echo "ok $(echo "$t1 - $t0" | bc)"
  else
    t1=$(date +%s.%N); echo "fail $(echo "$t1 - $t0" | bc)"
  fi
}

loop() { # $1 = port, $2 = label -> raw lines in $W/$2.txt
  : > "$W/$2.txt"
  for _ in $(seq 1 "$PULLS"); do pull_once "$1" >> "$W/$2.txt"; done
}

settle() { sleep 1; }

summary() { # $1 = label -> "ok/total p50 p99" (ms, nearest-rank percentiles)
  local n ok
  n=$(wc -l < "$W/$1.txt")
  ok=$(grep -c '^ok ' "$W/$1.txt" || true)
  sort -n -k2 "$W/$1.txt" | awk -v n="$n" -v ok="$ok" '
    { t[NR] = $2 }
    END {
      r50 = int((n * 50 + 99) / 100); r99 = int((n * 99 + 99) / 100);
      printf "%d/%d %.1f %.1f", ok, n, t[r50] * 1000, t[r99] * 1000
    }'
}

declare -A UPREQ
measure() { # $1 = port, $2 = label
  pull_once "$1" >/dev/null   # warm the cache (not counted)
  settle
  local before after
  before=$(upstream_manifest_requests)
  loop "$1" "$2"
  settle
  after=$(upstream_manifest_requests)
  UPREQ[$2]=$((after - before))
}

start_regcache 1h
measure "$RC_PORT" rc-within-ttl
measure "$DP_PORT" dp-default
start_regcache 0s
measure "$RC_PORT" rc-expired
heads_expired=$(grep '/manifests/' "$W/up/access.log" | tail -n "${UPREQ[rc-expired]}" | grep -c '"HEAD ' || true)

# The upstream goes away: every tag is stale in regcache (tag_ttl = 0s).
"$BENCH_KIT/upstream.sh" stop "$W/up" >/dev/null
loop "$RC_PORT" rc-down
loop "$DP_PORT" dp-down

{
  echo "Tag economy: $PULLS containerd-style pulls (HEAD by tag + GET by digest) of library/alpine:latest; $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "| scenario | mirror | upstream manifest requests | per pull |"
  echo "| --- | --- | ---: | ---: |"
  echo "| within tag TTL (1h) | regcache | ${UPREQ[rc-within-ttl]} | $(echo "scale=3; ${UPREQ[rc-within-ttl]} / $PULLS" | bc) |"
  echo "| every pull after expiry (TTL 0s) | regcache | ${UPREQ[rc-expired]} (${heads_expired} HEAD) | $(echo "scale=3; ${UPREQ[rc-expired]} / $PULLS" | bc) |"
  echo "| default settings | distribution-proxy | ${UPREQ[dp-default]} | $(echo "scale=3; ${UPREQ[dp-default]} / $PULLS" | bc) |"
  echo
  echo "| upstream stopped | mirror | pulls ok | p50 ms | p99 ms |"
  echo "| --- | --- | ---: | ---: | ---: |"
  read -r ok p50 p99 <<<"$(summary rc-down)"; echo "| all tags stale | regcache | $ok | $p50 | $p99 |"
  read -r ok p50 p99 <<<"$(summary dp-down)"; echo "| - | distribution-proxy | $ok | $p50 | $p99 |"
} | tee "$W/summary.md"
