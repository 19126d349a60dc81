// Where cargo put the zai-dash binary the browser tests drive. Shared build set-ups move the
// target directory (CARGO_TARGET_DIR, or `build.target-dir` in a cargo config), so the path
// is asked of cargo rather than assumed to be ./target.
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import readline from "node:readline";

/** The cargo target directory of the repository at `repo`. */
export function targetDir(repo, env = process.env) {
  if (env.CARGO_TARGET_DIR) return path.resolve(repo, env.CARGO_TARGET_DIR);
  const out = execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], {
    cwd: repo,
    env,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(out).target_directory;
}

/** The debug binary (what `cargo build` makes and scripts/test builds), or ZAI_DASH_BIN. */
export function binaryPath(repo, env = process.env) {
  if (env.ZAI_DASH_BIN) return path.resolve(repo, env.ZAI_DASH_BIN);
  return path.join(targetDir(repo, env), "debug", "zai-dash");
}

/**
 * Starts `zai-dash serve` (the binary of `repo`) with `env` over this process' environment (a
 * key set to `undefined` is removed) and resolves, once it prints its address, to the child and
 * its base URL. Its stderr goes to the test's output.
 */
export async function startZaiDash(repo, env) {
  const bin = binaryPath(repo);
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run cargo build first (or set ZAI_DASH_BIN)`);
  const merged = { ...process.env, ...env };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  const child = spawn(bin, ["serve"], { env: merged, stdio: ["ignore", "pipe", "inherit"] });
  const first = await new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: child.stdout });
    rl.once("line", resolve);
    child.once("exit", (code) => reject(new Error(`zai-dash exited with ${code}`)));
  });
  const m = /^listening on (http:\/\/\S+)$/.exec(first);
  if (!m) throw new Error(`unexpected first line: ${first}`);
  return { child, base: m[1] };
}

/** Polls `fn` every 200 ms until it is true, failing after `limitMs`. */
export async function waitFor(what, fn, limitMs = 30000) {
  const start = Date.now();
  for (;;) {
    if (await fn()) return;
    if (Date.now() - start > limitMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * Debian's headless Chromium with a fresh profile under `dir` (the flags the project's browser
 * tests use), through playwright-core's `chromium` (the caller's copy, from frontend/).
 */
export function launchChromium(chromium, dir, viewport) {
  return chromium.launchPersistentContext(path.join(dir, "profile"), {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--no-first-run",
      "--disable-sync",
    ],
    viewport,
  });
}

/** Sends SIGTERM to a started zai-dash still running and waits for it to exit. */
export async function stopZaiDash(child) {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  await exited;
}
