#!/usr/bin/env bash
# benches/serve-bench.sh: what it costs the SERVER to serve one big blob, for regcache beside two
# peer mirrors (distribution in proxy mode, nginx as a caching proxy) and a direct pull from the
# upstream, all in one run. Loopback only (127.0.0.1).
#
#   benches/serve-bench.sh                   # ~10-15 min; Markdown tables in $W/summary.md,
#                                            # raw JSON lines in $W/results.jsonl
#   ROWS=5,6 SKIP_BUILD=1 benches/serve-bench.sh   # only some row groups, binary already built
#   W=... benches/serve-bench.sh report      # re-render summary.md from a finished run's files
#
# It uses the external benchmark kit in place (BENCH_KIT, default ../shared/bench relative to the
# repository root): its upstream (distribution 2.8.2 + Docker-Hub-like token server), its test
# images (make-images.py), its peer mirrors (peer.sh) and its verifying puller fetch.py. Nothing
# of the kit is part of this repository. Needs: curl jq wrk nginx docker-registry skopeo python3.
#
# Knobs (defaults in brackets):
#   W            work dir, wiped at start except W/images (the generated test layers)
#                [${BENCH_WORK:-/tmp/regcache-bench}/serve-bench]
#   PORT_BASE    upstream = PORT_BASE (token server +1), regcache +100 (admin +101),
#                distribution-proxy +200, nginx-cache +300 [21000]
#   BIG          size of the big layer of library/big:latest [512M]
#   ROWS         row groups to run, comma list of 1..7 [1,2,3,4,5,6,7]
#                (4 is measured during 2 and 3: selecting 4 runs them)
#   MIRRORS      mirrors beside the direct reference ["regcache distribution-proxy nginx-cache"]
#   REPS         repetitions of row 1 (medians are reported) [5]
#   SLOW_CONNS, SLOW_RATE, SLOW_SECS   row 5: connections, bytes/s each, seconds [1000, 65536, 20]
#   SLOW_MEM_CAP_MIB  row 5 safety cap: a server whose RSS passes it ends the slow clients early [8192]
#   WRK_SECS     row 6: seconds per wrk run [10]
#   VERIFY=0     skip the untimed verification run
#   REGCACHE_BIN the binary to measure [${CARGO_TARGET_DIR:-target}/release/regcache]
#   SKIP_BUILD=1 do not run `cargo build --release` first
#   TIMEOUT      seconds allowed to one client [600]
#
# Servers: "direct" is the upstream registry itself (its CPU and memory are the registry
# process's; the token server is not counted). regcache runs with a generated config (default
# log level info, tag_ttl 1h); the peers are the kit's, with their own configs. "cold" = the mirror
# is stopped, its cache wiped and it is started again; the OS page cache is not dropped, and
# `sync` runs before every timed run. After every run the script waits until the upstream and the
# server are quiet (access log, upstream reads and server CPU unchanged for 2 s), so background
# work of a mirror (filling its cache, a second upstream fetch) lands in that run's CPU and
# upstream counts.
#
# Rows (the big layer blob = GET /v2/library/big/blobs/<digest>):
#   1. one cold pull of library/big:latest with fetch.py (it hashes every blob), median of REPS;
#      repetitions go round-robin over the servers.
#   2. 8 and 32 concurrent cold pulls of the blob with `curl -o /dev/null`: wall time until all
#      finish, and the upstream's GETs of the blob from its access log (1 = coalesced).
#   3. 8 concurrent warm pulls of the blob, `curl -o /dev/null`: wall time.
#   4. server CPU seconds (utime+stime+cutime+cstime from /proc/PID/stat, summed over nginx's
#      master and its children) per GB delivered to the clients, for the runs of rows 2 and 3.
#   5. SLOW_CONNS connections reading the cached blob at SLOW_RATE for SLOW_SECS (an asyncio client
#      with a small receive buffer that reads a budget every 0.25 s): the server's peak VmRSS
#      (sampled every 0.25 s), VmHWM and thread count, and the wall time of one normal
#      `curl -o /dev/null` of the blob started 5 s in. The server is restarted (cache kept)
#      first so that VmHWM belongs to this run. Summed over processes for nginx.
#   6. `wrk -t2 -c32 -d${WRK_SECS}s` on the manifest by digest and on the tag (cached, within
#      its TTL), with the manifest Accept header: requests/s, latency, upstream requests.
#   7. the last 1 MiB of the cold blob (`curl -r`, size from a HEAD on the upstream): wall
#      time, then (after the server is quiet) the upstream's GETs of the blob and bytes sent.
#   verify (untimed, VERIFY=1): sha256 of the blob fetched cold and warm through each server, of
#      the cold tail range against the upstream's, and a warm fetch.py pull (digest-checked).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[serve-bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- report
# report: $W/summary.md from $W/run.json and $W/results.jsonl (also `serve-bench.sh report`)
report() {
python3 - "$W" <<'PY'
import json, os, statistics, sys
W = sys.argv[1]
run = json.load(open(f"{W}/run.json"))
R = [json.loads(l) for l in open(f"{W}/results.jsonl") if l.strip()]
S = run["servers"].split()
load = [float(x) for x in open(f"{W}/load.log").read().split()] or [0]
med = statistics.median
out = []
p = out.append

def rows(row, **kw):
    return [r for r in R if r["row"] == row and all(r.get(k) == v for k, v in kw.items())]

def f(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"

def ratios(vals, m):  # "÷ direct / ÷ nginx-cache" for server m; vals: server -> number
    q = lambda b: None if vals.get(m) is None or not vals.get(b) else vals[m] / vals[b]
    return f"{f(q('direct'))} / {f(q('nginx-cache'))}"

def table(head, lines, left=1):  # the first `left` columns are text, the rest numbers
    p("| " + " | ".join(head) + " |")
    p("| " + " | ".join(["---"] * left + ["---:"] * (len(head) - left)) + " |")
    for l in lines:
        p("| " + " | ".join(str(x) for x in l) + " |")
    p("")

p(f"Serving benchmark, {run['date']}: regcache `{run['git']}` beside distribution-proxy and nginx-cache (the kit's "
  f"peers) and direct pulls from the upstream (distribution 2.8.2, token auth), loopback, {run['nproc']} cores; "
  f"1-min load average during the run min {min(load):.1f} / median {med(load):.1f} / max {max(load):.1f} "
  f"(other work shares the machine: figures are noisy). Run took {run['elapsed'] // 60} min {run['elapsed'] % 60} s.")
p("")
p(f"Blob: the big layer of `library/big:latest`, `{run['digest'][:19]}…`, {run['size']} bytes ({run['big']}). "
  "\"÷ direct / ÷ nginx\" = this server's figure divided by the direct pull's and by nginx-cache's. "
  "\"up GETs\" = upstream GETs of the blob answered 200/206 (+ those answered 401), from its access log, "
  "counted once the upstream and the server were quiet; for direct they are the clients' own requests.")
p("")

if rows(1):
    p(f"### 1. One cold pull of `library/big:latest` (fetch.py, hashes every blob; median of {run['reps']})")
    p("")
    v = {m: med([r["seconds"] for r in rows(1, mirror=m)]) for m in S if rows(1, mirror=m)}
    table(["server", "seconds (median)", "min – max", "÷ direct / ÷ nginx", "pulls verified"],
          [[m, f(v[m]), f"{f(min(r['seconds'] for r in rows(1, mirror=m)))} – {f(max(r['seconds'] for r in rows(1, mirror=m)))}",
            ratios(v, m), f"{sum(r['ok'] is True for r in rows(1, mirror=m))}/{len(rows(1, mirror=m))}"] for m in v])

def upg(r):
    return f"{r['up_gets']}" + (f" (+{r['up_other']}×401)" if r.get("up_other") else "")

if rows(2):
    p("### 2. N concurrent cold pulls of the blob (`curl -o /dev/null`; wall = first start → last done)")
    p("")
    lines = []
    for n in (8, 32):
        v = {r["mirror"]: r["wall"] for r in rows(2, n=n)}
        lines += [[m, n, f(r["wall"]), ratios(v, m), f"{r['ok']}/{n}", upg(r), f(r["up_bytes"] / 1e9)]
                  for m in S for r in rows(2, mirror=m, n=n)]
    table(["server", "N", "wall s", "÷ direct / ÷ nginx", "clients ok", "up GETs of the blob", "up GB"], lines)

if rows(3):
    p("### 3. 8 concurrent warm pulls of the blob (`curl -o /dev/null`)")
    p("")
    v = {r["mirror"]: r["wall"] for r in rows(3)}
    table(["server", "wall s", "÷ direct / ÷ nginx", "aggregate MB/s", "clients ok", "up GETs"],
          [[m, f(r["wall"]), ratios(v, m), f(r["bytes"] / r["wall"] / 1e6, 0), f"{r['ok']}/8", upg(r)]
           for m in S for r in rows(3, mirror=m)])

if rows(2) or rows(3):
    p("### 4. Server CPU seconds per GB delivered (utime+stime from /proc; nginx: master + workers)")
    p("")
    p("Runs of rows 2 and 3; GB = bytes the clients received / 1e9. A cold run's CPU includes fetching from the "
      "upstream and filling the cache; direct = the upstream registry serving from its disk.")
    p("")
    lines = []
    for label, sel in (("cold ×8", dict(row=2, n=8)), ("cold ×32", dict(row=2, n=32)), ("warm ×8", dict(row=3))):
        v = {r["mirror"]: r["cpu_s"] / (r["bytes"] / 1e9) for r in rows(**sel) if r["bytes"]}
        lines += [[m, label, f(r["cpu_s"]), f(r["bytes"] / 1e9), f(v.get(m), 3), ratios(v, m)]
                  for m in S for r in rows(mirror=m, **sel)]
    table(["server", "run", "CPU s", "GB delivered", "CPU s per GB", "÷ direct / ÷ nginx"], lines, left=2)

if rows(5):
    c, rate, secs = run["slow"]
    p(f"### 5. {c} slow clients ({rate // 1024} KiB/s each, {secs} s) on the cached blob, and one normal pull 5 s in")
    p("")
    p("The server was restarted (cache kept) just before, so VmHWM is this run's peak. RSS and threads are summed "
      "over nginx's processes (shared pages counted in each). \"KiB/s per conn\" = what the slow clients got on average.")
    p("")
    v = {r["mirror"]: r["normal_s"] for r in rows(5)}
    rv = {r["mirror"]: r["peak_rss_kb"] for r in rows(5)}
    table(["server", "conns 200 / open at end", "KiB/s per conn", "RSS before MiB", "peak VmRSS MiB", "VmHWM MiB",
           "RSS ÷ direct / ÷ nginx", "peak threads", "normal pull s", "÷ direct / ÷ nginx", "up GETs"],
          [[m, f"{r['status_200']} / {r['open_at_end']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
            f(r["kibps_per_conn"], 1), f(r["rss0_kb"] / 1024, 1), f(r["peak_rss_kb"] / 1024, 1), f(r["hwm_kb"] / 1024, 1),
            ratios(rv, m) + (" (**capped**)" if r.get("capped") else ""), r["peak_threads"],
            f(r["normal_s"]) + ("" if r["normal_ok"] else f" (**{r['normal_code']}**)"),
            ratios(v, m), r["up_gets"]] for m in S for r in rows(5, mirror=m)])

if rows(6):
    p(f"### 6. Cached manifest requests (`wrk -t2 -c32 -d{run['wrk']}s`, Accept: OCI + Docker manifest types)")
    p("")
    lines = []
    for what in ("digest", "tag"):
        v = {r["mirror"]: r["rps"] for r in rows(6, what=what)}
        lines += [[m, "by digest" if what == "digest" else "by tag (within TTL)", f(r["rps"], 0), ratios(v, m),
                   f(r["p50_ms"]), f(r["p99_ms"]), r["non2xx"] + r["socket_errors"], r["up_requests"]]
                  for m in S for r in rows(6, mirror=m, what=what)]
    table(["server", "manifest", "req/s", "÷ direct / ÷ nginx", "p50 ms", "p99 ms", "non-2xx + socket errors",
           "upstream requests during the run"], lines, left=2)

if rows(7):
    p("### 7. The last 1 MiB of the cold blob (`curl -r`)")
    p("")
    v = {r["mirror"]: r["seconds"] for r in rows(7)}
    table(["server", "seconds", "÷ direct / ÷ nginx", "status", "bytes received", "up GETs of the blob by status",
           "up MB sent"],
          [[m, f(r["seconds"], 3), ratios(v, m), r["code"], r["bytes"], r["up_statuses"].replace("x", "×").replace(",", ", "),
            f(r["up_bytes"] / 1e6, 1)] for m in S for r in rows(7, mirror=m)])

if rows("verify"):
    p("### Verification (untimed): sha256 of what each server sent")
    p("")
    ok = lambda b: "ok" if b is True else "**MISMATCH**"
    tail = lambda r: {"ok": "ok (206)", "whole-blob": f"Range ignored: {r['tail_code']}, whole blob (sha256 ok)"}.get(
        r["tail_range"], f"**MISMATCH** ({r['tail_code']})")
    table(["server", "blob, cold", "blob, warm", "tail 1 MiB, cold", "fetch.py pull, warm"], left=5, lines=
          [[m, ok(r["cold_blob"]), ok(r["warm_blob"]), tail(r), ok(r["fetch_py"])]
           for m in S for r in rows("verify", mirror=m)])

text = "\n".join(out)
open(f"{W}/summary.md", "w").write(text)
print(text)
PY
}

# ---------------------------------------------------------------- settings
BENCH_KIT="${BENCH_KIT:-$ROOT/../shared/bench}"
[[ -x "$BENCH_KIT/upstream.sh" && -x "$BENCH_KIT/peer.sh" && -x "$BENCH_KIT/fetch.py" && -x "$BENCH_KIT/make-images.py" ]] ||
  die "benchmark kit not found at BENCH_KIT=$BENCH_KIT (needs upstream.sh, peer.sh, fetch.py, make-images.py)"
BENCH_KIT="$(cd "$BENCH_KIT" && pwd)"
W="${W:-${BENCH_WORK:-/tmp/regcache-bench}/serve-bench}"
PORT_BASE="${PORT_BASE:-21000}"
UP_PORT=$PORT_BASE RC_PORT=$((PORT_BASE + 100)) RC_ADMIN=$((PORT_BASE + 101))
DP_PORT=$((PORT_BASE + 200)) NG_PORT=$((PORT_BASE + 300))
BIG="${BIG:-512M}"
ROWS="${ROWS:-1,2,3,4,5,6,7}"
MIRRORS="${MIRRORS:-regcache distribution-proxy nginx-cache}"
REPS="${REPS:-5}"
SLOW_CONNS="${SLOW_CONNS:-1000}" SLOW_RATE="${SLOW_RATE:-65536}" SLOW_SECS="${SLOW_SECS:-20}"
SLOW_MEM_CAP_KB=$(( ${SLOW_MEM_CAP_MIB:-8192} * 1024 ))
WRK_SECS="${WRK_SECS:-10}"
VERIFY="${VERIFY:-1}"
TIMEOUT="${TIMEOUT:-600}"
SETTLE=2   # seconds of quiet that end a run (see settle)
REGCACHE_BIN="${REGCACHE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/regcache}"
ACCEPT="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"
SERVERS="direct $MIRRORS"

case "${1:-run}" in
  run) ;;
  report) report; exit 0 ;;   # re-render summary.md from the files in $W
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) die "unknown command $1 (try --help)" ;;
esac

