#!/usr/bin/env bash
# benches/pull-bench.sh: cold/warm pull benchmark of regcache against a direct upstream pull and
# two peer mirrors (distribution in proxy mode, nginx as a caching proxy), on loopback only.
#
#   benches/pull-bench.sh            # build, start everything, measure, write BENCHMARKS.md, stop
#   benches/pull-bench.sh regcache-reset DIR   # (used as the cold-run reset command) stop the
#                                              # regcache started in DIR, wipe its cache, start it again
#   benches/pull-bench.sh regcache-start|regcache-stop DIR   # the same without wiping
#   benches/pull-bench.sh report     # re-render summary.md / BENCHMARKS.md from the files in W
#
# It needs the external benchmark kit (upstream registry + token server, test images, peer
# mirrors, the pull-bench engine). The kit is NOT part of this repository; it is used in place:
#   BENCH_KIT    where the kit lives (default: ../shared/bench relative to the repo root)
# and its requirements: docker-registry skopeo nginx jq curl python3 (see the kit's README).
#
# Environment knobs (defaults in brackets):
#   W            work dir for all state, logs and results [$BENCH_WORK/regcache-pull-bench,
#                BENCH_WORK defaulting to /tmp/regcache-bench]
#   BIG          size of the big layer of library/big:latest [512M]
#   CONC         concurrent clients, comma list [1,8,32]
#   PEER_WARM_CONC  the N (subset of CONC) at which the peers also get a hashed warm pull-bench
#                run [1,8]; regcache gets one at every N, and every mirror gets the cheap
#                `curl -o /dev/null` warm throughput run at every N ("" = none; "$CONC" = all)
#   ROUNDS_N1    interleaved rounds (direct, then every mirror) at N = 1, where single samples
#                are most sensitive to machine load; medians are reported [1]
#   REPEAT       repetitions of every pull-bench run (medians are reported) [1]
#   MIRRORS      which mirrors to run ["regcache distribution-proxy nginx-cache"]
#   PORT_BASE    upstream = PORT_BASE (token server +1), regcache +100, distribution-proxy +200,
#                nginx-cache +300, regcache's admin listener +101 [18000; keep all of them below
#                the ephemeral port range (32768+), or an outgoing connection may hold one]
#   REGCACHE_BIN the binary to benchmark [${CARGO_TARGET_DIR:-target}/release/regcache]
#   SKIP_BUILD=1 do not run `cargo build --release` first
#   BENCH_MD     Markdown file whose generated section is replaced [BENCHMARKS.md at the repo root]
#                (set BENCH_MD=none to write only $W/summary.md)
#   KEEP=1       leave upstream and mirrors running at the end
#   RUST_LOG     regcache's log filter [info]
#   TIMEOUT      seconds allowed to one client pull [600]
#
# Measured, for the big layer blob of library/big:latest (GET /v2/library/big/blobs/<digest>):
#   * cold and warm pulls through each mirror with N concurrent `curl | sha256sum` clients
#     (the kit's pull-bench.sh --client curl; "cold" = stop, wipe cache, restart first), with the
#     upstream's GETs of the blob counted from its access log;
#   * the same pull directly from the upstream (reference);
#   * warm throughput with N concurrent `curl -o /dev/null` (no hashing on the client side);
#   * regcache's VmHWM (peak RSS) after each cold and warm run (it is restarted by every cold run).
# Outputs: $W/results.jsonl (pull-bench rows), $W/tput.jsonl, $W/rss.jsonl, $W/machine.json,
# $W/summary.md, $W/evidence/ (regcache log + upstream access-log lines of every regcache run).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/benches/pull-bench.sh"
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- regcache lifecycle
# DIR holds regcache.toml, port, bin, regcache.pid, regcache.log and cache/.
rc_pid() { local f="$1/regcache.pid"; [[ -s "$f" ]] && cat "$f"; }

