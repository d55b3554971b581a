#!/usr/bin/env python3
"""Ask moto whether an IAM user's access key was ever used, and for which service.

Used by ``tests/tests/adapter_mcp.rs`` to prove the adapter never made an AWS request with the
ambient identity it was started with: moto records ``AccessKeyLastUsed`` on every request signed
with a key (allowed or denied, before authorization), like IAM's own ``GetAccessKeyLastUsed``.

stdin: one JSON line ``{"endpoint", "admin_key", "admin_secret", "key"}`` (secrets stay off the
command line). stdout: ``{"used": bool, "service": str | null}``.
"""

from __future__ import annotations

import json
import sys

import boto3
from botocore.config import Config


def main() -> int:
    request = json.loads(sys.stdin.readline())
    iam = boto3.client(
        "iam",
        endpoint_url=request["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=request["admin_key"],
        aws_secret_access_key=request["admin_secret"],
        config=Config(retries={"max_attempts": 2, "mode": "standard"}),
    )
    last_used = iam.get_access_key_last_used(AccessKeyId=request["key"])["AccessKeyLastUsed"]
    service = last_used.get("ServiceName")
    used = "LastUsedDate" in last_used and service not in (None, "N/A")
    print(json.dumps({"used": used, "service": service if used else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
