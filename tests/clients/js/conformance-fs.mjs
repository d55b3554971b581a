// `node:fs` plus `globSync` (Node 22's, or the `glob` package's on Node 20).
import fs from "node:fs";
import glob from "glob";

export * from "node:fs";
export default fs;
export const globSync = fs.globSync ?? ((pattern, options) => glob.sync(pattern, options));