rc_alive() { local p; p="$(rc_pid "$1")" && [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

rc_stop() {
  local dir="$1" pid i
  pid="$(rc_pid "$dir")" || return 0
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "regcache (pid $pid) ignored TERM for 10 s, sending KILL"
      echo "=== $(date +%FT%T) bench: regcache pid $pid did not stop on TERM within 10 s; KILL" >> "$dir/regcache.log"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$dir/regcache.pid"
}

rc_start() {
  local dir="$1" port bin i
  port="$(cat "$dir/port")"; bin="$(cat "$dir/bin")"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then die "port $port already in use"; fi
  echo "=== $(date +%FT%T) bench: start $bin serve --config $dir/regcache.toml" >> "$dir/regcache.log"
  RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 setsid "$bin" serve --config "$dir/regcache.toml" \
    >> "$dir/regcache.log" 2>&1 < /dev/null &
  echo $! > "$dir/regcache.pid"
  for i in $(seq 1 200); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/v2/" 2>/dev/null)" == 200 ]]; then
      return 0
    fi
    rc_alive "$dir" || { tail -20 "$dir/regcache.log" >&2; die "regcache exited during start"; }
    sleep 0.1
  done
  tail -20 "$dir/regcache.log" >&2
  die "regcache did not answer GET /v2/ on 127.0.0.1:$port within 20 s"
}

rc_reset() {
  local dir="$1"
  rc_stop "$dir"
  rm -rf "$dir/cache"
  rc_start "$dir"
}