want() { [[ ",$ROWS," == *",$1,"* ]]; }
want 4 && ROWS="$ROWS,2,3"
for m in $MIRRORS; do
  case "$m" in regcache|distribution-proxy|nginx-cache) ;; *) die "unknown mirror $m" ;; esac
done

for c in curl jq wrk nginx docker-registry skopeo python3 sha256sum awk pgrep getconf; do
  command -v "$c" >/dev/null || die "missing command: $c (Debian: apt-get install curl jq wrk nginx docker-registry skopeo procps)"
done
# Row 5 holds SLOW_CONNS sockets in the client and as many in the server (started from here,
# so they inherit this limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(( $(ulimit -n) >= SLOW_CONNS + 1000 )) || die "ulimit -n is $(ulimit -n); row 5 needs at least $((SLOW_CONNS + 1000))"
TCK="$(getconf CLK_TCK)"

mkdir -p "$W"; W="$(cd "$W" && pwd)"
find "$W" -mindepth 1 -maxdepth 1 ! -name images -exec rm -rf {} +
UP="$W/up" RCD="$W/regcache" DP="$W/distribution-proxy" NG="$W/nginx-cache"
RES="$W/results.jsonl"
mkdir -p "$RCD"; : > "$RES"

# ---------------------------------------------------------------- regcache lifecycle
rc_pid() { cat "$RCD/regcache.pid" 2>/dev/null || true; }
rc_stop() {
  local pid i; pid="$(rc_pid)"
  [[ -n "$pid" ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then log "regcache ignored TERM for 10 s: KILL"; kill -KILL "$pid"; sleep 0.2; fi
  rm -f "$RCD/regcache.pid"
}
rc_start() {
  local i
  (exec 3<>"/dev/tcp/127.0.0.1/$RC_PORT") 2>/dev/null && die "port $RC_PORT already in use"
  NO_COLOR=1 "$REGCACHE_BIN" serve --config "$RCD/regcache.toml" >> "$RCD/regcache.log" 2>&1 < /dev/null &
  echo $! > "$RCD/regcache.pid"
  for i in $(seq 1 200); do
    curl -sf -o /dev/null "http://127.0.0.1:$RC_ADMIN/readyz" && return 0
    kill -0 "$(rc_pid)" 2>/dev/null || { tail -20 "$RCD/regcache.log" >&2; die "regcache exited during start"; }
    sleep 0.1
  done
  die "regcache not ready within 20 s (see $RCD/regcache.log)"
}

# ---------------------------------------------------------------- cleanup: every server we start
LOAD_PID="" SAMPLER=""   # our own background samplers
cleanup() {
  local p
  [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null || true
  [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2>/dev/null || true
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done   # clients still running
  rc_stop || true
  "$BENCH_KIT/peer.sh" stop distribution-proxy "$DP" >/dev/null 2>&1 || true
  "$BENCH_KIT/peer.sh" stop nginx-cache "$NG" >/dev/null 2>&1 || true
  "$BENCH_KIT/upstream.sh" stop "$UP" >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
T_START=$(date +%s)

# ---------------------------------------------------------------- build
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --bin regcache) || die "build failed"
fi
[[ -x "$REGCACHE_BIN" ]] || die "no regcache binary at REGCACHE_BIN=$REGCACHE_BIN"
REGCACHE_BIN="$(readlink -f "$REGCACHE_BIN")"

# every 2 s the 1-minute load average: the machine is shared, the report says how busy it was
( while :; do cut -d' ' -f1 /proc/loadavg; sleep 2; done > "$W/load.log" ) &
LOAD_PID=$!

# ---------------------------------------------------------------- servers, uniformly
url_of() {
  case "$1" in
    direct) echo "http://127.0.0.1:$UP_PORT" ;;
    regcache) echo "http://127.0.0.1:$RC_PORT" ;;
    distribution-proxy) echo "http://127.0.0.1:$DP_PORT" ;;
    nginx-cache) echo "http://127.0.0.1:$NG_PORT" ;;
  esac
}
peer_dir() { [[ "$1" == distribution-proxy ]] && echo "$DP" || echo "$NG"; }
peer_port() { [[ "$1" == distribution-proxy ]] && echo "$DP_PORT" || echo "$NG_PORT"; }

