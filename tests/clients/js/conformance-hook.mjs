// Lets `@modelcontextprotocol/conformance` 0.1.16 run on Node.js 20: the suite imports
// `globSync` from "fs", which Node added in 22. Used as `node --import ./conformance-hook.mjs
// node_modules/@modelcontextprotocol/conformance/dist/index.js server …` (tests/tests/mcp_conformance.rs).
// On Node >= 22 the shim re-exports Node's own `globSync`, so the hook changes nothing there.
import { register } from "node:module";

register("./conformance-resolve.mjs", import.meta.url);