# report W MD: render $W/summary.md from the raw files of a run (and replace the generated
# section of MD unless MD is "none")
report() {
python3 - "$1" "$2" <<'PY'
import json, os, re, statistics, sys
W, md_path = sys.argv[1:]
run = json.load(open(os.path.join(W, "run.json")))
digest, size, big, conc = run["digest"], int(run["size"]), run["big"], run["conc"]
elapsed, fails = int(run["elapsed_s"]), int(run["fails"])
Ns = [int(x) for x in conc.split(",") if x]
nmax = max(Ns)
med = statistics.median
load = lambda p: [json.loads(l) for l in open(os.path.join(W, p)) if l.strip()] if os.path.exists(os.path.join(W, p)) else []
rows, tput, rss = load("results.jsonl"), load("tput.jsonl"), load("rss.jsonl")
machine = json.load(open(os.path.join(W, "machine.json")))
loadlog = [l.split() for l in open(os.path.join(W, "load.log")) if len(l.split()) == 3] if os.path.exists(os.path.join(W, "load.log")) else []
MIRRORS = ["direct", "regcache", "distribution-proxy", "nginx-cache"]

def pb(m, phase, n):
    rs = [r for r in rows if r["mirror"] == m and r["phase"] == phase and r["concurrency"] == n]
    if not rs:
        return None
    up = [r.get("upstream") or {} for r in rs]
    return {"wall": med([r["wall_s"] for r in rs]),
            "mbps": med([r["MBps_aggregate"] or 0 for r in rs]),
            "ok": min(r["ok_clients"] for r in rs), "n": n,
            "gets": max(u.get("blob_gets_per_digest", {}).get(digest, 0) for u in up),
            # blob GETs that did not transfer it (401 token challenges): only this blob is pulled
            "other": max(u.get("blob_get", 0) - u.get("blob_gets_per_digest", {}).get(digest, 0) for u in up),
            "up_mb": med([u.get("bytes_served", 0) for u in up]) / 1e6,
            "reps": len(rs)}

def tp(m, n):
    rs = [r for r in tput if r["mirror"] == m and r["concurrency"] == n]
    return {"mbps": med([float(r["MBps_aggregate"]) for r in rs]), "ok": min(r["ok_clients"] for r in rs),
            "wall": med([float(r["wall_s"]) for r in rs])} if rs else None

def f(x, d=2):
    return "–" if x is None else f"{x:.{d}f}"

def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b

out = []
p = out.append
p(f"Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['mem_total_gib']} GiB RAM, "
  f"kernel {machine['kernel']}, {machine['os']}; run {machine['date']} ("
  + (f"regcache built from `{machine['git']}`" if machine.get("git") else
     f"regcache binary of {machine['binary_mtime']}, not rebuilt; tree now at `{machine['git_now']}`") + "), "
  f"took {elapsed // 60} min {elapsed % 60} s.")
if loadlog:
    l1 = [float(x[1]) for x in loadlog]
    comp = [int(x[2]) for x in loadlog]
    busy = sum(1 for c in comp if c > 0)
    p(f"Load during the run: 1-min load average min {min(l1):.1f} / median {med(l1):.1f} / max {max(l1):.1f}; "
      f"compiler/linker processes (rustc, clippy-driver, rust-lld, ld, cc1) of other users seen in {busy} of {len(comp)} samples (every 2 s)"
      + (" -- timings are noisy." if busy else "."))
p("")
p(f"Blob: the big layer of `library/big:latest`, `{digest[:19]}…`, {size} bytes ({big}); upstream = "
  f"distribution 2.8.2 with token auth on loopback. Clients: `curl | sha256sum` (kit `pull-bench.sh --client curl`), "
  f"wall = first client start → last client done; "
  + ", ".join(f"N={n}: {max([sum(1 for r in rows if r['mirror'] == m and r['concurrency'] == n and r['phase'] in ('cold', 'direct')) for m in MIRRORS] or [0])} sample(s)" for n in Ns)
  + " per mirror and phase (medians). "
  f"\"up GETs\" = upstream GETs of this blob answered 200 during the run (from its access log); "
  f"\"+k×401\" = further GETs answered 401 (token challenge, no body).")
if fails:
    p(f"\n**{fails} run(s) had failures** (failed clients, a crashed daemon); see `pull-bench.err`, `evidence/`.")
p("")
p("### Cold and warm pulls (wall time, s)")
p("")
p("ratio = regcache wall ÷ other wall (same phase and N; < 1 = regcache faster). direct = straight from the upstream.")
p("")
p("| phase | N | direct | regcache | distribution-proxy | nginx-cache | rc ÷ direct | rc ÷ dist-proxy | rc ÷ nginx | up GETs rc / dp / nginx | ok rc/dp/ng |")
p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
for phase in ("cold", "warm"):
    for n in Ns:
        d = pb("direct", "direct", n)
        r, dp, ng = (pb(m, phase, n) for m in ("regcache", "distribution-proxy", "nginx-cache"))
        w = lambda x: x["wall"] if x else None
        g = lambda x: (str(x["gets"]) + (f" (+{x['other']}×401)" if x["other"] else "")) if x else "–"
        ok = lambda x: f"{x['ok']}/{n}" if x else "–"
        p(f"| {phase} | {n} | {f(w(d))} | {f(w(r))} | {f(w(dp))} | {f(w(ng))} | {f(ratio(w(r), w(d)))} "
          f"| {f(ratio(w(r), w(dp)))} | {f(ratio(w(r), w(ng)))} | {g(r)} / {g(dp)} / {g(ng)} | {ok(r)} / {ok(dp)} / {ok(ng)} |")
p("")
p("### Warm throughput, `curl -o /dev/null` (aggregate MB/s, all N clients together)")
p("")
p("ratio = regcache MB/s ÷ other MB/s (> 1 = regcache faster).")
p("")
p("| N | direct | regcache | distribution-proxy | nginx-cache | rc ÷ direct | rc ÷ dist-proxy | rc ÷ nginx |")
p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for n in Ns:
    d, r, dp, ng = (tp(m, n) for m in MIRRORS)
    v = lambda x: x["mbps"] if x else None
    p(f"| {n} | {f(v(d), 0)} | {f(v(r), 0)} | {f(v(dp), 0)} | {f(v(ng), 0)} | {f(ratio(v(r), v(d)))} "
      f"| {f(ratio(v(r), v(dp)))} | {f(ratio(v(r), v(ng)))} |")
p("")
p("### regcache memory (VmHWM = peak RSS since the restart that began the cold run)")
p("")
p("| after | N | round | VmHWM MiB | VmRSS MiB | threads |")
p("| --- | ---: | ---: | ---: | ---: | ---: |")
for x in rss:
    if x.get("alive"):
        p(f"| {x['phase']} | {x['concurrency']} | {x.get('round', 1)} | {x['VmHWM_kB'] / 1024:.1f} | {x['VmRSS_kB'] / 1024:.1f} | {x['threads']} |")
    else:
        p(f"| {x['phase']} | {x['concurrency']} | {x.get('round', 1)} | **not running (crashed)** | – | – |")
p("")

# ---- targets
p(f"### Targets (N = {nmax}" + ("" if nmax == 32 else "; the targets are stated for 32, this run's largest N was used") + ")")
p("")
p("| target | measured | ratio | met? |")
p("| --- | --- | ---: | --- |")
def verdict(ok):
    return "–" if ok is None else ("met" if ok else "**not met**")
rc_c, rc_w, ng_c = pb("regcache", "cold", nmax), pb("regcache", "warm", nmax), pb("nginx-cache", "cold", nmax)
if rc_c:
    good = rc_c["ok"] == nmax
    p(f"| {nmax} concurrent cold pulls → exactly 1 upstream GET of the blob | {rc_c['gets']} GET(s), {rc_c['ok']}/{nmax} clients ok | – "
      f"| {verdict(rc_c['gets'] == 1 and good)} |")
if rc_c and rc_w:
    q = ratio(rc_c["wall"], rc_w["wall"])
    p(f"| {nmax} cold wall ≤ 1.2 × {nmax} warm wall (regcache) | cold {rc_c['wall']:.2f} s, warm {rc_w['wall']:.2f} s | {q:.2f} | {verdict(q <= 1.2)} |")
if rc_c and ng_c:
    q = ratio(rc_c["wall"], ng_c["wall"])
    p(f"| {nmax} cold wall ≤ nginx-cache's {nmax} cold wall | regcache {rc_c['wall']:.2f} s, nginx {ng_c['wall']:.2f} s | {q:.2f} | {verdict(q <= 1.0)} |")
r1, d1 = pb("regcache", "cold", min(Ns)), pb("direct", "direct", min(Ns))
if r1 and d1:
    q = ratio(r1["wall"], d1["wall"])
    p(f"| single cold pull ≤ 1.15 × a direct pull (N = {min(Ns)}) | regcache {r1['wall']:.2f} s, direct {d1['wall']:.2f} s | {q:.2f} | {verdict(q <= 1.15)} |")
qs = [(n, ratio((tp("regcache", n) or {}).get("mbps"), (tp("nginx-cache", n) or {}).get("mbps"))) for n in Ns]
qs = [(n, q) for n, q in qs if q is not None]
if qs:
    p(f"| warm throughput ≥ 0.9 × nginx-cache (curl → /dev/null) | "
      + ", ".join(f"N={n}: {tp('regcache', n)['mbps']:.0f} vs {tp('nginx-cache', n)['mbps']:.0f} MB/s" for n, _ in qs)
      + f" | {' / '.join(f'{q:.2f}' for _, q in qs)} | {verdict(all(q >= 0.9 for _, q in qs))}"
      + ("" if all(q >= 0.9 for _, q in qs) == any(q >= 0.9 for _, q in qs) else
         f" (met for N = {', '.join(str(n) for n, q in qs if q >= 0.9)})") + " |")
peak = [x for x in rss if x.get("phase") == "cold" and x.get("concurrency") == nmax]
peak_ok = bool(peak) and peak[-1].get("alive")
if peak_ok:
    mib = peak[-1]["VmHWM_kB"] / 1024
    p(f"| peak RSS during the {nmax}-client cold run < 64 MiB | VmHWM {mib:.1f} MiB | {mib / 64:.2f} | {verdict(mib < 64)} |")
elif peak:
    p(f"| peak RSS during the {nmax}-client cold run < 64 MiB | regcache was not running after the run | – | **not met** |")

# With several rounds (ROUNDS_N1), each round ran direct and every mirror back to back: the ratio
# within a round is less exposed to load that drifts over minutes than a ratio of medians.
def paired(xs, ys):
    return [x / y for x, y in zip(xs, ys) if y]
n1 = min(Ns)
walls = lambda m, ph: [r["wall_s"] for r in rows if r["mirror"] == m and r["phase"] == ph and r["concurrency"] == n1 and r["ok_clients"] == n1]
mbps = lambda m: [float(r["MBps_aggregate"]) for r in tput if r["mirror"] == m and r["concurrency"] == n1 and r["ok_clients"] == n1]
pairs = [("regcache cold ÷ direct (target ≤ 1.15)", paired(walls("regcache", "cold"), walls("direct", "direct"))),
         ("regcache cold ÷ nginx-cache cold", paired(walls("regcache", "cold"), walls("nginx-cache", "cold"))),
         ("regcache warm ÷ direct", paired(walls("regcache", "warm"), walls("direct", "direct"))),
         ("regcache ÷ nginx-cache warm curl MB/s (target ≥ 0.9)", paired(mbps("regcache"), mbps("nginx-cache")))]
pairs = [(k, v) for k, v in pairs if len(v) > 1]
if pairs:
    p("")
    p(f"Per-round (paired) ratios at N = {n1}, in round order, and their median:")
    p("")
    for k, v in pairs:
        p(f"* {k}: {', '.join(f'{x:.2f}' for x in v)} → median **{med(v):.2f}**")
text = "\n".join(out) + "\n"
open(os.path.join(W, "summary.md"), "w").write(text)
print(text)

if md_path != "none":
    begin, end = "<!-- BEGIN generated by benches/pull-bench.sh -->", "<!-- END generated by benches/pull-bench.sh -->"
    block = f"{begin}\n{text}{end}"
    old = open(md_path).read() if os.path.exists(md_path) else "# Benchmarks\n\n"
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    open(md_path, "w").write(new)
    print(f"(written to {md_path})", file=sys.stderr)
PY
}

