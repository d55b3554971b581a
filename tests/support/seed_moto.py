#!/usr/bin/env python3
"""Seed a fresh moto server so that it behaves like a small, locked-down AWS account.

Used by the end-to-end harness (tests/src/moto.rs) and by the local stack (deploy/local/).

The moto server must have been started with ``INITIAL_NO_AUTH_ACTION_COUNT=3``: its first three
API calls are accepted without credentials, and every later call is signed and checked against
IAM policies. Those three calls create the ``admin`` user, give it an inline ``*:*`` policy and an
access key; everything else is done with the admin's keys. After seeding, moto enforces IAM, so
credentials carry exactly the rights of the identity they belong to:

* buckets ``demo-bucket`` and ``other-bucket``;
* role ``demo-read-write``: ``s3:*`` on demo-bucket and its objects;
* role ``demo-read-only``: ``s3:GetObject`` and ``s3:ListBucket`` on demo-bucket only;
* role ``ops-admin``: ``s3:*`` everywhere, trusted by the account, but outside the broker's
  allowlist and outside the broker user's rights (tests prove the broker never asks for it);
* IAM user ``broker``: may only ``sts:AssumeRole``, ``sts:TagSession`` and
  ``sts:SetSourceIdentity`` on ``role/demo-*``; the broker's own identity;
* IAM user ``ambient``: valid keys without any S3 right, to prove the adapter never falls back to
  ambient credentials.

Prints ONE JSON object on stdout with every ARN and key (see ``main``). Exits non-zero, with the
reason on stderr, when any step fails -- including ``--verify``, which checks that IAM enforcement
is really on (the read-only role gets AccessDenied on PutObject).
"""

from __future__ import annotations

import argparse
import json
import sys

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ACCOUNT_ID = "123456789012"
DEMO_BUCKET = "demo-bucket"
OTHER_BUCKET = "other-bucket"


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def allow(actions, resources) -> dict:
    return {"Effect": "Allow", "Action": actions, "Resource": resources}


# Who may assume the demo roles: the broker user and the account itself (moto compares trust
# principals literally, so the broker user is named), with session tags and a source identity;
# plus web identities (moto does not validate their token).
def trust_policy() -> str:
    return policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": [f"arn:aws:iam::{ACCOUNT_ID}:root", f"arn:aws:iam::{ACCOUNT_ID}:user/broker"]},
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        },
        {
            "Effect": "Allow",
            "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/auth.e2e.test"},
            "Action": ["sts:AssumeRoleWithWebIdentity", "sts:TagSession", "sts:SetSourceIdentity"],
        },
    )


def client(service: str, endpoint: str, region: str, key: str | None = None, secret: str | None = None,
           token: str | None = None):
    kwargs = {
        "endpoint_url": endpoint,
        "region_name": region,
        "config": Config(retries={"max_attempts": 2, "mode": "standard"}, s3={"addressing_style": "path"}),
    }
    # Unsigned calls still need some credentials for botocore to build a request; moto ignores
    # them for the first INITIAL_NO_AUTH_ACTION_COUNT calls.
    kwargs["aws_access_key_id"] = key or "bootstrap"
    kwargs["aws_secret_access_key"] = secret or "bootstrap"
    if token:
        kwargs["aws_session_token"] = token
    return boto3.client(service, **kwargs)


def user_with_key(iam, name: str, inline_policy: str) -> dict:
    user = iam.create_user(UserName=name)["User"]
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-inline", PolicyDocument=inline_policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"arn": user["Arn"], "access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}


def role(iam, name: str, inline_policy: str) -> str:
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust_policy(), MaxSessionDuration=43200)["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName=f"{name}-inline", PolicyDocument=inline_policy)
    return arn


def seed(endpoint: str, region: str) -> dict:
    # The three unauthenticated calls.
    boot = client("iam", endpoint, region)
    admin_arn = boot.create_user(UserName="admin")["User"]["Arn"]
    boot.put_user_policy(UserName="admin", PolicyName="admin-all", PolicyDocument=policy(allow("*", "*")))
    admin_key = boot.create_access_key(UserName="admin")["AccessKey"]
    admin = {"arn": admin_arn, "access_key_id": admin_key["AccessKeyId"],
             "secret_access_key": admin_key["SecretAccessKey"]}

    # From here on every call is signed with the admin's keys and checked.
    iam = client("iam", endpoint, region, admin["access_key_id"], admin["secret_access_key"])
    s3 = client("s3", endpoint, region, admin["access_key_id"], admin["secret_access_key"])
    for bucket in (DEMO_BUCKET, OTHER_BUCKET):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=DEMO_BUCKET, Key="README.txt", Body=b"demo bucket seeded by seed_moto.py\n")
    s3.put_object(Bucket=OTHER_BUCKET, Key="other.txt", Body=b"a bucket the demo roles cannot reach\n")

    broker = user_with_key(iam, "broker", policy(allow(
        ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        f"arn:aws:iam::{ACCOUNT_ID}:role/demo-*",
    )))
    ambient = user_with_key(iam, "ambient", policy(allow("iam:GetUser", f"arn:aws:iam::{ACCOUNT_ID}:user/ambient")))

    demo = [f"arn:aws:s3:::{DEMO_BUCKET}", f"arn:aws:s3:::{DEMO_BUCKET}/*"]
    read_write = role(iam, "demo-read-write", policy(allow("s3:*", demo)))
    read_only = role(iam, "demo-read-only", policy(allow(["s3:GetObject", "s3:ListBucket"], demo)))
    ops_admin = role(iam, "ops-admin", policy(allow("s3:*", "*")))

    return {
        "endpoint": endpoint,
        "region": region,
        "account_id": ACCOUNT_ID,
        "buckets": {"demo": DEMO_BUCKET, "other": OTHER_BUCKET},
        "roles": {"read_write": read_write, "read_only": read_only, "ops_admin": ops_admin},
        "users": {"admin": admin, "broker": broker, "ambient": ambient},
    }


def verify(seeded: dict) -> None:
    """Fail unless moto enforces IAM: the read-only role may read but not write."""
    endpoint, region = seeded["endpoint"], seeded["region"]
    broker = seeded["users"]["broker"]
    sts = client("sts", endpoint, region, broker["access_key_id"], broker["secret_access_key"])
    creds = sts.assume_role(RoleArn=seeded["roles"]["read_only"], RoleSessionName="seed-verify")["Credentials"]
    s3 = client("s3", endpoint, region, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    s3.list_objects_v2(Bucket=DEMO_BUCKET)
    try:
        s3.put_object(Bucket=DEMO_BUCKET, Key="seed-verify.txt", Body=b"must be denied")
    except ClientError as err:
        if err.response["Error"]["Code"] != "AccessDenied":
            raise
    else:
        raise SystemExit("moto does not enforce IAM: the read-only role could write "
                         "(was moto started with INITIAL_NO_AUTH_ACTION_COUNT=3 and fresh?)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True, help="moto server URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--verify", action="store_true", help="also check that IAM enforcement is on")
    args = parser.parse_args()
    try:
        seeded = seed(args.endpoint.rstrip("/"), args.region)
        if args.verify:
            verify(seeded)
    except ClientError as err:
        print(f"seed_moto: {err}", file=sys.stderr)
        return 1
    json.dump(seeded, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
