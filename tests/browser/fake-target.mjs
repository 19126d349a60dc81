// A fake zai-proxy for the browser tests: serves tests/fixtures/zai-proxy-sample.prom with the
// variant relabelled and every counter, bucket, sum and count growing with time (slightly
// faster and faster, so rates change from one scrape to the next). Loopback only.
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const FIXTURE = fs.readFileSync(path.join(here, "..", "fixtures", "zai-proxy-sample.prom"), "utf8");
const CUMULATIVE = /^zai_proxy_\w+(_total|_bucket|_sum|_count)[{ ]/;

/** The fixture's exposition for `variant`, with counters scaled by `factor` (>= 1). */
export function render(variant, factor, extraLines = []) {
  const out = [];
  for (const line of FIXTURE.split("\n")) {
    let l = line.replaceAll('variant="production"', `variant="${variant}"`);
    if (CUMULATIVE.test(l)) {
      const i = l.lastIndexOf(" ");
      const v = Number(l.slice(i + 1));
      const scaled = Number.isInteger(v) ? Math.floor(v * factor) : v * factor;
      l = `${l.slice(0, i)} ${scaled}`;
    }
    out.push(l);
  }
  return out.join("\n").trimEnd() + "\n" + extraLines.map((f) => f(factor)).join("");
}

/**
 * Starts a target on 127.0.0.1:0. `speed` is the growth of the counters per second relative
 * to the fixture; `extra` are functions of the factor returning exposition lines.
 */
export function startTarget(variant, speed, extra = []) {
  const started = Date.now();
  const server = http.createServer((req, res) => {
    if (req.url !== "/metrics") {
      res.writeHead(404).end();
      return;
    }
    const t = (Date.now() - started) / 1000;
    const factor = 1 + speed * t * (1 + t / 30);
    res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8" });
    res.end(render(variant, factor, extra));
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      resolve({ url: `http://127.0.0.1:${port}/metrics`, close: () => server.close() });
    });
  });
}
