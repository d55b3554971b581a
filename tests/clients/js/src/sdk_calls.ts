// The official TypeScript MCP SDK making many tool calls in one session, for
// tests/tests/adapter_replicas.rs (adapters behind a round-robin balancer). Prints one JSON object.
//
// Input (stdin, JSON): { url, bucket, token, calls }
//
// One client with the token in `requestInit.headers`: initialize, `calls` × bucket_objects_list,
// then terminateSession (DELETE). Every tool call's outcome is kept (ok, isError, or the error the
// SDK threw), and every HTTP answer's method and status (never the token).
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

interface Input {
  url: string;
  bucket: string;
  token: string;
  calls: number;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function main(): Promise<void> {
  const input = JSON.parse(await readStdin()) as Input;
  const answers: { method: string; status: number }[] = [];
  const transport = new StreamableHTTPClientTransport(new URL(input.url), {
    requestInit: { headers: { Authorization: `Bearer ${input.token}` } },
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      answers.push({ method: init?.method ?? "GET", status: response.status });
      return response;
    },
  });
  const client = new Client({ name: "e2e-sdk-replicas", version: "1.0.0" });
  await client.connect(transport);
  const session_id = transport.sessionId ?? null;
  const outcomes: string[] = [];
  for (let i = 0; i < input.calls; i++) {
    try {
      const result = await client.callTool({
        name: "bucket_objects_list",
        arguments: { bucket: input.bucket },
      });
      outcomes.push(result.isError ? `isError: ${JSON.stringify(result.content)}` : "ok");
    } catch (error) {
      outcomes.push(`threw: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  await transport.terminateSession();
  await client.close();
  console.log(
    JSON.stringify({
      versions: { node: process.version },
      session_id: session_id !== null,
      outcomes,
      answers,
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