case "${1:-run}" in
  regcache-reset) [[ -n "${2:-}" ]] || die "usage: $0 regcache-reset DIR"; rc_reset "$2"; exit 0 ;;
  regcache-start) [[ -n "${2:-}" ]] || die "usage: $0 regcache-start DIR"; rc_start "$2"; exit 0 ;;
  regcache-stop) [[ -n "${2:-}" ]] || die "usage: $0 regcache-stop DIR"; rc_stop "$2"; exit 0 ;;
  report)  # re-render from an existing work dir: W=... benches/pull-bench.sh report
    W="${W:-${BENCH_WORK:-/tmp/regcache-bench}/regcache-pull-bench}"
    report "$W" "${BENCH_MD:-$ROOT/BENCHMARKS.md}"; exit 0 ;;
  run) ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) die "unknown command $1 (try --help)" ;;
esac

# ---------------------------------------------------------------- settings
BENCH_KIT="${BENCH_KIT:-$ROOT/../shared/bench}"
[[ -x "$BENCH_KIT/pull-bench.sh" && -x "$BENCH_KIT/upstream.sh" && -x "$BENCH_KIT/peer.sh" ]] ||
  die "benchmark kit not found at BENCH_KIT=$BENCH_KIT (needs upstream.sh, peer.sh, make-images.py, pull-bench.sh)"
