// The incident's browser frontend, twice, on the official TypeScript MCP SDK (bundled by esbuild
// into frontend.js and loaded by index.html; driven in headless Chromium by browser_driver.ts).
//
// - broken: a `getToken` callback like the incident's that is wrong about WHEN to send the token:
//   it sends it while the client initializes and withholds it afterwards, as if the MCP session
//   remembered who the user is. The adapter reads `Authorization` on every request, so every
//   request after connecting (tools/list, the tool calls) is refused with HTTP 401, and the page
//   shows that answer.
// - fixed: `connectFixed`, the pattern README.md ("Connecting a client") shows: the header goes
//   in `requestInit.headers`, so the SDK sends it on every request (POST, the GET event stream,
//   the DELETE that ends the session).
//
// The page is served from an origin other than the adapter's, so every request is a CORS request
// (the adapter runs with ADAPTER_ALLOWED_ORIGINS set to this page's origin).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import {
  StreamableHTTPClientTransport,
  StreamableHTTPError,
} from "@modelcontextprotocol/sdk/client/streamableHttp.js";

/** What the incident's frontend had at `window.__dynamicAuthManager`. */
export interface AuthManager {
  getCurrentToken(): Promise<string>;
}

declare global {
  interface Window {
    __dynamicAuthManager: AuthManager;
  }
}

/** The fixed client: README "Connecting a client". The token goes on every request. */
export async function connectFixed(mcpUrl: string, auth: AuthManager): Promise<Client> {
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), {
    requestInit: { headers: { Authorization: `Bearer ${await auth.getCurrentToken()}` } },
  });
  const client = new Client({ name: "frontend", version: "1.0.0" });
  await client.connect(transport);
  return client;
}

/** What the last HTTP answer of the broken client said (for the page). */
interface Answer {
  status: number;
  wwwAuthenticate: string | null;
}

/**
 * The broken client: asks `getToken` before every request, and `getToken` returns the token only
 * until the client is initialized.
 */
export async function connectBroken(
  mcpUrl: string,
  auth: AuthManager,
  answers: Answer[],
): Promise<Client> {
  const state = { isInitialized: false };
  const getToken = async (): Promise<string | null> =>
    state.isInitialized ? null : await auth.getCurrentToken();
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), {
    fetch: async (input, init) => {
      const headers = new Headers(init?.headers);
      const token = await getToken();
      if (token) {
        headers.set("Authorization", `Bearer ${token}`);
      } else {
        headers.delete("Authorization");
      }
      const response = await fetch(input, { ...init, headers });
      answers.push({
        status: response.status,
        wwwAuthenticate: response.headers.get("WWW-Authenticate"),
      });
      return response;
    },
  });
  const client = new Client({ name: "frontend", version: "1.0.0" });
  await client.connect(transport);
  state.isInitialized = true;
  return client;
}

// ---------------------------------------------------------------------------------------------
// The page

interface ToolResult {
  isError?: boolean;
  structuredContent?: Record<string, unknown>;
  content?: unknown;
}

interface ListedObject {
  key: string;
}

function section(id: string) {
  const root = document.getElementById(id)!;
  const log = root.querySelector(".log")!;
  const status = root.querySelector(".status")!;
  const objects = root.querySelector(".objects")!;
  return {
    line(text: string) {
      const li = document.createElement("li");
      li.textContent = text;
      log.appendChild(li);
      console.log(`[${id}] ${text}`);
    },
    status(text: string) {
      status.textContent = text;
    },
    objects(keys: string[]) {
      objects.replaceChildren(
        ...keys.map((key) => {
          const li = document.createElement("li");
          li.textContent = key;
          return li;
        }),
      );
    },
  };
}

function transportOf(client: Client): StreamableHTTPClientTransport {
  return client.transport as StreamableHTTPClientTransport;
}

function describeSession(client: Client): string {
  const transport = transportOf(client);
  return `protocol ${transport.protocolVersion}, session ${transport.sessionId ? "yes" : "no"}`;
}

