#!/usr/bin/env python3
"""Drive the MCP adapter with the official Python MCP client (PyPI ``mcp``), step by step.

Used by ``tests/tests/adapter_mcp.rs``. The plan arrives as ONE JSON line on stdin (tokens are
secrets: never on the command line, where ``ps`` shows them)::

    {"url": "http://127.0.0.1:PORT/mcp", "mode": "legacy" | "auto", "token": "<JWT>" | null,
     "steps": [
        {"op": "call", "tool": "bucket_objects_list", "args": {...}, "progress": true},
        {"op": "read_resource", "uri": "s3://bucket/key"},
        {"op": "complete", "argument": "key", "value": "pre", "context": {"bucket": "b"}},
        {"op": "list_tools"},
        {"op": "token", "token": "<JWT>" | null},   # change the Authorization header from now on
        {"op": "pause", "say": "bound"}               # print {"paused": "bound"}, wait for a stdin line
     ]}

The client is ``mcp.client.Client`` over ``streamable_http_client`` with an ``httpx2.AsyncClient``
that carries ``Authorization: Bearer <JWT>`` (the way the incident's frontend should have) on every
request, in ``legacy`` mode (initialize handshake, ``Mcp-Session-Id``) or ``auto`` mode (probes
``server/discover`` and runs 2026-07-28 without a session when the server speaks it).

Output: one JSON line per event on stdout. First ``{"connected": {...}}`` (or
``{"connect_error": ...}``), then one ``{"step": i, ...}`` per step with the tool result or the
JSON-RPC error, and the HTTP answers the step caused (``status``, ``www_authenticate``,
``session`` = whether a session id was sent). Never prints a token.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx2
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import ResourceTemplateReference


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class HttpLog:
    """Every HTTP answer the client got, via httpx event hooks."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        # Reported once, so the test can check that logs never show it.
        self.session_id: str | None = None

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        if self.session_id is None and response.headers.get("mcp-session-id"):
            self.session_id = response.headers["mcp-session-id"]
        self.entries.append(
            {
                "method": request.method,
                "status": response.status_code,
                "www_authenticate": response.headers.get("www-authenticate"),
                "session": "mcp-session-id" in request.headers,
                "protocol_version": request.headers.get("mcp-protocol-version"),
                "authorized": "authorization" in request.headers,
            }
        )

    def take(self) -> list[dict[str, Any]]:
        taken, self.entries = self.entries, []
        return taken


def set_token(http: httpx2.AsyncClient, token: str | None) -> None:
    if token:
        http.headers["Authorization"] = f"Bearer {token}"
    elif "Authorization" in http.headers:
        del http.headers["Authorization"]


def describe_result(result: Any) -> dict[str, Any]:
    texts = [block.text for block in result.content if getattr(block, "type", None) == "text"]
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": texts,
    }


async def run(plan: dict[str, Any]) -> int:
    log = HttpLog()
    http = httpx2.AsyncClient(
        timeout=httpx2.Timeout(30.0, read=60.0),
        event_hooks={"response": [log.on_response]},
    )
    set_token(http, plan.get("token"))
    client = Client(streamable_http_client(plan["url"], http_client=http), mode=plan.get("mode", "auto"))
    try:
        await client.__aenter__()
    except Exception as exc:  # noqa: BLE001 - reported to the test, which decides
        emit({"connect_error": f"{type(exc).__name__}: {exc}", "http": log.take()})
        await http.aclose()
        return 0
    emit(
        {
            "connected": {"protocol_version": client.protocol_version},
            "session_id": log.session_id,
            "http": log.take(),
        }
    )
    loop = asyncio.get_running_loop()
    try:
        for index, step in enumerate(plan["steps"]):
            op = step["op"]
            outcome: dict[str, Any] = {"step": index, "op": op}
            try:
                if op == "call":
                    progress: list[dict[str, Any]] = []

                    async def on_progress(done: float, total: float | None, message: str | None) -> None:
                        progress.append({"progress": done, "total": total, "message": message})

                    result = await client.call_tool(
                        step["tool"],
                        step.get("args") or {},
                        progress_callback=on_progress if step.get("progress") else None,
                    )
                    outcome.update(describe_result(result))
                    if step.get("progress"):
                        outcome["progress"] = progress
                elif op == "read_resource":
                    read = await client.read_resource(step["uri"])
                    outcome["contents"] = [
                        content.model_dump(by_alias=True, exclude_none=True) for content in read.contents
                    ]
                elif op == "complete":
                    completion = await client.complete(
                        ResourceTemplateReference(type="ref/resource", uri="s3://{bucket}/{+key}"),
                        {"name": step["argument"], "value": step.get("value", "")},
                        context_arguments=step.get("context"),
                    )
                    outcome["values"] = completion.completion.values
                    outcome["has_more"] = completion.completion.has_more
                elif op == "list_tools":
                    tools = await client.list_tools()
                    outcome["tools"] = sorted(tool.name for tool in tools.tools)
                elif op == "token":
                    set_token(http, step.get("token"))
                elif op == "pause":
                    emit({"paused": step.get("say", "")})
                    await loop.run_in_executor(None, sys.stdin.readline)
                else:
                    raise ValueError(f"unknown op {op!r}")
            except MCPError as exc:
                outcome["error"] = {"code": exc.error.code, "message": exc.error.message}
            outcome["http"] = log.take()
            emit(outcome)
    finally:
        try:
            await client.__aexit__(None, None, None)
        except Exception as exc:  # noqa: BLE001
            emit({"close_error": f"{type(exc).__name__}: {exc}"})
        emit({"closed": True, "http": log.take()})
        await http.aclose()
    return 0


def main() -> int:
    plan = json.loads(sys.stdin.readline())
    return asyncio.run(run(plan))


if __name__ == "__main__":
    sys.exit(main())
