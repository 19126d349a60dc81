#!/usr/bin/env python3
"""`/api/metrics?range=1h` as the service answers it, page faults included.

Usage: scripts/metrics_faults.py PATH/TO/zai-dash [N]

Starts `zai-dash demo` (its own process, with `main`'s allocator policy, `heap::limit_arenas`;
the demo writes an hour of 5 s history and keeps scraping) on a loopback port and a fresh
database, waits 8 s, then asks for `range=1h` N times (default 40) one after the other. Prints,
for the process's first request and the later ones: wall time to the body's last byte (the
client is this script) and the server's minor page faults during the request
(/proc/PID/stat), with the idle faults of one second for scale. The in-process pipeline bench
cannot show these faults: its prefill leaves the heap large, so glibc finds every big block
free in it (BENCHMARKS.md, "First request, eighth stop")."""
import http.client, os, subprocess, sys, tempfile, time, statistics

binary, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 40
port = 18000 + os.getpid() % 1000
d = tempfile.mkdtemp(prefix="qsvc")
p = subprocess.Popen([binary, "demo", "--listen-addr", f"127.0.0.1:{port}", "--db-path", f"{d}/demo.db"],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
def minflt():
    with open(f"/proc/{p.pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])
try:
    p.stdout.readline()
    time.sleep(8)  # the simulated hour is written, a few scrapes ran
    def get(path):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        f0 = minflt(); t = time.perf_counter()
        c.request("GET", path); r = c.getresponse(); body = r.read()
        ms = (time.perf_counter() - t) * 1000; f1 = minflt(); c.close()
        return ms, f1 - f0, len(body), r.getheader("content-length"), r.getheader("transfer-encoding")
    idle0 = minflt(); time.sleep(1.0); idle = minflt() - idle0
    rows = [get("/api/metrics?range=1h") for _ in range(n)]
    first = rows[0]; rest = rows[1:]
    print(f"{os.path.basename(binary)}: body {first[2]} B, content-length {first[3]}, transfer-encoding {first[4]}; "
          f"idle faults/s {idle}; first {first[0]:.1f} ms {first[1]} faults; "
          f"later: ms p50 {statistics.median(r[0] for r in rest):.1f} max {max(r[0] for r in rest):.1f}, "
          f"faults p50 {statistics.median(r[1] for r in rest):.0f} max {max(r[1] for r in rest)}")
finally:
    p.terminate(); p.wait(timeout=10)
