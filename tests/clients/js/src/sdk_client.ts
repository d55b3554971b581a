// The official TypeScript MCP SDK (@modelcontextprotocol/sdk) from Node.js against the adapter,
// for tests/tests/clients_js.rs. Prints one JSON object.
//
// Input (stdin, JSON): { url, bucket, key, rw_token, ro_token }
//
// Three clients, each with the token (or none) in `requestInit.headers`, as README.md shows:
// - rw: initialize, tools/list, bucket_objects_list, bucket_objects_put, list again, the object
//   read as a resource, its key completed, a put of 20 items with progress, DELETE;
// - ro: the read-only role lists, and its bucket_objects_put is refused by S3 (moto's IAM);
// - anonymous: with the adapter's default ADAPTER_REQUIRE_AUTH=all, initialize itself gets the
//   401, which the SDK surfaces as a StreamableHTTPError carrying the status and the answer's body.
// A recording `fetch` notes each HTTP answer's status and WWW-Authenticate (never the token).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import {
  StreamableHTTPClientTransport,
  StreamableHTTPError,
} from "@modelcontextprotocol/sdk/client/streamableHttp.js";

interface Input {
  url: string;
  bucket: string;
  key: string;
  rw_token: string;
  ro_token: string;
}

interface Answer {
  method: string;
  status: number;
  has_auth: boolean;
  www_authenticate: string | null;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function recordingFetch(answers: Answer[]): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init);
    answers.push({
      method: init?.method ?? "GET",
      status: response.status,
      has_auth: new Headers(init?.headers).has("authorization"),
      www_authenticate: response.headers.get("www-authenticate"),
    });
    return response;
  };
}

async function connect(url: string, token: string | null, answers: Answer[]) {
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: token ? { headers: { Authorization: `Bearer ${token}` } } : undefined,
    fetch: recordingFetch(answers),
  });
  const client = new Client({ name: "e2e-sdk-client", version: "1.0.0" });
  await client.connect(transport);
  return { client, transport };
}

function errorOf(error: unknown) {
  return {
    name: error instanceof Error ? error.constructor.name : typeof error,
    code: error instanceof StreamableHTTPError ? error.code : null,
    message: error instanceof Error ? error.message : String(error),
  };
}

/** Runs `f`, returning its value or the error it threw. */
async function step<T>(f: () => Promise<T>): Promise<{ ok: T } | { error: ReturnType<typeof errorOf> }> {
  try {
    return { ok: await f() };
  } catch (error) {
    return { error: errorOf(error) };
  }
}

async function main(): Promise<void> {
  const input = JSON.parse(await readStdin()) as Input;
  const out: Record<string, unknown> = { versions: { node: process.version } };

  // Read-write token.
  {
    const answers: Answer[] = [];
    const { client, transport } = await connect(input.url, input.rw_token, answers);
    const tools = await client.listTools();
    const list = await client.callTool({
      name: "bucket_objects_list",
      arguments: { bucket: `s3://${input.bucket}` },
    });
    const put = await client.callTool({
      name: "bucket_objects_put",
      arguments: {
        bucket: input.bucket,
        items: [{ key: input.key, text: "written by the TypeScript SDK" }],
      },
    });
    const again = await client.callTool({
      name: "bucket_objects_list",
      arguments: { bucket: input.bucket, prefix: input.key },
    });
    // Issue 17: the object as a resource, a key completed, progress from a put of 20 items.
    const resource = await step(() => client.readResource({ uri: `s3://${input.bucket}/${input.key}` }));
    const completion = await step(() =>
      client.complete({
        ref: { type: "ref/resource", uri: "s3://{bucket}/{+key}" },
        argument: { name: "key", value: input.key.slice(0, input.key.lastIndexOf("/") + 1) },
        context: { arguments: { bucket: input.bucket } },
      }),
    );
    const progress: { progress: number; total?: number }[] = [];
    const items = Array.from({ length: 20 }, (_, i) => ({ key: `from-js/progress/${i}.txt`, text: `item ${i}` }));
    const put20 = await step(() =>
      client.callTool({ name: "bucket_objects_put", arguments: { bucket: input.bucket, items } }, undefined, {
        onprogress: (p) => progress.push({ progress: p.progress, total: p.total }),
      }),
    );
    const session_id = transport.sessionId ?? null;
    const protocol_version = transport.protocolVersion ?? null;
    await transport.terminateSession();
    await client.close();
    out.rw = {
      server: client.getServerVersion(),
      protocol_version,
      session_id,
      tools: tools.tools.map((t) => t.name),
      list,
      put,
      again,
      resource,
      completion,
      put20,
      progress,
      answers,
    };
  }

  // Read-only token.
  {
    const answers: Answer[] = [];
    const { client } = await connect(input.url, input.ro_token, answers);
    const list = await client.callTool({
      name: "bucket_objects_list",
      arguments: { bucket: input.bucket },
    });
    const put = await client.callTool({
      name: "bucket_objects_put",
      arguments: { bucket: input.bucket, items: [{ key: `${input.key}.ro`, text: "must be refused" }] },
    });
    await client.close();
    out.ro = { list, put, answers };
  }

  // No token.
  {
    const answers: Answer[] = [];
    const connected = await step(() => connect(input.url, null, answers));
    let tools = null;
    let call = null;
    if ("ok" in connected) {
      const { client } = connected.ok;
      tools = await step(async () => (await client.listTools()).tools.length);
      call = await step(() =>
        client.callTool({ name: "bucket_objects_list", arguments: { bucket: input.bucket } }),
      );
      await client.close();
    }
    out.anonymous = {
      connected: "ok" in connected ? true : connected.error,
      tools,
      call,
      answers,
    };
  }

  process.stdout.write(JSON.stringify(out) + "\n");
}

main().catch((error) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exit(1);
});