# pids_of NAME: the server's process(es), one a line (nginx: the master and its children)
pids_of() {
  local m
  case "$1" in
    direct) cat "$UP/registry.pid" ;;
    regcache) rc_pid ;;
    distribution-proxy) cat "$DP/distribution-proxy.pid" ;;
    nginx-cache) m="$(cat "$NG/nginx.pid")"; echo "$m"; pgrep -P "$m" || true ;;
  esac
}

# cpu_ticks NAME: utime+stime+cutime+cstime summed over the server's processes (clock ticks;
# cutime/cstime hold the children nginx's master has reaped, e.g. its cache loader)
cpu_ticks() {
  local p t=0 c
  for p in $(pids_of "$1"); do
    c="$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13 + $14 + $15}')" || c=0
    t=$((t + ${c:-0}))
  done
  echo "$t"
}

# cold NAME: stop the mirror, wipe its cache, start it (nothing for direct); then sync
cold() {
  case "$1" in
    direct) ;;
    regcache) rc_stop; rm -rf "$RCD/cache"; rc_start ;;
    *) "$BENCH_KIT/peer.sh" reset "$1" "$(peer_dir "$1")" > /dev/null 2>> "$W/kit.log" ;;
  esac
  sync
}

# restart NAME: stop and start the server, keeping its cache and data
restart() {
  case "$1" in
    direct) "$BENCH_KIT/upstream.sh" stop "$UP" 2>> "$W/kit.log"
            "$BENCH_KIT/upstream.sh" start "$UP" "$UP_PORT" --auth token > /dev/null 2>> "$W/kit.log" ;;
    regcache) rc_stop; rc_start ;;
    *) "$BENCH_KIT/peer.sh" stop "$1" "$(peer_dir "$1")" 2>> "$W/kit.log"
       "$BENCH_KIT/peer.sh" start "$1" "$(peer_dir "$1")" "$(peer_port "$1")" "http://127.0.0.1:$UP_PORT" \
         > /dev/null 2>> "$W/kit.log" ;;
  esac
}

