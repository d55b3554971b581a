// Drives the test page (index.html + frontend.js) in headless Debian Chromium with playwright-core
// and prints one JSON object for tests/tests/clients_js.rs.
//
// Input (stdin, JSON): { mcp_url, bucket, key, token, page_port, foreign_port, chromium }
//
// The page is served by a tiny static server on 127.0.0.1:<page_port>, an origin other than the
// adapter's (and one the adapter allows). Then the same page is served on <foreign_port>, an
// origin the adapter does not allow, and its fixed client must get nowhere. The token reaches
// the page the way the incident's frontend had it: `window.__dynamicAuthManager.getCurrentToken()`. Like the incident's console monitor, every
// request the page makes is recorded with whether it carried `Authorization` (never the token).
import { createServer, type Server } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, extname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";
import { chromium, type Request } from "playwright-core";

interface Input {
  mcp_url: string;
  bucket: string;
  key: string;
  token: string;
  page_port: number;
  foreign_port: number;
  chromium: string;
}

const WAIT_MS = 30_000;
const here = dirname(fileURLToPath(import.meta.url));

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function serveStatic(port: number): Promise<Server> {
  const types: Record<string, string> = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
  };
  const server = createServer(async (req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const name = path === "/" ? "index.html" : path.slice(1);
    if (!/^[\w.-]+$/.test(name) || !(extname(name) in types)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(join(here, name));
      res.writeHead(200, { "content-type": types[extname(name)], "cache-control": "no-store" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

/** What one request to the adapter looked like (recorded like the incident's fetch monitor). */
interface Seen {
  phase: string;
  method: string;
  rpc: string;
  has_auth: boolean;
  auth_is_token: boolean;
  origin: string | null;
  status: number | null;
  failure: string | null;
}

function rpcOf(request: Request): string {
  if (request.method() === "GET") return "event-stream";
  if (request.method() === "DELETE") return "end-session";
  try {
    const body = JSON.parse(request.postData() ?? "null");
    const messages = Array.isArray(body) ? body : [body];
    return messages
      .map((m: { method?: string; params?: { name?: string } }) =>
        m?.method === "tools/call" ? `tools/call ${m.params?.name}` : (m?.method ?? "response"),
      )
      .join(",");
  } catch {
    return "?";
  }
}

async function main(): Promise<void> {
  const input = JSON.parse(await readStdin()) as Input;
  const require = createRequire(import.meta.url);
  const playwrightVersion = (require("playwright-core/package.json") as { version: string })
    .version;
  const servers = [await serveStatic(input.page_port)];
  const pageOrigin = `http://127.0.0.1:${input.page_port}`;
  const browser = await chromium.launch({
    executablePath: input.chromium,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const console_: string[] = [];
  const pageErrors: string[] = [];
  const pending: Promise<Seen>[] = [];
  let phase = "load";
  try {
    const context = await browser.newContext();
    context.setDefaultTimeout(WAIT_MS);
    context.on("console", (m) => console_.push(`${m.type()}: ${m.text()}`));
    context.on("weberror", (e) => pageErrors.push(String(e.error())));
    context.on("request", (request) => {
      if (!request.url().startsWith(input.mcp_url)) return;
      const seenPhase = phase;
      pending.push(
        (async () => {
          const headers = await request.allHeaders();
          const response = await request.response().catch(() => null);
          return {
            phase: seenPhase,
            method: request.method(),
            rpc: rpcOf(request),
            has_auth: "authorization" in headers,
            auth_is_token: headers["authorization"] === `Bearer ${input.token}`,
            origin: headers["origin"] ?? null,
            status: response?.status() ?? null,
            failure: request.failure()?.errorText ?? null,
          };
        })(),
      );
    });

    const query = new URLSearchParams({ mcp: input.mcp_url, bucket: input.bucket, key: input.key });
    await context.addInitScript((token: string) => {
      (window as unknown as { __dynamicAuthManager: unknown }).__dynamicAuthManager = {
        getCurrentToken: async () => token,
      };
    }, input.token);
    const open = async (origin: string) => {
      const page = await context.newPage();
      await page.goto(`${origin}/index.html?${query}`);
      await page.waitForFunction(() => document.getElementById("ready")?.textContent === "ready");
      return page;
    };
    const page = await open(pageOrigin);
    const foreignOrigin = `http://127.0.0.1:${input.foreign_port}`;
    servers.push(await serveStatic(input.foreign_port));
    const foreignPage = await open(foreignOrigin);

    const sections: Record<string, unknown> = {};
    for (const [name, id, where] of [
      ["broken", "broken", page],
      ["fixed", "fixed", page],
      ["foreign", "fixed", foreignPage],
    ] as const) {
      phase = name;
      await where.click(`#run-${id}`);
      await where.waitForFunction(
        (id: string) => {
          const s = document.querySelector(`#${id} .status`)?.textContent;
          return s === "done" || s?.startsWith("failed");
        },
        id,
      );
      // Let the last answers (the DELETE, the event stream's end) arrive before the next phase.
      await where.waitForTimeout(200);
      sections[name] = await where.evaluate((id: string) => {
        const root = document.getElementById(id)!;
        const texts = (sel: string) =>
          Array.from(root.querySelectorAll(sel)).map((e) => e.textContent ?? "");
        return {
          status: root.querySelector(".status")?.textContent,
          log: texts(".log li"),
          objects: texts(".objects li"),
          text: root.innerText,
        };
      }, id);
    }
    phase = "after";
    const requests = await Promise.all(pending);
    process.stdout.write(
      JSON.stringify({
        versions: {
          node: process.version,
          playwright_core: playwrightVersion,
          chromium: browser.version(),
        },
        page_origin: pageOrigin,
        foreign_origin: foreignOrigin,
        ...sections,
        requests,
        console: console_,
        page_errors: pageErrors,
      }) + "\n",
    );
  } finally {
    await browser.close();
    for (const server of servers) server.close();
  }
}

main().catch((error) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exit(1);
});
