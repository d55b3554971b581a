#!/usr/bin/env python3
"""The stack the incident's backend used, rebuilt as the adapter's baseline.

The official MCP Python SDK's ``MCPServer`` (formerly FastMCP) over Streamable HTTP, with boto3,
exposing the same ``bucket_objects_list`` tool as ``mcp-adapter``:

* every tool call validates the caller's HS256 JWT (signature, ``exp``, ``iss``, ``aud``) from its
  own ``Authorization`` header, as the broker does for a new token;
* the process holds an AWS identity and assumes the token's role once per token (``sts:AssumeRole``
  with ``SourceIdentity``), caching a boto3 S3 client per token;
* the S3 call runs in a worker thread (``anyio.to_thread``), so the event loop keeps serving other
  calls while boto3 waits on S3 -- the most generous way to run boto3 under an async server.

With ``BENCH_LEAN=1`` it answers with JSON instead of an SSE stream per call (``json_response``):
the lean stack of the benchmarks, the cheapest honest way to write the incident's backend.

Everything else is the SDK's default (logging, transport security, sessions), as a team would
deploy it. Configuration comes from the environment (set by ``credbroker-bench``):
``BENCH_PORT``, ``BENCH_JWT_SECRET``, ``BENCH_JWT_ISSUER``, ``BENCH_JWT_AUDIENCE``,
``BENCH_S3_ENDPOINT``, ``BENCH_STS_ENDPOINT``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import os
import threading
import uuid
from typing import Any

import anyio
import boto3
import jwt
from botocore.config import Config
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

SECRET = os.environ["BENCH_JWT_SECRET"]
ISSUER = os.environ["BENCH_JWT_ISSUER"]
AUDIENCE = os.environ["BENCH_JWT_AUDIENCE"]
S3_ENDPOINT = os.environ["BENCH_S3_ENDPOINT"]
STS_ENDPOINT = os.environ["BENCH_STS_ENDPOINT"]
REGION = os.environ.get("AWS_REGION", "us-east-1")

# The process's own identity (the broker user's keys: it may assume the demo roles).
_sts = boto3.client("sts", endpoint_url=STS_ENDPOINT, region_name=REGION)
_s3_by_token: dict[str, Any] = {}
_lock = threading.Lock()

app = MCPServer("python-s3-baseline")


def _authenticate(ctx: Context) -> tuple[str, dict[str, Any]]:
    """The caller's token and its validated claims, from this request's own header."""
    header = (ctx.headers or {}).get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise ToolError("send `Authorization: Bearer <JWT>`")
    token = header[7:].strip()
    try:
        claims = jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            issuer=ISSUER,
            audience=AUDIENCE,
            options={"require": ["exp", "sub"]},
        )
    except jwt.PyJWTError as e:
        raise ToolError(f"invalid token: {e}") from None
    return token, claims


def _s3_for(token: str, claims: dict[str, Any]) -> Any:
    """One AssumeRole per token, then the cached client."""
    with _lock:
        client = _s3_by_token.get(token)
        if client is not None:
            return client
        subject = str(claims["sub"])
        creds = _sts.assume_role(
            RoleArn=claims["role_arn"],
            RoleSessionName=f"{subject.split('@')[0][:40]}-{uuid.uuid4().hex[:8]}",
            SourceIdentity=subject,
            DurationSeconds=3600,
        )["Credentials"]
        client = boto3.client(
            "s3",
            endpoint_url=S3_ENDPOINT,
            region_name=REGION,
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            config=Config(s3={"addressing_style": "path"}),
        )
        _s3_by_token[token] = client
        return client


@app.tool(
    name="bucket_objects_list",
    description="List objects in an S3 bucket, one page at a time.",
)
async def bucket_objects_list(
    bucket: str,
    ctx: Context,
    prefix: str = "",
    max_keys: int = 100,
    continuation_token: str = "",
) -> dict[str, Any]:
    token, claims = _authenticate(ctx)
    name = bucket.removeprefix("s3://").split("/", 1)[0]

    def work() -> dict[str, Any]:
        s3 = _s3_for(token, claims)
        kwargs: dict[str, Any] = {"Bucket": name, "MaxKeys": max_keys}
        if prefix:
            kwargs["Prefix"] = prefix
        if continuation_token:
            kwargs["ContinuationToken"] = continuation_token
        page = s3.list_objects_v2(**kwargs)
        objects = [
            {
                "key": o["Key"],
                "s3_uri": f"s3://{name}/{o['Key']}",
                "size": o["Size"],
                "last_modified": o["LastModified"].isoformat(),
                "etag": o.get("ETag"),
            }
            for o in page.get("Contents", [])
        ]
        return {
            "bucket": name,
            "prefix": prefix,
            "count": len(objects),
            "objects": objects,
            "is_truncated": page.get("IsTruncated", False),
            "next_continuation_token": page.get("NextContinuationToken"),
        }

    return await anyio.to_thread.run_sync(work)


if __name__ == "__main__":
    # BENCH_LEAN=1: the lean variant -- JSON answers instead of an SSE stream per call (the
    # cheapest honest way to serve one answer per request); everything else is the same.
    app.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(os.environ["BENCH_PORT"]),
        json_response=os.environ.get("BENCH_LEAN") == "1",
    )