# auth NAME: sets AUTH to curl/wrk arguments carrying a Bearer token when the server challenges
# (the upstream, and nginx-cache, which passes the upstream's challenge through); else empty.
# Tokens live ~60 s: call it right before each use.
AUTH=()
auth() {
  local hdr realm service token
  AUTH=()
  hdr="$(curl -s -o /dev/null -D - --max-time 10 "$(url_of "$1")/v2/" | tr -d '\r' | grep -i '^www-authenticate: *bearer' || true)"
  [[ -n "$hdr" ]] || return 0
  realm="$(sed -nE 's/.*realm="([^"]*)".*/\1/p' <<<"$hdr")"; service="$(sed -nE 's/.*service="([^"]*)".*/\1/p' <<<"$hdr")"
  [[ "$realm" == http://127.* ]] || die "refusing token realm $realm"
  token="$(curl -sS --max-time 10 -G "$realm" --data-urlencode "service=$service" \
            --data-urlencode "scope=repository:library/big:pull" | jq -r '.token // .access_token')"
  [[ -n "$token" && "$token" != null ]] || die "no token from $realm"
  AUTH=(-H "Authorization: Bearer $token")
}

# upstream access log: byte offset now, and what happened since an offset
up_off() { stat -c %s "$UP/access.log"; }
# up_blob OFFSET -> "GETs bytes others statuses": GETs of the big blob answered 200/206 since
# OFFSET, body bytes sent for them, GETs of it answered otherwise (401 token challenges), and the
# statuses seen (e.g. "200x1,401x1")
up_blob() {
  tail -c +"$(($1 + 1))" "$UP/access.log" | awk -v p="\"GET $BLOB_PATH " '
    index($0, p) { split($0, a, "\""); split(a[3], s, " ");
                   if (s[1] == 200 || s[1] == 206) { g++; b += s[2] } else o++; st[s[1]]++ }
    END { l = ""; for (k in st) l = l (l == "" ? "" : ",") k "x" st[k];
          printf "%d %.0f %d %s\n", g, b, o, (l == "" ? "none" : l) }'
}
up_requests() { tail -c +"$(($1 + 1))" "$UP/access.log" | wc -l; }

# settle NAME: wait until the upstream's access log and read counter (distribution logs a request
# only when it completes; a mirror may still be filling its cache) and the server's CPU time
# (at most 2 ticks a second) have not moved for SETTLE s; at most 120 s.
settle() {
  local i quiet=0 prev="" cur c pc="" upid
  upid="$(cat "$UP/registry.pid")"
  for i in $(seq 1 120); do
    cur="$(up_off) $(awk '/^rchar/{print $2}' "/proc/$upid/io" 2>/dev/null)"
    c="$(cpu_ticks "$1")"
    if [[ "$cur" == "$prev" ]] && (( c - ${pc:-0} <= 2 )); then
      quiet=$((quiet + 1)); (( quiet >= SETTLE )) && return 0
    else
      quiet=0
    fi
    prev="$cur"; pc="$c"; sleep 1
  done
  log "  warning: $1 or the upstream still busy after 120 s"
}

# rec KEY=VALUE...: one JSON line in results.jsonl (numbers, true/false and {objects} become JSON values)
rec() {
  local kv a=()
  for kv in "$@"; do a+=(--arg "${kv%%=*}" "${kv#*=}"); done
  jq -nc 'reduce ($ARGS.named | to_entries[]) as $e ({}; .[$e.key] = ($e.value as $v | [$v | tonumber?]
           | if length > 0 then .[0] elif $v == "true" then true elif $v == "false" then false
             elif ($v | startswith("{")) then ($v | fromjson) else $v end))' "${a[@]}" >> "$RES"
  log "  $*"
}

