#!/usr/bin/env bash
# What moving 512 MiB costs the server: an export and an import of a bundle holding one 512 MiB
# layer (through a running daemon, and an import on the directory), and a push of a fresh
# 512 MiB image with skopeo to a regcache hosted namespace beside the same push to the
# distribution registry. Wall seconds from the client, the server's CPU seconds (utime+stime from
# /proc/PID/stat) and its peak RSS. Loopback only.
#
# Needs: the bench kit's upstream running (../shared/bench/upstream.sh start $W/up 15000 --auth
# token, with make-images.py --big-size 512M pushed), `cargo build --release`, skopeo, python3.
# Usage: benches/bundle-push-bench.sh [WORKDIR]   (default /tmp/regcache-bundle-bench)
set -euo pipefail
cd "$(dirname "$0")/.."
R="$PWD/target/release/regcache"
W="${1:-/tmp/regcache-bundle-bench}"
UP=127.0.0.1:15000
rm -rf "$W" && mkdir -p "$W"

cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
hwm() { awk '/VmHWM/ {print $2 " kB"}' "/proc/$1/status"; }
ticks=$(getconf CLK_TCK)
secs() { echo "scale=2; $1 / $ticks" | bc; }

site() { # site NAME PORT [offline] -> writes $W/NAME.toml
    cat > "$W/$1.toml" <<EOF
listen = "127.0.0.1:$2"
builtin_upstreams = false
[admin]
listen = "127.0.0.1:$(($2 + 1))"
[cache]
dir = "$W/$1"
[auth]
htpasswd_file = "$W/htpasswd"
[[access]]
repository = "local/**"
read = ["anonymous"]
write = ["writer"]
[[hosted]]
prefix = "local"
[[upstreams]]
host = "docker.io"
url = "http://$UP"
default = true
offline = ${3:-false}
EOF
}
start() { "$R" serve -c "$W/$1.toml" >/dev/null 2>"$W/$1.log" & echo $!; sleep 1; }

echo "writer:$(python3 -W ignore -c "import crypt;print(crypt.crypt('pw', crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))")" > "$W/htpasswd"

site online 17300
pid=$(start online)
"$R" prefetch -c "$W/online.toml" big:latest >/dev/null
c0=$(cpu "$pid"); t0=$(date +%s.%N)
"$R" export -c "$W/online.toml" -o "$W/bundle.tar" big:latest >/dev/null
t1=$(date +%s.%N); c1=$(cpu "$pid")
echo "export through the daemon: $(echo "$t1 - $t0" | bc) s wall, daemon $(secs $((c1 - c0))) CPU-s, peak RSS $(hwm "$pid")"
kill "$pid"

site offline 17310 true
pid=$(start offline)
c0=$(cpu "$pid"); t0=$(date +%s.%N)
"$R" import -c "$W/offline.toml" "$W/bundle.tar" >/dev/null
t1=$(date +%s.%N); c1=$(cpu "$pid")
echo "import through the daemon: $(echo "$t1 - $t0" | bc) s wall, daemon $(secs $((c1 - c0))) CPU-s, peak RSS $(hwm "$pid")"
kill "$pid"; sleep 1
rm -rf "$W/offline"
/usr/bin/time -f "import on the directory: %e s wall, %U+%S CPU-s, peak RSS %M kB" \
    "$R" import -c "$W/offline.toml" "$W/bundle.tar" >/dev/null

# A fresh 512 MiB image (random bytes: nothing to mount from anywhere), its layer really gzip
# (skopeo compresses a layer that is not, on the way) so the pushed bytes are the file's.
F="$W/fresh"; mkdir -p "$F"
head -c 536870912 /dev/urandom | gzip -1 > "$F/layer"
L=$(sha256sum "$F/layer" | cut -d' ' -f1); mv "$F/layer" "$F/$L"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$F/cfg"
C=$(sha256sum "$F/cfg" | cut -d' ' -f1); mv "$F/cfg" "$F/$C"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%d}]}' \
    "$C" "$(stat -c %s "$F/$C")" "$L" "$(stat -c %s "$F/$L")" > "$F/manifest.json"
echo "Directory Transport Version: 1.1" > "$F/version"

reg=$(pgrep -f "registry serve" | head -1)
c0=$(cpu "$reg"); t0=$(date +%s.%N)
skopeo copy -q --dest-tls-verify=false --dest-creds admin:admin-secret "dir:$F" "docker://$UP/library/fresh-$L:v1"
t1=$(date +%s.%N); c1=$(cpu "$reg")
echo "push to distribution: $(echo "$t1 - $t0" | bc) s wall, registry $(secs $((c1 - c0))) CPU-s"

site hosted 17320
pid=$(start hosted)
c0=$(cpu "$pid"); t0=$(date +%s.%N)
skopeo copy -q --dest-tls-verify=false --dest-creds writer:pw "dir:$F" docker://127.0.0.1:17320/local/fresh:v1
t1=$(date +%s.%N); c1=$(cpu "$pid")
echo "push to regcache hosted: $(echo "$t1 - $t0" | bc) s wall, daemon $(secs $((c1 - c0))) CPU-s, peak RSS $(hwm "$pid")"
skopeo copy -q --src-tls-verify=false docker://127.0.0.1:17320/local/fresh:v1 "dir:$W/back"
cmp "$F/$L" "$W/back/$L" && cmp "$F/manifest.json" "$W/back/manifest.json" && echo "pulled back: identical"
kill "$pid"
