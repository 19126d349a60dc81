#!/usr/bin/env bash
# Two zai-dash builds side by side in one run: the proxy bench runs one binary per run, and on a
# shared 2-core machine two runs minutes apart differ by more than a small change does.
#
#   benches/support/proxy_ab.sh BASE_BINARY NEW_BINARY [ROUNDS] [SECS]
#
# Same processes and pinning as `PROXY_BENCH_DRIVER=wrk cargo bench --bench proxy` (mock upstream
# and the proxies on CPU 1, wrk on CPU 0, 64 connections, JSON `POST /v1/messages`), with both
# zai-dash binaries and nginx running at once. Each round measures direct, base, new and nginx
# for SECS seconds each (default 2), in an order rotated every round; ROUNDS defaults to 16.
# Prints each measurement, then per path the median over rounds of p50 minus direct's p50 in the
# same round, and the median CPU time per request (/proc/PID/stat over the measured run).
#
# The mock upstream is the proxy bench binary in its upstream role: build it first with
# `cargo bench --bench proxy --no-run` (PROXY_BENCH_BIN overrides which one is used).
set -euo pipefail

base_bin=$(realpath "$1")
new_bin=$(realpath "$2")
rounds=${3:-16}
secs=${4:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bench_bin=${PROXY_BENCH_BIN:-$(ls -t "$target"/release/deps/proxy-* 2>/dev/null | grep -v '\.d$' | head -1)}
[ -x "$bench_bin" ] || { echo "no proxy bench binary: run cargo bench --bench proxy --no-run" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

# Children read stdin (the bench's upstream role exits when it closes): a FIFO held open.
mkfifo "$dir/hold"
sleep infinity >"$dir/hold" &
pids+=($!)

# Waits (up to 10 s) for `listening on http://ADDR` as the first line of $1; prints ADDR.
announced() {
    for _ in $(seq 100); do
        if line=$(head -1 "$1" 2>/dev/null) && [[ $line == "listening on http://"* ]]; then
            echo "${line#listening on http://}"
            return
        fi
        sleep 0.1
    done
    echo "no address in $1" >&2
    exit 1
}

env -i PATH="$PATH" PROXY_BENCH_ROLE=upstream PROXY_BENCH_DELAY_MS=5 taskset -c 1 "$bench_bin" \
    <"$dir/hold" >"$dir/upstream.out" 2>"$dir/upstream.err" &
pids+=($!)
upstream=$(announced "$dir/upstream.out")

declare -A addr pid
addr[direct]=$upstream
for side in base new; do
    bin=$base_bin
    [ "$side" = new ] && bin=$new_bin
    env -i PATH="$PATH" LISTEN_ADDR=127.0.0.1:0 ZAI_API_KEY=bench ZAI_TARGET_URL="http://$upstream" \
        MAX_WORKERS=1000 MAX_RETRIES=0 RATE_LIMIT_INITIAL=100000 RATE_LIMIT_MAX=100000 RATE_LIMIT_STATE_FILE= \
        taskset -c 1 "$bin" proxy <"$dir/hold" >"$dir/$side.out" 2>"$dir/$side.err" &
    pid[$side]=$!
    pids+=($!)
    addr[$side]=$(announced "$dir/$side.out")
done

nginx_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000;
    upstream mock { server $upstream; keepalive 256; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
taskset -c 1 "${NGINX_BIN:-/usr/sbin/nginx}" -p "$dir" -e "$dir/nginx.log" -c "$dir/nginx.conf" -g 'daemon off;' \
    </dev/null >/dev/null 2>"$dir/nginx.stderr" &
pids+=($!)
addr[nginx]=127.0.0.1:$nginx_port
for _ in $(seq 100); do
    worker=$(pgrep -P "${pids[-1]}" | head -1 || true)
    [ -n "$worker" ] && (exec 3<>"/dev/tcp/127.0.0.1/$nginx_port") 2>/dev/null && break
    sleep 0.1
done
pid[nginx]=$worker

cat >"$dir/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = [[{"model":"glm-4.6","max_tokens":256,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "bench-client"
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.3f %d %d\n", latency:percentile(50) / 1000, summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
EOF

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
paths=(direct base new nginx)
# Warm-up: every path once, unmeasured.
for p in "${paths[@]}"; do taskset -c 0 wrk -t1 -c64 -d1s -s "$dir/post.lua" "http://${addr[$p]}/v1/messages" >/dev/null; done
for r in $(seq "$rounds"); do
    for j in 0 1 2 3; do
        p=${paths[$(((j + r) % 4))]}
        t0=0
        [ "$p" != direct ] && t0=$(ticks "${pid[$p]}")
        out=$(taskset -c 0 wrk -t1 -c64 -d"${secs}s" -s "$dir/post.lua" "http://${addr[$p]}/v1/messages" | grep '^RESULT')
        cpu=-
        if [ "$p" != direct ]; then
            t1=$(ticks "${pid[$p]}")
            cpu=$(awk -v d=$((t1 - t0)) -v n="$(echo "$out" | cut -d' ' -f3)" -v hz="$hz" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
        fi
        read -r _ p50 n errors <<<"$out"
        echo "round $r $p p50_ms $p50 requests $n errors $errors cpu_us_per_request $cpu"
    done
done | tee "$dir/results.txt"

python3 - "$dir/results.txt" <<'EOF'
import statistics, sys
rounds = {}
for line in open(sys.argv[1]):
    f = line.split()
    rounds.setdefault(f[1], {})[f[2]] = (float(f[4]), f[10])
for p in ("base", "new", "nginx"):
    added = [r[p][0] - r["direct"][0] for r in rounds.values() if p in r and "direct" in r]
    cpu = [float(r[p][1]) for r in rounds.values() if p in r]
    print(f"{p:6s} added p50 median {statistics.median(added):.3f} ms over {len(added)} rounds, "
          f"CPU {statistics.median(cpu):.1f} us/request")
base = {k: r["base"][0] for k, r in rounds.items()}
new = {k: r["new"][0] for k, r in rounds.items()}
print(f"new below base in {sum(new[k] < base[k] for k in base)} of {len(base)} rounds")
EOF
