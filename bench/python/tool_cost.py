#!/usr/bin/env python3
"""Server CPU and latency per MCP request, split by how far the request goes.

Run against the local stack (deploy/local/up), in a shell that sourced its stack.env:

    deploy/local/up &                    # or in another terminal
    source .cache/local-stack/stack.env
    .venv/bin/python bench/python/tool_cost.py          # N=600 for more calls

It opens one MCP session with the read-write token and sends, on one keep-alive connection, N of
each: `tools/list` (adapter + token check at the broker), a `tools/call` refused before S3 (invalid
bucket: adapter, broker, rmcp, no S3), and a `tools/call bucket_objects_list` on demo-bucket
(everything). For each it prints wall time per call and the utime+stime per call of the adapter
and the broker processes (/proc/<pid>/stat), which is how BENCHMARKS.md splits the adapter's cost.
"""
import http.client
import json
import os
import sys
import time
from urllib.parse import urlparse


def cpu(pid: str) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    env = os.environ
    try:
        url, token = urlparse(env["LOCAL_MCP_URL"]), env["LOCAL_RW_TOKEN"]
        adapter, broker = env["LOCAL_ADAPTER_PID"], env["LOCAL_BROKER_PID"]
    except KeyError as missing:
        print(f"{missing} is not set: source the local stack's stack.env first", file=sys.stderr)
        return 2
    n = int(env.get("N", "300"))
    conn = http.client.HTTPConnection(url.hostname, url.port)
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2025-06-18",
    }

    def post(body: dict) -> tuple[int, bytes, http.client.HTTPResponse]:
        conn.request("POST", url.path, json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, response.read(), response

    status, _, response = post({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "tool_cost", "version": "1"}},
    })
    assert status == 200, status
    headers["Mcp-Session-Id"] = response.getheader("mcp-session-id")
    post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    requests = {
        "tools/list": {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        "tools/call refused before S3": {
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "bucket_objects_list", "arguments": {"bucket": "x!"}}},
        "tools/call bucket_objects_list": {
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "bucket_objects_list", "arguments": {"bucket": "demo-bucket"}}},
    }
    print(f"{n} calls each, one session, one keep-alive connection")
    for name, body in requests.items():
        for _ in range(20):
            post(body)
        a0, b0, t0 = cpu(adapter), cpu(broker), time.perf_counter()
        for _ in range(n):
            status, answer, _ = post(body)
            assert status == 200, (status, answer[:200])
        elapsed = time.perf_counter() - t0
        a1, b1 = cpu(adapter), cpu(broker)
        print(f"{name:32s} {elapsed / n * 1e3:6.2f} ms/call   adapter CPU {(a1 - a0) / n * 1e6:5.0f} µs/call"
              f"   broker CPU {(b1 - b0) / n * 1e6:5.0f} µs/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