now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# curl_many NAME N: N concurrent `curl -o /dev/null` of the big blob; sets R_WALL (first start ->
# last done), R_OK (clients that got all SIZE bytes with a 200) and R_BYTES (bytes they got)
curl_many() {
  local url n="$2" d i t0 t1 code got pids=()
  url="$(url_of "$1")$BLOB_PATH"; auth "$1"
  d="$(mktemp -d "$W/curl.XXXX")"
  t0=$(now)
  for i in $(seq 1 "$n"); do
    curl -sS -o /dev/null --max-time "$TIMEOUT" -w '%{http_code} %{size_download}\n' "${AUTH[@]}" "$url" \
      > "$d/$i" 2> "$d/$i.err" &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  t1=$(now)
  R_WALL="$(dt "$t0" "$t1")" R_OK=0 R_BYTES=0
  for i in $(seq 1 "$n"); do
    read -r code got < "$d/$i" || true
    [[ "$code" == 200 && "$got" == "$SIZE" ]] && R_OK=$((R_OK + 1))
    R_BYTES=$((R_BYTES + ${got:-0}))
  done
  rm -rf "$d"
}

# warm NAME: make sure the blob is in the server's cache (one untimed pull), then wait for quiet
warm() { curl_many "$1" 1; settle "$1"; }

# ---------------------------------------------------------------- upstream, images, servers
log "upstream (token auth) on 127.0.0.1:$UP_PORT"
"$BENCH_KIT/upstream.sh" start "$UP" "$UP_PORT" --auth token > /dev/null 2>> "$W/kit.log"
log "test image library/big:latest (big layer $BIG)"
BENCH_WORK="$W" "$BENCH_KIT/make-images.py" --registry "127.0.0.1:$UP_PORT" --creds admin:admin-secret \
  --only big --big-size "$BIG" --workdir "$W/images" > "$W/pushed.json" 2>> "$W/kit.log"
