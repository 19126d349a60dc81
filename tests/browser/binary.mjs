// Where cargo put the zai-dash binary the browser tests drive. Shared build set-ups move the
// target directory (CARGO_TARGET_DIR, or `build.target-dir` in a cargo config), so the path
// is asked of cargo rather than assumed to be ./target.
import { execFileSync } from "node:child_process";
import path from "node:path";

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
