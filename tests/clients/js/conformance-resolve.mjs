// Resolve hook (registered by conformance-hook.mjs): the conformance suite's `fs` import gets
// conformance-fs.mjs instead; every other import resolves as usual.
const shim = new URL("./conformance-fs.mjs", import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  const fromSuite = context.parentURL?.includes("/@modelcontextprotocol/conformance/");
  if (fromSuite && (specifier === "fs" || specifier === "node:fs")) {
    return { url: shim, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}