IMG="$(jq -c '.images[] | select(.repo == "library/big" and .tag == "latest")' "$W/pushed.json")"
MANIFEST="$(jq -r '.digest' <<<"$IMG")"
DIGEST="$(jq -r '.instances[0].layers | max_by(.size) | .digest' <<<"$IMG")"
SIZE="$(jq -r '.instances[0].layers | max_by(.size) | .size' <<<"$IMG")"
[[ "$DIGEST" == sha256:* && "$MANIFEST" == sha256:* && "$SIZE" =~ ^[0-9]+$ ]] || die "big layer not found in $W/pushed.json"
BLOB_PATH="/v2/library/big/blobs/$DIGEST"
log "big layer $DIGEST, $SIZE bytes; manifest $MANIFEST"

cat > "$RCD/regcache.toml" <<EOF
# written by benches/serve-bench.sh
listen = "127.0.0.1:$RC_PORT"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:$RC_ADMIN"
[cache]
dir = "$RCD/cache"
tag_ttl = "1h"
[[upstreams]]
host = "docker.io"
url = "http://127.0.0.1:$UP_PORT"
default = true
EOF
"$REGCACHE_BIN" check-config --config "$RCD/regcache.toml" > /dev/null || die "regcache rejects $RCD/regcache.toml"
for m in $MIRRORS; do
  case "$m" in
    regcache) rc_start ;;
    *) "$BENCH_KIT/peer.sh" start "$m" "$(peer_dir "$m")" "$(peer_port "$m")" "http://127.0.0.1:$UP_PORT" \
         > /dev/null 2>> "$W/kit.log" ;;
  esac
done
for m in $SERVERS; do
  for p in $(pids_of "$m"); do [[ -r "/proc/$p/stat" ]] || die "$m: no process $p"; done
  log "$m on $(url_of "$m"), pid(s) $(pids_of "$m" | tr '\n' ' ')"
done

# ---------------------------------------------------------------- 1. one cold pull, fetch.py
if want 1; then
  log "row 1: one cold fetch.py pull, $REPS repetitions round-robin"
  for rep in $(seq 1 "$REPS"); do
    for m in $SERVERS; do
      cold "$m"; settle "$m"
      out="$(python3 "$BENCH_KIT/fetch.py" "$(url_of "$m")" library/big:latest --timeout "$TIMEOUT" || true)"
      settle "$m"
      rec row=1 mirror="$m" rep="$rep" seconds="$(jq -r '.seconds // 0' <<<"$out")" \
        ok="$(jq -r '.ok // false' <<<"$out")" bytes="$(jq -r '.bytes // 0' <<<"$out")"
    done
  done
fi

# ---------------------------------------------------------------- 2 (+4). N cold pulls, curl
if want 2; then
  for n in 8 32; do
    log "row 2: $n concurrent cold pulls of the blob"
    for m in $SERVERS; do
      cold "$m"; settle "$m"
      off=$(up_off); c0=$(cpu_ticks "$m")
      curl_many "$m" "$n"
      settle "$m"
      c1=$(cpu_ticks "$m"); read -r gets ubytes others statuses <<<"$(up_blob "$off")"
      rec row=2 mirror="$m" n="$n" wall="$R_WALL" ok="$R_OK" bytes="$R_BYTES" \
        cpu_s="$(awk -v a="$c0" -v b="$c1" -v t="$TCK" 'BEGIN { printf "%.2f", (b - a) / t }')" \
        up_gets="$gets" up_bytes="$ubytes" up_other="$others" up_statuses="$statuses"
    done
  done
fi

# ---------------------------------------------------------------- 3 (+4). 8 warm pulls, curl
if want 3; then
  log "row 3: 8 concurrent warm pulls of the blob"
  for m in $SERVERS; do
    warm "$m"; sync
    off=$(up_off); c0=$(cpu_ticks "$m")
    curl_many "$m" 8
    settle "$m"
    c1=$(cpu_ticks "$m"); read -r gets ubytes others statuses <<<"$(up_blob "$off")"
    rec row=3 mirror="$m" n=8 wall="$R_WALL" ok="$R_OK" bytes="$R_BYTES" \
      cpu_s="$(awk -v a="$c0" -v b="$c1" -v t="$TCK" 'BEGIN { printf "%.2f", (b - a) / t }')" \
      up_gets="$gets" up_bytes="$ubytes" up_other="$others" up_statuses="$statuses"
  done
fi

# ---------------------------------------------------------------- 5. slow clients
# The slow client: SLOW_CONNS connections, each sends the GET and then reads at most RATE/4
# bytes every 0.25 s through a small receive buffer, so that the server (not the client's
# kernel) holds what is not read yet. Prints one JSON line of counts.
SLOW_PY='
import asyncio, json, socket, sys, time
host, port, path, secs, n, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(h + "\r\n" for h in sys.argv[7:]) + "\r\n").encode()
st = {"conns": n, "opened": 0, "status_200": 0, "open_at_end": 0, "failed": 0, "bytes": 0, "errors": {}}
async def one(end):
    loop = asyncio.get_running_loop(); s = socket.socket(); first = True
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384); s.setblocking(False)
    try:
        await loop.sock_connect(s, (host, port)); await loop.sock_sendall(s, req); st["opened"] += 1
        while time.monotonic() < end:
            tick, budget = time.monotonic(), rate // 4
            while budget > 0:
                b = await asyncio.wait_for(loop.sock_recv(s, min(budget, 16384)), max(0.01, end - time.monotonic()))
                if not b: raise EOFError("closed by the server")
                if first: st["status_200"] += b.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")); first = False
                st["bytes"] += len(b); budget -= len(b)
            await asyncio.sleep(max(0, tick + 0.25 - time.monotonic()))
        st["open_at_end"] += 1
    except asyncio.TimeoutError: st["open_at_end"] += 1   # open, waiting for bytes at the end
    except Exception as e: st["failed"] += 1; st["errors"][type(e).__name__] = st["errors"].get(type(e).__name__, 0) + 1
    finally: s.close()