BENCH_KIT="$(cd "$BENCH_KIT" && pwd)"
W="${W:-${BENCH_WORK:-/tmp/regcache-bench}/regcache-pull-bench}"
BIG="${BIG:-512M}"
CONC="${CONC:-1,8,32}"
PEER_WARM_CONC="${PEER_WARM_CONC:-1,8}"
ROUNDS_N1="${ROUNDS_N1:-1}"
ROUND=1
REPEAT="${REPEAT:-1}"
MIRRORS="${MIRRORS:-regcache distribution-proxy nginx-cache}"
PORT_BASE="${PORT_BASE:-18000}"
UP_PORT=$PORT_BASE RC_PORT=$((PORT_BASE + 100)) DP_PORT=$((PORT_BASE + 200)) NG_PORT=$((PORT_BASE + 300))
REGCACHE_BIN="${REGCACHE_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/regcache}"
BENCH_MD="${BENCH_MD:-$ROOT/BENCHMARKS.md}"
TIMEOUT="${TIMEOUT:-600}"
for c in docker-registry skopeo nginx jq curl python3; do
  command -v "$c" >/dev/null || die "missing command: $c (see $BENCH_KIT/README.md, requirements)"
done

mkdir -p "$W"; W="$(cd "$W" && pwd)"
UP="$W/up" RC="$W/regcache" DP="$W/distribution-proxy" NG="$W/nginx-cache" EV="$W/evidence"
mkdir -p "$RC" "$EV"
RESULTS="$W/results.jsonl" TPUT="$W/tput.jsonl" RSS="$W/rss.jsonl"
: > "$RESULTS"; : > "$TPUT"; : > "$RSS"; rm -f "$EV"/*
SAMPLER_PID=""

cleanup() {
  [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null || true
  if [[ "${KEEP:-0}" != 1 ]]; then
    rc_stop "$RC" || true
    "$BENCH_KIT/peer.sh" stop distribution-proxy "$DP" >/dev/null 2>&1 || true
    "$BENCH_KIT/peer.sh" stop nginx-cache "$NG" >/dev/null 2>&1 || true
    "$BENCH_KIT/upstream.sh" stop "$UP" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
T_START=$(date +%s)

# ---------------------------------------------------------------- build
GIT_AT_BUILD="$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
BUILT=0
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  BUILT=1
  log "cargo build --release (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<default>})"
  (cd "$ROOT" && cargo build --release --bin regcache) || die "build failed"
fi
[[ -x "$REGCACHE_BIN" ]] || die "no regcache binary at REGCACHE_BIN=$REGCACHE_BIN"
REGCACHE_BIN="$(readlink -f "$REGCACHE_BIN")"

# ---------------------------------------------------------------- machine + load sampler
python3 - "$W/machine.json" "$REGCACHE_BIN" "$GIT_AT_BUILD" "$BUILT" <<'PY'
import json, os, platform, subprocess, sys, time
mem = dict(l.split(":", 1) for l in open("/proc/meminfo").read().splitlines())
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
def sh(*c):
    try:
        return subprocess.run(c, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"
json.dump({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(), "cpu": cpu,
           "mem_total_gib": round(int(mem["MemTotal"].split()[0]) / 2**20, 1),
           "kernel": platform.release(), "os": sh("sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"),
           "regcache_bin": sys.argv[2],
           "binary_mtime": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(os.path.getmtime(sys.argv[2]))),
           # the tree the binary was built from (only known when this run built it)
           "git": sys.argv[3] if sys.argv[4] == "1" else None, "git_now": sys.argv[3],
           "loadavg_start": open("/proc/loadavg").read().split()[:3]},
          open(sys.argv[1], "w"), indent=1)
PY
# every 2 s: time, 1-min load, and how many compiler/linker processes run beside us
( while :; do
    printf '%s %s %s\n' "$(date +%s)" "$(cut -d' ' -f1 /proc/loadavg)" \
      "$(pgrep -c -x 'rustc|clippy-driver|rust-lld|ld|cc1|cc1plus' || true)"
    sleep 2
  done > "$W/load.log" 2>/dev/null ) &
SAMPLER_PID=$!

# ---------------------------------------------------------------- upstream + images
log "upstream (token auth) on 127.0.0.1:$UP_PORT"
"$BENCH_KIT/upstream.sh" start "$UP" "$UP_PORT" --auth token > /dev/null
log "pushing test images (big layer $BIG)"
"$BENCH_KIT/make-images.py" --registry "127.0.0.1:$UP_PORT" --creds admin:admin-secret --big-size "$BIG" \
  --workdir "$W/images" > "$W/pushed.json"
DIGEST="$(jq -r '.images[] | select(.repo == "library/big" and .tag == "latest")
                 | .instances[0].layers | max_by(.size) | .digest' "$W/pushed.json")"
SIZE="$(jq -r --arg d "$DIGEST" '.images[] | select(.repo == "library/big") | .instances[0].layers[]
                 | select(.digest == $d) | .size' "$W/pushed.json" | head -1)"
[[ "$DIGEST" == sha256:* && "$SIZE" =~ ^[0-9]+$ ]] || die "could not find the big layer in $W/pushed.json"
log "big layer: $DIGEST ($SIZE bytes)"
BLOB_PATH="/v2/library/big/blobs/$DIGEST"

# ---------------------------------------------------------------- mirrors
cat > "$RC/regcache.toml" <<EOF
# written by benches/pull-bench.sh
listen = "127.0.0.1:$RC_PORT"
builtin_upstreams = false

[cache]
dir = "$RC/cache"

[[upstreams]]
host = "docker.io"
url = "http://127.0.0.1:$UP_PORT"
default = true
EOF
# newer regcache versions have an admin listener (default 127.0.0.1:5001): move it next to the
# mirror's port so that it cannot collide with another regcache on this machine
printf '\n[admin]\nlisten = "127.0.0.1:%s"\n' "$((RC_PORT + 1))" >> "$RC/regcache.toml"
if ! "$REGCACHE_BIN" check-config --config "$RC/regcache.toml" > /dev/null 2>&1; then
  sed -i '/^\[admin\]$/,$d' "$RC/regcache.toml"     # this version has no [admin] section
fi
"$REGCACHE_BIN" check-config --config "$RC/regcache.toml" >&2 || die "regcache rejects $RC/regcache.toml"
echo "$RC_PORT" > "$RC/port"
echo "$REGCACHE_BIN" > "$RC/bin"
: > "$RC/regcache.log"
for m in $MIRRORS; do
  case "$m" in
    regcache) log "regcache on 127.0.0.1:$RC_PORT"; rc_stop "$RC"; rc_start "$RC" ;;
    distribution-proxy) "$BENCH_KIT/peer.sh" start distribution-proxy "$DP" "$DP_PORT" "http://127.0.0.1:$UP_PORT" > /dev/null ;;
    nginx-cache) "$BENCH_KIT/peer.sh" start nginx-cache "$NG" "$NG_PORT" "http://127.0.0.1:$UP_PORT" > /dev/null ;;
    *) die "unknown mirror $m (MIRRORS: regcache distribution-proxy nginx-cache)" ;;
  esac
done

mirror_url() {
  case "$1" in
    direct) echo "http://127.0.0.1:$UP_PORT" ;;
    regcache) echo "http://127.0.0.1:$RC_PORT" ;;
    distribution-proxy) echo "http://127.0.0.1:$DP_PORT" ;;
    nginx-cache) echo "http://127.0.0.1:$NG_PORT" ;;
  esac
}
reset_cmd() {
  case "$1" in
    regcache) printf '%q regcache-reset %q' "$SELF" "$RC" ;;
    distribution-proxy) printf '%q reset distribution-proxy %q' "$BENCH_KIT/peer.sh" "$DP" ;;
    nginx-cache) printf '%q reset nginx-cache %q' "$BENCH_KIT/peer.sh" "$NG" ;;
  esac
}

# ---------------------------------------------------------------- measurements
FAILS=0
# pull NAME PHASE N: one pull-bench run (curl | sha256sum clients on the big blob)
pull() {
  local name="$1" phase="$2" n="$3" url up_off rc_off rc=0 args ev
  url="$(mirror_url "$name")"; ev="$EV/$name-$phase-$n"; (( ROUND > 1 )) && ev="$ev-round$ROUND"
  args=(--mirror "$url" --name "$name" --blob --image "library/big@$DIGEST" --client curl
        --concurrency "$n" --phases "$phase" --repeat "$REPEAT" --timeout "$TIMEOUT"
        --upstream-log "$UP/access.log" --token-log "$UP/auth/token.log" --out "$RESULTS")
  [[ "$phase" == cold ]] && args+=(--reset-cmd "$(reset_cmd "$name")")
  up_off=$(stat -c %s "$UP/access.log"); rc_off=$(stat -c %s "$RC/regcache.log" 2>/dev/null || echo 0)
  "$BENCH_KIT/pull-bench.sh" "${args[@]}" >> "$W/pull-bench.out" 2>> "$W/pull-bench.err" || rc=$?
  if (( rc )); then
    FAILS=$((FAILS + 1))
    log "  $name $phase x$n: some clients FAILED (pull-bench exit $rc; see $W/pull-bench.err)"
  fi
  tail -c +"$((up_off + 1))" "$UP/access.log" > "$ev.upstream-access.log" 2>/dev/null || true
  if [[ "$name" == regcache ]]; then
    if [[ "$phase" == cold ]]; then
      # the cold reset restarted regcache and began a new log section: keep that section whole
      awk '/^=== .* bench: start /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$RC/regcache.log" \
        > "$ev.regcache.log"
    else
      tail -c +"$((rc_off + 1))" "$RC/regcache.log" > "$ev.regcache.log"
    fi
    rss_record "$phase" "$n"
  else
    rm -f "$ev.upstream-access.log"
  fi
  jq -c --arg n "$name" --arg p "$phase" --argjson c "$n" \
    'select(.mirror == $n and .phase == $p and .concurrency == $c)
     | "  \(.mirror) \(.phase) x\(.concurrency): ok \(.ok_clients)/\(.concurrency) wall \(.wall_s)s \(.MBps_aggregate) MB/s, upstream blob GETs \(.upstream.blob_get) (max/blob \(.upstream.max_gets_per_blob))"' \
    "$RESULTS" | tail -n "$REPEAT" | tr -d '"' >&2 || true
}

# rss_record PHASE N: regcache's peak (VmHWM) and current RSS since its last (re)start
rss_record() {
  local pid st
  if ! rc_alive "$RC"; then
    log "  regcache is NOT running after $1 x$2 (crashed?) -- see the regcache-$1-$2 logs in $EV"
    printf '{"phase":"%s","concurrency":%s,"round":%s,"alive":false}\n' "$1" "$2" "$ROUND" >> "$RSS"
    FAILS=$((FAILS + 1))
    rc_start "$RC"   # so that later runs can still go on
    return
  fi
  pid="$(rc_pid "$RC")"
  st="$(cat "/proc/$pid/status")"
  printf '{"phase":"%s","concurrency":%s,"round":%s,"alive":true,"pid":%s,"VmHWM_kB":%s,"VmRSS_kB":%s,"threads":%s}\n' \
    "$1" "$2" "$ROUND" "$pid" "$(awk '/^VmHWM:/{print $2}' <<<"$st")" "$(awk '/^VmRSS:/{print $2}' <<<"$st")" \
    "$(awk '/^Threads:/{print $2}' <<<"$st")" >> "$RSS"
}

# tput NAME N: N concurrent `curl -o /dev/null` of the blob (warm cache), aggregate MB/s
tput() {
  local name="$1" n="$2" url auth=() pids code size_dl hdr realm service token t0 t1 i ok=0 bytes=0 dir
  url="$(mirror_url "$name")"
  hdr="$(curl -s -o /dev/null -D - --max-time 10 "$url/v2/" | tr -d '\r' | grep -i '^www-authenticate:' || true)"
  if [[ -n "$hdr" ]]; then
    realm="$(sed -nE 's/.*realm="([^"]*)".*/\1/p' <<<"$hdr")"; service="$(sed -nE 's/.*service="([^"]*)".*/\1/p' <<<"$hdr")"
    [[ "$realm" == http://127.* ]] || die "refusing token realm $realm"
    token="$(curl -sS --max-time 10 -G "$realm" --data-urlencode "service=$service" \
              --data-urlencode "scope=repository:library/big:pull" | jq -r '.token // .access_token')"
    auth=(-H "Authorization: Bearer $token")
  fi
  dir="$(mktemp -d "$W/tput.XXXX")"
  sync
  pids=()
  t0=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    curl -sS -o /dev/null --max-time "$TIMEOUT" -w '%{http_code} %{size_download}\n' "${auth[@]}" \
      "$url$BLOB_PATH" > "$dir/$i" 2> "$dir/$i.err" &
    pids+=($!)
  done
  wait "${pids[@]}" || true
  t1=$(date +%s.%N)
  for i in $(seq 1 "$n"); do
    read -r code size_dl _ < "$dir/$i" || true
    if [[ "$code" == 200 && "$size_dl" == "$SIZE" ]]; then ok=$((ok + 1)); bytes=$((bytes + size_dl)); fi
  done
  rm -rf "$dir"
  (( ok == n )) || { FAILS=$((FAILS + 1)); log "  tput $name x$n: only $ok/$n clients got the whole blob"; }
  printf '{"mirror":"%s","concurrency":%s,"ok_clients":%s,"wall_s":%s,"bytes_total":%s,"MBps_aggregate":%s}\n' \
    "$name" "$n" "$ok" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f", b - a}')" "$bytes" \
    "$(awk -v a="$t0" -v b="$t1" -v n="$bytes" 'BEGIN{printf "%.1f", n / (b - a) / 1e6}')" >> "$TPUT"
  log "  $name warm curl>/dev/null x$n: $(tail -1 "$TPUT")"
}

IFS=, read -ra NS <<< "$CONC"
# Per N, the direct reference and every mirror back to back (so that they see similar machine
# load); at N = 1, ROUNDS_N1 such rounds, interleaved.
for n in "${NS[@]}"; do
  rounds=1; [[ "$n" == 1 ]] && rounds="$ROUNDS_N1"
  for ROUND in $(seq 1 "$rounds"); do
    log "N = $n, round $ROUND/$rounds: direct $MIRRORS"
    pull direct direct "$n"; tput direct "$n"
    for m in $MIRRORS; do
      pull "$m" cold "$n"
      if [[ "$m" == regcache || ",$PEER_WARM_CONC," == *",$n,"* ]]; then pull "$m" warm "$n"; fi
      tput "$m" "$n"
    done
  done
done
# after the last run: how regcache's log and the upstream log look overall (errors, warnings)
grep -E ' (WARN|ERROR) ' "$RC/regcache.log" > "$EV/regcache-warnings.log" 2>/dev/null || true
cp "$RC/regcache.log" "$EV/regcache-full.log" 2>/dev/null || true
kill "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""

# ---------------------------------------------------------------- report
T_END=$(date +%s)
jq -n --arg digest "$DIGEST" --arg size "$SIZE" --arg big "$BIG" --arg conc "$CONC" \
  --arg mirrors "$MIRRORS" --argjson rounds_n1 "$ROUNDS_N1" --argjson repeat "$REPEAT" \
  --argjson elapsed "$((T_END - T_START))" --argjson fails "$FAILS" \
  '{digest: $digest, size: $size, big: $big, conc: $conc, mirrors: $mirrors, rounds_n1: $rounds_n1,
    repeat: $repeat, elapsed_s: $elapsed, fails: $fails}' > "$W/run.json"
report "$W" "$BENCH_MD"
log "raw results: $RESULTS (pull-bench rows), $TPUT, $RSS, $W/machine.json; evidence: $EV"
(( FAILS == 0 )) || log "WARNING: $FAILS failing run(s); see $W/pull-bench.err and $EV"
exit 0