function describe(error: unknown): string {
  if (error instanceof StreamableHTTPError) {
    return `HTTP ${error.code}: ${error.message}`;
  }
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function structured(result: ToolResult, what: string): Record<string, unknown> {
  if (result.isError || !result.structuredContent) {
    throw new Error(`${what} failed: ${JSON.stringify(result)}`);
  }
  return result.structuredContent;
}

function keysOf(listing: Record<string, unknown>): string[] {
  return (listing.objects as ListedObject[]).map((o) => o.key);
}

const params = new URLSearchParams(location.search);
const mcpUrl = params.get("mcp")!;
const bucket = params.get("bucket")!;
const writeKey = params.get("key") ?? `browser/${Date.now()}.txt`;

async function runBroken(): Promise<void> {
  const page = section("broken");
  page.status("running");
  const answers: Answer[] = [];
  try {
    const client = await connectBroken(mcpUrl, window.__dynamicAuthManager, answers);
    page.line(`initialize: ok, ${describeSession(client)}`);
    try {
      const tools = await client.listTools();
      page.line(`tools/list: ${tools.tools.length} tools`);
    } catch (error) {
      const last = answers[answers.length - 1];
      page.line(`tools/list refused: ${describe(error)}`);
      page.line(`tools/list WWW-Authenticate: ${last?.wwwAuthenticate ?? "(none)"}`);
    }
    for (const [name, args] of [
      ["bucket_objects_list", { bucket: `s3://${bucket}` }],
      ["bucket_objects_put", { bucket, items: [{ key: writeKey, text: "from the broken client" }] }],
    ] as const) {
      try {
        await client.callTool({ name, arguments: args });
        page.line(`${name}: ALLOWED without a token`);
      } catch (error) {
        const last = answers[answers.length - 1];
        page.line(`${name} refused: ${describe(error)}`);
        page.line(`${name} WWW-Authenticate: ${last?.wwwAuthenticate ?? "(none)"}`);
      }
    }
    await client.close();
    page.status("done");
  } catch (error) {
    page.status(`failed: ${describe(error)}`);
  }
}

async function runFixed(): Promise<void> {
  const page = section("fixed");
  page.status("running");
  try {
    const client = await connectFixed(mcpUrl, window.__dynamicAuthManager);
    page.line(`initialize: ok, ${describeSession(client)}`);
    const tools = await client.listTools();
    page.line(`tools/list: ${tools.tools.length} tools`);
    const listed = structured(
      (await client.callTool({
        name: "bucket_objects_list",
        arguments: { bucket: `s3://${bucket}` },
      })) as ToolResult,
      "bucket_objects_list",
    );
    page.line(`bucket_objects_list: ${listed.count} objects`);
    page.objects(keysOf(listed));
    const put = structured(
      (await client.callTool({
        name: "bucket_objects_put",
        arguments: { bucket, items: [{ key: writeKey, text: "written from the browser" }] },
      })) as ToolResult,
      "bucket_objects_put",
    );
    page.line(`bucket_objects_put: uploaded ${put.uploaded} of ${put.requested}: ${writeKey}`);
    const again = structured(
      (await client.callTool({
        name: "bucket_objects_list",
        arguments: { bucket: `s3://${bucket}` },
      })) as ToolResult,
      "bucket_objects_list",
    );
    page.objects(keysOf(again));
    page.line(`bucket_objects_list again: ${again.count} objects`);
    await transportOf(client).terminateSession();
    page.line("session ended (DELETE)");
    await client.close();
    page.status("done");
  } catch (error) {
    page.status(`failed: ${describe(error)}`);
  }
}

document.getElementById("run-broken")!.addEventListener("click", () => void runBroken());
document.getElementById("run-fixed")!.addEventListener("click", () => void runFixed());
document.getElementById("ready")!.textContent = "ready";
