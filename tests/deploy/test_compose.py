"""deploy/local/compose.yaml, checked without Docker.

Structure: what must hold for the local stack to mirror production (the adapter has no AWS
credentials and no route to Redis, moto enforces IAM, the broker's secrets come from files,
everything is published on loopback only). Behaviour: the two one-shot jobs (keygen, seed) are
Python programs inside the compose file; they are run here as they are written, against a real
moto_server started by the test, including the re-run and moto-restart cases.
"""

from __future__ import annotations

import base64
import configparser
import copy
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import deploy_checks as dc

LOCAL = dc.COMPOSE.parent
SEED_MOTO = dc.REPO / "tests" / "support" / "seed_moto.py"


@pytest.fixture(scope="module")
def compose() -> dict:
    return dc.load_compose()


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def networks_of(service: dict) -> set[str]:
    nets = service.get("networks", ["default"])
    return set(nets if isinstance(nets, list) else nets.keys())


def depends(service: dict) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {k: v.get("condition", "service_started") for k, v in deps.items()}


def compose_violations(c: dict) -> list[str]:
    problems: list[str] = []
    services = c.get("services", {})
    for name in ("keygen", "redis", "moto", "seed", "broker", "adapter"):
        if name not in services:
            problems.append(f"service {name} missing")
    if problems:
        return problems
    moto, seed, broker, adapter = (services[n] for n in ("moto", "seed", "broker", "adapter"))

    # moto enforces IAM after exactly the bootstrap calls seed_moto.py makes.
    wanted = re.search(r"INITIAL_NO_AUTH_ACTION_COUNT=(\d+)", SEED_MOTO.read_text()).group(1)
    if env_of(moto).get("INITIAL_NO_AUTH_ACTION_COUNT") != wanted:
        problems.append(f"moto: INITIAL_NO_AUTH_ACTION_COUNT must be {wanted} (what seed_moto.py expects)")
    if depends(seed).get("moto") != "service_healthy":
        problems.append("seed must wait for moto to be healthy")
    for dep, cond in (("seed", "service_completed_successfully"), ("keygen", "service_completed_successfully"),
                      ("redis", "service_healthy")):
        if depends(broker).get(dep) != cond:
            problems.append(f"broker must depend on {dep} ({cond})")
    if depends(adapter).get("broker") != "service_healthy":
        problems.append("adapter must wait for a healthy broker")

    benv = env_of(broker)
    if not benv.get("BROKER_CACHE_URL", "").startswith("redis://redis:"):
        problems.append("broker: BROKER_CACHE_URL must point at the redis service")
    if benv.get("BROKER_STS_ENDPOINT") != "http://moto:5000":
        problems.append("broker: BROKER_STS_ENDPOINT must be moto")
    for bad in ("BROKER_INSECURE_PLAINTEXT_CACHE", "BROKER_ALLOW_ANY_ROLE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if bad in benv:
            problems.append(f"broker: {bad} must not be set")
    if not benv.get("BROKER_ALLOWED_ROLE_ARNS"):
        problems.append("broker: BROKER_ALLOWED_ROLE_ARNS missing")
    mounts = {v.split(":")[1]: v for v in broker.get("volumes", [])}
    for var in ("BROKER_JWT_HS256_SECRET_FILE", "BROKER_CACHE_KEY_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        path = benv.get(var, "")
        mount = next((m for m in mounts if path.startswith(m.rstrip("/") + "/")), None)
        if mount is None:
            problems.append(f"broker: {var}={path!r} is not inside a mounted volume")
        elif not mounts[mount].endswith(":ro"):
            problems.append(f"broker: {mounts[mount]} must be mounted read-only")
    for var in ("BROKER_JWT_HS256_SECRET", "BROKER_CACHE_KEY"):
        if var in benv:
            problems.append(f"broker: {var} must come from a file, not the environment")
    if any(v.startswith("seed-state:") for v in broker.get("volumes", [])):
        problems.append("broker: must not see the seed state (it holds the admin's keys)")

    aenv = env_of(adapter)
    for var in sorted(set(aenv) & dc.AMBIENT_AWS):
        problems.append(f"adapter: {var} gives it ambient AWS credentials")
    if any(k.startswith("BROKER_") for k in aenv):
        problems.append("adapter: has broker settings")
    if adapter.get("volumes"):
        problems.append(f"adapter: mounts {adapter['volumes']}; it needs no files")
    if networks_of(adapter) & networks_of(services["redis"]):
        problems.append("adapter: shares a network with redis")

    for name in ("broker", "adapter"):
        svc = services[name]
        if not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", str(svc.get("user", ""))):
            problems.append(f"{name}: user must be a numeric non-root uid")
        if svc.get("read_only") is not True or "ALL" not in svc.get("cap_drop", []):
            problems.append(f"{name}: read_only and cap_drop [ALL] expected")
        test = svc.get("healthcheck", {}).get("test")
        binary = "credential-broker" if name == "broker" else "mcp-adapter"
        if test != ["CMD", f"/usr/local/bin/{binary}", "healthcheck"]:
            problems.append(f"{name}: healthcheck must run `{binary} healthcheck` in exec form")
        build = svc.get("build", {})
        if not (LOCAL / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).is_file():
            problems.append(f"{name}: build.dockerfile does not exist")
    grace = str(broker.get("stop_grace_period", "10s"))
    if dc._seconds(grace) <= dc._seconds(benv.get("BROKER_SHUTDOWN_TIMEOUT", "20s")):
        problems.append("broker: stop_grace_period must exceed BROKER_SHUTDOWN_TIMEOUT")

    for name, svc in services.items():
        for port in svc.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                problems.append(f"{name}: port {port} is published beyond loopback")
    support = next((v for v in seed.get("volumes", []) if v.endswith(":/support:ro")), None)
    if support is None or not (LOCAL / support.split(":")[0] / "seed_moto.py").is_file():
        problems.append("seed: tests/support must be mounted read-only at /support")
    return problems


def test_compose_structure(compose: dict) -> None:
    problems = compose_violations(compose)
    assert problems == [], "\n".join(problems)


def _svc(c: dict, name: str) -> dict:
    return c["services"][name]


COMPOSE_MUTATIONS = {
    "adapter gets AWS keys": lambda c: _svc(c, "adapter")["environment"].update(AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY="x"),
    "adapter joins the store network": lambda c: _svc(c, "adapter")["networks"].append("store"),
    "adapter mounts the broker's keys": lambda c: _svc(c, "adapter").update(volumes=["local-secrets:/run/secrets:ro"]),
    "moto without IAM enforcement": lambda c: _svc(c, "moto")["environment"].pop("INITIAL_NO_AUTH_ACTION_COUNT"),
    "plaintext cache": lambda c: _svc(c, "broker")["environment"].update(BROKER_INSECURE_PLAINTEXT_CACHE="true"),
    "cache key in env": lambda c: _svc(c, "broker")["environment"].update(BROKER_CACHE_KEY="AAAA"),
    "broker sees the admin keys": lambda c: _svc(c, "broker")["volumes"].append("seed-state:/seed:ro"),
    "secrets mounted writable": lambda c: _svc(c, "broker").update(volumes=["local-secrets:/run/secrets", "broker-aws:/broker-aws:ro"]),
    "broker as root": lambda c: _svc(c, "broker").update(user="0"),
    "port on all interfaces": lambda c: _svc(c, "adapter").update(ports=["8000:8000"]),
    "no drain time": lambda c: _svc(c, "broker").update(stop_grace_period="10s"),
    "broker starts before the seed": lambda c: _svc(c, "broker")["depends_on"].pop("seed"),
}


@pytest.mark.parametrize("mutation", sorted(COMPOSE_MUTATIONS))
def test_breaking_the_local_stack_is_caught(compose: dict, mutation: str) -> None:
    mutated = copy.deepcopy(compose)
    COMPOSE_MUTATIONS[mutation](mutated)
    assert compose_violations(mutated), f"the checks did not notice: {mutation}"


# ------------------------------------------------------------------------------------------------
# The one-shot jobs, run as written
# ------------------------------------------------------------------------------------------------
def job_code(compose: dict, name: str) -> str:
    svc = _svc(compose, name)
    assert svc["entrypoint"] == ["python", "-c"], f"{name}: expected an inline python job"
    return svc["command"][0]


def run_job(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)


def test_keygen_makes_valid_keys_once(compose: dict, tmp_path: Path) -> None:
    code = job_code(compose, "keygen")
    first = run_job(code, {"KEY_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    jwt = (tmp_path / "broker_jwt_secret").read_text().strip()
    key = (tmp_path / "broker_cache_key").read_text().strip()
    assert len(jwt.encode()) >= 32, "BROKER_JWT_HS256_SECRET must be at least 32 bytes"
    assert len(base64.b64decode(key, validate=True)) == 32, "BROKER_CACHE_KEY must be base64 of 32 bytes"
    second = run_job(code, {"KEY_DIR": str(tmp_path)})
    assert second.returncode == 0 and "keeping" in second.stdout
    assert (tmp_path / "broker_jwt_secret").read_text().strip() == jwt
    assert (tmp_path / "broker_cache_key").read_text().strip() == key
    # The broker itself accepts the secret file (when a build is at hand).
    broker = dc.REPO / "target" / "debug" / "credential-broker"
    if broker.exists():
        token = subprocess.run(
            [str(broker), "mint-token", "--sub", "alice@example.com",
             "--role-arn", "arn:aws:iam::123456789012:role/demo-read-write"],
            env={"PATH": os.environ.get("PATH", ""), "BROKER_JWT_HS256_SECRET_FILE": str(tmp_path / "broker_jwt_secret")},
            capture_output=True, text=True, timeout=30)
        assert token.returncode == 0 and token.stdout.count(".") == 2, token.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    """A moto_server started (and stopped, by its pid) by this test."""

    def __init__(self, no_auth_count: str, log: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "moto_server"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": no_auth_count}
        self.log = open(log, "w")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start; see {log}")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def sts(endpoint: str, key: str, secret: str):
    return boto3.client("sts", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"max_attempts": 1}))


def read_credentials(path: Path) -> tuple[str, str]:
    ini = configparser.ConfigParser()
    ini.read(path)
    assert ini.sections() == ["default"] and set(ini["default"]) == {"aws_access_key_id", "aws_secret_access_key"}
    return ini["default"]["aws_access_key_id"], ini["default"]["aws_secret_access_key"]


def test_seed_job_against_a_real_moto(compose: dict, tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "moto_server").exists():
        pytest.fail("moto_server is not installed (moto[server] is in tests/requirements.txt)")
    code = job_code(compose, "seed")
    no_auth = env_of(_svc(compose, "moto"))["INITIAL_NO_AUTH_ACTION_COUNT"]
    (tmp_path / "seed").mkdir()
    (tmp_path / "broker-aws").mkdir()
    creds_path = tmp_path / "broker-aws" / "credentials"

    def env(moto: Moto) -> dict[str, str]:
        return {**env_of(_svc(compose, "seed")), "MOTO_ENDPOINT": moto.endpoint, "SEED_SCRIPT": str(SEED_MOTO),
                "SEED_STATE": str(tmp_path / "seed" / "seed.json"), "SEED_BROKER_CREDENTIALS": str(creds_path)}

    moto = Moto(no_auth, tmp_path / "moto-1.log")
    try:
        first = run_job(code, env(moto))
        assert first.returncode == 0, first.stdout + first.stderr
        key, secret = read_credentials(creds_path)
        # Exactly the broker's identity: it may assume the demo roles with a source identity...
        client = sts(moto.endpoint, key, secret)
        assert client.get_caller_identity()["Arn"].endswith(":user/broker")
        client.assume_role(RoleArn="arn:aws:iam::123456789012:role/demo-read-write", RoleSessionName="deploy-test",
                           SourceIdentity="alice@example.com")
        # ...and nothing outside role/demo-*, because moto enforces IAM.
        with pytest.raises(ClientError) as denied:
            client.assume_role(RoleArn="arn:aws:iam::123456789012:role/ops-admin", RoleSessionName="deploy-test")
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
        # A second run leaves everything as it is.
        again = run_job(code, env(moto))
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
        assert read_credentials(creds_path) == (key, secret)
    finally:
        moto.stop()

    # moto restarted (state lost): the job seeds the new one and replaces the keys.
    moto = Moto(no_auth, tmp_path / "moto-2.log")
    try:
        third = run_job(code, env(moto))
        assert third.returncode == 0, third.stdout + third.stderr
        new_key, new_secret = read_credentials(creds_path)
        assert new_key != key
        assert sts(moto.endpoint, new_key, new_secret).get_caller_identity()["Arn"].endswith(":user/broker")
    finally:
        moto.stop()