async def main():
    t0 = time.monotonic(); end = t0 + secs; tasks = []
    for i in range(n):   # open them over ~1 s, 50 at a time
        tasks.append(asyncio.create_task(one(end)))
        if i % 50 == 49: await asyncio.sleep(0.05)
    await asyncio.gather(*tasks)
    st["KiBps_per_conn"] = round(st["bytes"] / 1024 / (time.monotonic() - t0) / max(1, st["opened"]), 1)
    print(json.dumps(st))
asyncio.run(main())
'

# mem_sample NAME CLIENTPID: every 0.25 s, "VmRSS_kB Threads" summed over the server's
# processes; a safety cap: past SLOW_MEM_CAP the slow client CLIENTPID is stopped ("capped" line)
mem_sample() {
  local p line rss thr
  while :; do
    rss=0 thr=0
    for p in $(pids_of "$1"); do
      line="$(awk '/^VmRSS:/ { r = $2 } /^Threads:/ { t = $2 } END { print r + 0, t + 0 }' "/proc/$p/status" 2>/dev/null)" || line="0 0"
      rss=$((rss + ${line% *})) thr=$((thr + ${line#* }))
    done
    echo "$rss $thr"
    if (( rss > SLOW_MEM_CAP_KB )) && kill -0 "$2" 2>/dev/null; then kill "$2"; echo capped; fi
    sleep 0.25
  done
}
status_sum() { # NAME FIELD: a /proc/PID/status field (kB) summed over the server's processes
  local p t=0 v
  for p in $(pids_of "$1"); do v="$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null)"; t=$((t + ${v:-0})); done
  echo "$t"
}

if want 5; then
  log "row 5: $SLOW_CONNS slow clients at $SLOW_RATE B/s for $SLOW_SECS s, one normal pull 5 s in"
  for m in $SERVERS; do
    warm "$m"; restart "$m"; settle "$m"
    rss0=$(status_sum "$m" VmRSS); off=$(up_off)
    auth "$m"
    python3 -c "$SLOW_PY" 127.0.0.1 "$(url_of "$m" | sed 's/.*://')" "$BLOB_PATH" "$SLOW_SECS" "$SLOW_CONNS" \
      "$SLOW_RATE" "${AUTH[@]:1}" > "$W/slow-$m.json" 2> "$W/slow-$m.err" &
    slow=$!
    mem_sample "$m" "$slow" > "$W/mem-$m.txt" &
    SAMPLER=$!
    sleep 5
    normal="$(curl -sS -o /dev/null --max-time "$TIMEOUT" -w '%{http_code} %{size_download} %{time_total}' \
               "${AUTH[@]}" "$(url_of "$m")$BLOB_PATH" 2>> "$W/slow-$m.err" || true)"
    wait "$slow" || true
    kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
    hwm=$(status_sum "$m" VmHWM)
    read -r peak_rss peak_thr <<<"$(awk '/^[0-9]/ && $1 > r { r = $1 } /^[0-9]/ && $2 > t { t = $2 } END { print r + 0, t + 0 }' "$W/mem-$m.txt")"
    capped=false; grep -q '^capped' "$W/mem-$m.txt" && { capped=true; log "  $m passed SLOW_MEM_CAP: slow clients stopped early"; }
    read -r ncode nbytes nsecs <<<"$normal"
    s="$(cat "$W/slow-$m.json" 2>/dev/null)"; [[ -n "$s" ]] || s='{}'
    settle "$m"; read -r gets _ _ _ <<<"$(up_blob "$off")"
    rec row=5 mirror="$m" conns="$SLOW_CONNS" rate="$SLOW_RATE" secs="$SLOW_SECS" \
      opened="$(jq -r '.opened // 0' <<<"$s")" status_200="$(jq -r '.status_200 // 0' <<<"$s")" \
      open_at_end="$(jq -r '.open_at_end // 0' <<<"$s")" failed="$(jq -r '.failed // 0' <<<"$s")" \
      errors="$(jq -c '.errors // {}' <<<"$s")" kibps_per_conn="$(jq -r '.KiBps_per_conn // 0' <<<"$s")" \
      rss0_kb="$rss0" peak_rss_kb="$peak_rss" hwm_kb="$hwm" peak_threads="$peak_thr" \
      normal_code="${ncode:-000}" normal_ok="$([[ "${ncode:-}" == 200 && "${nbytes:-}" == "$SIZE" ]] && echo true || echo false)" \
      normal_s="${nsecs:-0}" up_gets="$gets" capped="$capped"
  done
fi

# ---------------------------------------------------------------- 6. cached manifests, wrk
if want 6; then
  log "row 6: wrk -t2 -c32 -d${WRK_SECS}s on the manifest by digest and by tag"
  for m in $SERVERS; do
    for what in digest tag; do
      ref="$MANIFEST"; [[ "$what" == tag ]] && ref=latest
      u="$(url_of "$m")/v2/library/big/manifests/$ref"
      auth "$m"
      code="$(curl -s -o /dev/null -w '%{http_code}' -H "Accept: $ACCEPT" "${AUTH[@]}" "$u")"   # cache it
      [[ "$code" == 200 ]] || log "  warning: $m $what answered $code before wrk"
      settle "$m"; off=$(up_off)
      out="$(wrk -t2 -c32 -d"${WRK_SECS}s" --latency -H "Accept: $ACCEPT" "${AUTH[@]}" "$u" 2>&1 || true)"
      echo "$out" > "$W/wrk-$m-$what.txt"
      read -r rps total non2xx errs p50 p99 <<<"$(awk '
        function ms(x) { if (x ~ /us$/) return x / 1000; if (x ~ /ms$/) return x + 0; if (x ~ /m$/) return x * 60000; return x * 1000 }
        /^Requests\/sec:/ { rps = $2 } / requests in / { total = $1 } /Non-2xx or 3xx/ { bad = $NF }
        /Socket errors:/ { gsub(/,/, ""); errs = $4 + $6 + $8 + $10 }
        $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
        END { printf "%s %s %d %d %s %s\n", rps + 0, total + 0, bad, errs, p50 + 0, p99 + 0 }' <<<"$out")"
      settle "$m"
      rec row=6 mirror="$m" what="$what" rps="$rps" requests="$total" non2xx="$non2xx" socket_errors="$errs" \
        p50_ms="$p50" p99_ms="$p99" up_requests="$(up_requests "$off")"
    done
  done
fi

# ---------------------------------------------------------------- 7. cold tail range
TAIL=1048576
if want 7 || [[ "$VERIFY" == 1 ]]; then
  auth direct
  HSIZE="$(curl -sS -I "${AUTH[@]}" "http://127.0.0.1:$UP_PORT$BLOB_PATH" | tr -d '\r' | awk -F': ' 'tolower($1) == "content-length" { print $2 }')"
  [[ "$HSIZE" == "$SIZE" ]] || die "HEAD of the blob says $HSIZE bytes, pushed.json $SIZE"
  RANGE="$((HSIZE - TAIL))-$((HSIZE - 1))"
fi
if want 7; then
  log "row 7: the last 1 MiB of the cold blob (Range: bytes=$RANGE)"
  for m in $SERVERS; do
    cold "$m"; settle "$m"
    off=$(up_off); auth "$m"
    read -r code got secs <<<"$(curl -sS -o /dev/null -r "$RANGE" --max-time "$TIMEOUT" "${AUTH[@]}" \
      -w '%{http_code} %{size_download} %{time_total}' "$(url_of "$m")$BLOB_PATH" || true)"
    settle "$m"
    read -r gets ubytes others statuses <<<"$(up_blob "$off")"
    rec row=7 mirror="$m" seconds="${secs:-0}" code="${code:-000}" bytes="${got:-0}" \
      up_gets="$gets" up_bytes="$ubytes" up_other="$others" up_statuses="$statuses"
  done
fi

# ---------------------------------------------------------------- verification (untimed)
if [[ "$VERIFY" == 1 ]]; then
  log "verify: sha256 of the blob (cold, warm) and of the cold tail range through each server"
  # blob_sha NAME [CURL ARGS]: "STATUS SHA256HEX" of the blob (or of the range asked for)
  blob_sha() {
    local sha
    auth "$1"
    sha="$(curl -sS --max-time "$TIMEOUT" -D "$W/verify.headers" "${AUTH[@]}" "${@:2}" "$(url_of "$1")$BLOB_PATH" \
           | sha256sum | cut -d' ' -f1)"
    echo "$(tr -d '\r' < "$W/verify.headers" | awk '/^HTTP\// { s = $2 } END { print s + 0 }') $sha"
  }
  read -r _ tail_ref <<<"$(blob_sha direct -r "$RANGE")"
  for m in $SERVERS; do
    cold "$m"; read -r _ c <<<"$(blob_sha "$m")"; settle "$m"
    read -r _ w <<<"$(blob_sha "$m")"
    f="$( (python3 "$BENCH_KIT/fetch.py" "$(url_of "$m")" library/big:latest --timeout "$TIMEOUT" || true) | jq -r '.ok // false')"
    cold "$m"; read -r tcode t <<<"$(blob_sha "$m" -r "$RANGE")"; settle "$m"
    # the tail: the upstream's last 1 MiB (206), or the whole blob (a 200 that ignored Range)
    if [[ "$tcode" == 206 && "$t" == "$tail_ref" ]]; then tail_v=ok
    elif [[ "$tcode" == 200 && "sha256:$t" == "$DIGEST" ]]; then tail_v=whole-blob
    else tail_v=mismatch; fi
    rec row=verify mirror="$m" cold_blob="$([[ "sha256:$c" == "$DIGEST" ]] && echo true || echo false)" \
      warm_blob="$([[ "sha256:$w" == "$DIGEST" ]] && echo true || echo false)" \
      tail_range="$tail_v" tail_code="$tcode" fetch_py="$f"
  done
fi

# ---------------------------------------------------------------- report
jq -n --arg digest "$DIGEST" --arg manifest "$MANIFEST" --argjson size "$SIZE" --arg big "$BIG" \
  --arg git "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')" \
  --arg bin "$REGCACHE_BIN" --argjson elapsed "$(( $(date +%s) - T_START ))" --arg servers "$SERVERS" \
  --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" --argjson nproc "$(nproc)" --argjson reps "$REPS" \
  --argjson slow "[$SLOW_CONNS, $SLOW_RATE, $SLOW_SECS]" --argjson wrk "$WRK_SECS" \
  '$ARGS.named' > "$W/run.json"
report
log "summary: $W/summary.md; raw JSON lines: $RES"
