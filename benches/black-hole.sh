#!/usr/bin/env bash
# benches/black-hole.sh: pulls through regcache when its upstream accepts connections and never
# answers (a hung registry, a broken proxy, a half-dead NAT). Loopback only.
#
#   benches/black-hole.sh            # ~1 min; prints a Markdown table, raw lines in $W
#
# It uses the external benchmark kit in place (BENCH_KIT, default ../shared/bench relative to the
# repository root): its upstream (distribution + Docker-Hub-like token server), its test images
# and its verifying client fetch.py. Nothing of the kit is part of this repository.
#
# Knobs: PULLS [5], W [/tmp/regcache-bench/black-hole], PORT_BASE [19500],
#        REGCACHE_BIN [target/release/regcache], SKIP_BUILD=1.
#
# regcache runs with its default [fetch] and [cache] settings except tag_ttl = 1s, so every
# pull below finds its tag stale and would revalidate:
#   1. library/alpine:latest is pulled once (manifest, config, layers) while the upstream works;
#   2. the registry and its token server are stopped, and a listener that accepts every
#      connection on both ports and never answers takes their place;
#   3. PULLS full pulls of library/alpine:latest, each timed (the first waits for the
#      revalidation deadline, later ones should not);
#   4. one pull of library/multi:latest, never cached: it must fail, and fast.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH_KIT="${BENCH_KIT:-$ROOT/../shared/bench}"
PULLS="${PULLS:-5}"
W="${W:-${BENCH_WORK:-/tmp/regcache-bench}/black-hole}"
PORT_BASE="${PORT_BASE:-19500}"
UP_PORT=$PORT_BASE
TOKEN_PORT=$((PORT_BASE + 1))
RC_PORT=$((PORT_BASE + 100))
RC_ADMIN=$((PORT_BASE + 101))
REGCACHE_BIN="${REGCACHE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/regcache}"

[[ -x "$BENCH_KIT/upstream.sh" ]] || { echo "benchmark kit not found at $BENCH_KIT (set BENCH_KIT)" >&2; exit 2; }
rm -rf "$W"
mkdir -p "$W"

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  (cd "$ROOT" && cargo build --release --quiet)
fi

cleanup() {
  [[ -f "$W/regcache.pid" ]] && kill "$(cat "$W/regcache.pid")" 2>/dev/null || true
  [[ -f "$W/hole.pid" ]] && kill "$(cat "$W/hole.pid")" 2>/dev/null || true
  "$BENCH_KIT/upstream.sh" stop "$W/up" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BENCH_KIT/upstream.sh" start "$W/up" "$UP_PORT" --auth token >/dev/null
BENCH_WORK="$W" "$BENCH_KIT/make-images.py" --registry "127.0.0.1:$UP_PORT" --creds admin:admin-secret \
  --only small,multi --workdir "$W/images" > "$W/pushed.json"

cat > "$W/regcache.toml" <<EOF
listen = "127.0.0.1:$RC_PORT"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:$RC_ADMIN"
[log]
level = "warn"
[cache]
dir = "$W/regcache-cache"
tag_ttl = "1s"
[[upstreams]]
host = "docker.io"
url = "http://127.0.0.1:$UP_PORT"
default = true
EOF
"$REGCACHE_BIN" serve --config "$W/regcache.toml" 2>>"$W/regcache.log" &
echo $! > "$W/regcache.pid"
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$RC_ADMIN/readyz" >/dev/null && break; sleep 0.1; done

fetch() { # $1 = image -> one JSON line; never fails the script
  python3 "$BENCH_KIT/fetch.py" "http://127.0.0.1:$RC_PORT" "$1" --timeout 120 || true
}

fetch library/alpine:latest > "$W/warm.json"
grep -q '"ok": true' "$W/warm.json" || { echo "the first pull failed: $(cat "$W/warm.json")" >&2; exit 1; }

"$BENCH_KIT/upstream.sh" stop "$W/up" >/dev/null
python3 - "$UP_PORT" "$TOKEN_PORT" > "$W/hole.log" 2>&1 <<'EOF' &
# Accepts every connection on the given loopback ports, reads what arrives, never answers.
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in sys.argv[1:]:
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(port))); s.listen(1024); sel.register(s, selectors.EVENT_READ, "listen")
print("black hole up", flush=True)
while True:
    for key, _ in sel.select():
        if key.data == "listen":
            conn, _ = key.fileobj.accept(); sel.register(conn, selectors.EVENT_READ, "conn")
        elif not key.fileobj.recv(65536):
            sel.unregister(key.fileobj); key.fileobj.close()
EOF
echo $! > "$W/hole.pid"
for _ in $(seq 1 50); do grep -q "black hole up" "$W/hole.log" && break; sleep 0.1; done
sleep 1.2 # every tag is now past its 1 s TTL

: > "$W/cached.jsonl"
for _ in $(seq 1 "$PULLS"); do fetch library/alpine:latest >> "$W/cached.jsonl"; done
fetch library/multi:latest > "$W/uncached.json"

field() { python3 -c 'import json,sys; d=json.loads(sys.stdin.read() or "{}"); print(d.get(sys.argv[1], ""))' "$1"; }
{
  echo "Upstream that accepts and never answers: regcache defaults (revalidate_timeout 2s, header_timeout 10s, connect_timeout 10s), tag_ttl 1s; $(nproc) cores; $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo
  echo "| pull | ok | seconds |"
  echo "| --- | --- | ---: |"
  i=0
  while read -r line; do
    i=$((i + 1))
    echo "| cached library/alpine:latest, pull $i | $(field ok <<<"$line") | $(field seconds <<<"$line") |"
  done < "$W/cached.jsonl"
  line=$(cat "$W/uncached.json")
  echo "| uncached library/multi:latest | $(field ok <<<"$line") | $(field seconds <<<"$line") |"
  echo
  echo "uncached pull's error: $(field errors <<<"$line")"
} | tee "$W/summary.md"
