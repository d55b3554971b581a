// Compiles the TypeScript in src/ with esbuild (no tsc) into an output directory under dist/
// (gitignored). The Rust tests (tests/tests/clients_js.rs) run it at test time, each into its own
// directory, so tests running in parallel never overwrite each other's files:
//
//   node build.mjs [dist/<name>]      # default: dist/local
//
// - sdk_client.mjs, browser_driver.mjs: Node programs (ESM); packages stay imports resolved from
//   this directory's node_modules (the output lives below it).
// - frontend.js + index.html: the browser page; frontend.js bundles the TypeScript MCP SDK.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = resolve(here, process.argv[2] ?? "dist/local");
if (!outdir.startsWith(join(here, "dist") + "/")) {
  throw new Error(`output directory must be under ${join(here, "dist")}: ${outdir}`);
}
await mkdir(outdir, { recursive: true });

const common = { bundle: true, sourcemap: "inline", logLevel: "warning", target: "es2022" };
await build({
  ...common,
  entryPoints: [
    join(here, "src/sdk_client.ts"),
    join(here, "src/sdk_calls.ts"),
    join(here, "src/browser_driver.ts"),
  ],
  outdir,
  outExtension: { ".js": ".mjs" },
  platform: "node",
  format: "esm",
  packages: "external",
});
await build({
  ...common,
  entryPoints: [join(here, "src/frontend.ts")],
  outdir,
  platform: "browser",
  format: "esm",
});
await copyFile(join(here, "page/index.html"), join(outdir, "index.html"));
console.log(outdir);
