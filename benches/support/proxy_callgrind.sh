#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: the A/B figure of BENCHMARKS.md's
# issue 22 section. Instruction counts do not move with the machine's load the way wall-clock
# and CPU time do, so a change can be judged on a shared machine.
#
#   benches/support/proxy_callgrind.sh ZAI_DASH_BIN BENCH_BIN [json|sse] [SECONDS]
#
# ZAI_DASH_BIN: the binary under test (`cargo build --profile profiling` gives one with symbols,
# for callgrind_annotate). BENCH_BIN: the proxy bench's own binary, re-executed as the mock
# upstream (`cargo build --profile profiling --bench proxy`, then target/profiling/deps/proxy-*).
# The proxy runs under callgrind on one CPU with the bench's settings; wrk (1 thread, 64
# connections, the bench's request) loads it for 3 s of warm-up, then the counters are zeroed,
# wrk runs SECONDS (default 20) more, the counters are dumped, and the total is divided by the
# requests wrk completed in that window. Prints `requests`, `instructions` and `per_request`;
# the dump stays in the printed directory for callgrind_annotate.
set -euo pipefail

zai=${1:?ZAI_DASH_BIN}
bench=${2:?BENCH_BIN}
mode=${3:-json}
secs=${4:-20}
dir=$(mktemp -d /tmp/proxy-callgrind.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

announced() { # FILE: waits for `listening on http://ADDR` and prints ADDR
    for _ in $(seq 600); do
        if addr=$(grep -m1 -o 'listening on http://[0-9.:]*' "$1" 2>/dev/null); then
            echo "${addr#listening on http://}"
            return
        fi
        sleep 0.1
    done
    echo "no address announced in $1" >&2
    return 1
}

# The mock upstream exits when its stdin closes: keep a pipe open for it.
mkfifo "$dir/upstream.stdin"
sleep infinity >"$dir/upstream.stdin" &
pids+=($!)
PROXY_BENCH_ROLE=upstream PROXY_BENCH_DELAY_MS=5 taskset -c 0 "$bench" <"$dir/upstream.stdin" >"$dir/upstream.out" 2>&1 &
pids+=($!)
upstream=$(announced "$dir/upstream.out")

env -i PATH="$PATH" LISTEN_ADDR=127.0.0.1:0 ZAI_API_KEY=bench ZAI_TARGET_URL="${ZAI_TARGET_URL:-http://$upstream}" \
    MAX_WORKERS=1000 MAX_RETRIES=0 RATE_LIMIT_INITIAL=100000 RATE_LIMIT_MAX=100000 RATE_LIMIT_STATE_FILE= \
    ${PROXY_EXTRA_ENV:-} \
    taskset -c 1 valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$zai" proxy \
    >"$dir/zai.out" 2>"$dir/zai.err" &
zai_pid=$!
pids+=($zai_pid)
proxy=$(announced "$dir/zai.out")

if [ "$mode" = sse ]; then stream='"stream":true,'; else stream=''; fi
cat >"$dir/wrk.lua" <<EOF
wrk.method = "POST"
wrk.body = [[{"model":"glm-4.6","max_tokens":256,${stream}"messages":[{"role":"user","content":"Say hello in one short sentence."}]}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "bench-client"
EOF
load() { taskset -c 0 wrk -t1 -c64 -d"$1"s --timeout 30s -s "$dir/wrk.lua" "http://$proxy/v1/messages"; }

load 3 >"$dir/warmup.txt"
callgrind_control -z "$zai_pid" >/dev/null 2>&1
load "$secs" >"$dir/wrk.txt"
callgrind_control -d "$zai_pid" >/dev/null 2>&1
sleep 1
requests=$(grep -o '[0-9]* requests in' "$dir/wrk.txt" | cut -d' ' -f1)
errors=$(grep -E 'Non-2xx|Socket errors' "$dir/wrk.txt" || true)
dump=$(ls -t "$dir"/callgrind.out.* | head -1)
instructions=$(grep -m1 '^totals:' "$dump" | awk '{print $2}')
echo "dir $dir"
echo "mode $mode"
echo "requests $requests"
[ -n "$errors" ] && echo "errors: $errors"
echo "instructions $instructions"
echo "per_request $((instructions / requests))"
