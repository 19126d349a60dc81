// The browser tests find the binary wherever cargo builds it.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { binaryPath, targetDir } from "./binary.mjs";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");

test("CARGO_TARGET_DIR moves the binary", () => {
  const env = { ...process.env, CARGO_TARGET_DIR: "/tmp/shared-target" };
  delete env.ZAI_DASH_BIN;
  assert.equal(binaryPath(repo, env), "/tmp/shared-target/debug/zai-dash");
  // A relative directory is relative to the repository, as cargo reads it.
  assert.equal(targetDir(repo, { ...env, CARGO_TARGET_DIR: "out" }), path.join(repo, "out"));
});

test("without CARGO_TARGET_DIR, cargo's own answer is used (a cargo config may move it too)", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "zai-dash-cargo-home-"));
  try {
    // A cargo config in a directory above the repository would apply; CARGO_HOME's applies too.
    fs.writeFileSync(path.join(dir, "config.toml"), `[build]\ntarget-dir = "${path.join(dir, "elsewhere")}"\n`);
    const env = { ...process.env, CARGO_HOME: dir };
    delete env.CARGO_TARGET_DIR;
    delete env.ZAI_DASH_BIN;
    // CARGO_HOME also holds the registry; metadata with --no-deps needs none of it.
    assert.equal(binaryPath(repo, env), path.join(dir, "elsewhere", "debug", "zai-dash"));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("ZAI_DASH_BIN wins", () => {
  assert.equal(binaryPath(repo, { ZAI_DASH_BIN: "/opt/zai-dash" }), "/opt/zai-dash");
});
