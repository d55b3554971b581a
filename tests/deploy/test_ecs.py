"""deploy/ecs/*-task.json: Fargate task definitions.

Checked here: the shape ECS accepts (botocore's RegisterTaskDefinition model, the same one the
AWS CLI validates `--cli-input-json` against), the rules of the issue (secrets only through
`secrets`, non-root, read-only root file system, health checks without a shell, JSON logs, a
stop timeout that covers the graceful drain, no AWS identity for the adapter), and that every
`${Placeholder}` is either an output of the CloudFormation template or documented in
deploy/README.md.
"""

from __future__ import annotations

import copy
import re

import botocore.session
import pytest
from botocore.validate import validate_parameters

import deploy_checks as dc

TASKS = {"credential-broker": dc.BROKER_TASK, "mcp-adapter": dc.ADAPTER_TASK}

# Placeholders that are not stack outputs: chosen at deploy time, each explained in deploy/README.md.
DEPLOY_TIME = {"Region", "ImageTag", "BrokerHost", "JwtIssuer", "JwtAudience", "AdapterResourceUrl",
               "AuthorizationServers", "AllowedOrigins", "AllowedHosts"}


@pytest.fixture(scope="module")
def outputs() -> dict:
    template = dc.load_template()
    return dc.Resolver(copy.deepcopy(template), dc.SCENARIOS["defaults"]).outputs()


@pytest.mark.parametrize("container", sorted(TASKS))
def test_task_definition_follows_the_rules(container: str) -> None:
    problems = dc.task_violations(dc.load_json(TASKS[container]), container)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("container", sorted(TASKS))
def test_task_definition_is_a_valid_register_request(container: str) -> None:
    task = dc.load_json(TASKS[container])
    values = {name: "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf" for name in dc.placeholders(task)}
    rendered = dc.render(task, values)
    model = botocore.session.get_session().get_service_model("ecs")
    validate_parameters(rendered, model.operation_model("RegisterTaskDefinition").input_shape)


@pytest.mark.parametrize("container", sorted(TASKS))
def test_placeholders_are_outputs_or_documented(container: str, outputs: dict) -> None:
    names = dc.placeholders(dc.load_json(TASKS[container]))
    unknown = names - set(outputs) - DEPLOY_TIME
    assert not unknown, f"placeholders neither stack outputs nor deploy-time values: {sorted(unknown)}"
    readme = dc.DEPLOY_README.read_text()
    undocumented = sorted(n for n in names if "${%s}" % n not in readme and f"`{n}`" not in readme)
    assert not undocumented, f"deploy/README.md does not explain {undocumented}"


def test_each_task_reads_only_secrets_its_execution_role_may_read(outputs: dict) -> None:
    """valueFrom → stack output → secret in the template → that task's execution role."""
    template = dc.load_template()
    r = dc.Resolver(copy.deepcopy(template), dc.SCENARIOS["defaults"])
    resources = r.resources()
    roles = {"credential-broker": dc.BROKER_EXECUTION_ROLE, "mcp-adapter": dc.ADAPTER_EXECUTION_ROLE}
    for container, path in TASKS.items():
        readable = set()
        for _, doc in dc.policies_of_role(resources, roles[container]):
            for s in dc.statements(doc):
                if "secretsmanager:GetSecretValue" in dc.as_list(s.get("Action")):
                    readable |= set(dc.as_list(s.get("Resource")))
        task = dc.load_json(path)
        assert task["executionRoleArn"] == "${%sArn}" % roles[container]
        for c in task["containerDefinitions"]:
            for secret in c.get("secrets", []):
                m = re.fullmatch(r"\$\{(\w+)\}(:[\w-]+::)?", secret["valueFrom"])
                assert m, f"{container}: {secret['name']} valueFrom {secret['valueFrom']!r}"
                assert outputs.get(m.group(1)) in readable, (
                    f"{container}: {secret['name']} comes from {m.group(1)}, which {roles[container]} cannot read")


def test_the_adapter_holds_none_of_the_brokers_secrets() -> None:
    adapter = dc.load_json(dc.ADAPTER_TASK)["containerDefinitions"][0]
    names = {e["name"] for e in adapter.get("environment", [])} | {s["name"] for s in adapter.get("secrets", [])}
    assert not {n for n in names if n.startswith("BROKER_")}
    sources = " ".join(s["valueFrom"] for s in adapter.get("secrets", []))
    for broker_secret in ("JwtSecretArn", "CacheKeySecretArn", "CacheUrlSecretArn", "BrokerTlsSecretArn"):
        assert broker_secret not in sources


# ------------------------------------------------------------------------------------------------
# Mutations: each breaks a rule; the checks must object.
# ------------------------------------------------------------------------------------------------
def container(task: dict) -> dict:
    return task["containerDefinitions"][0]


def move_secret_to_env(name: str):
    def mutate(task: dict) -> None:
        c = container(task)
        c["secrets"] = [s for s in c["secrets"] if s["name"] != name]
        c["environment"].append({"name": name, "value": "plain-text"})
    return mutate


def set_env(name: str, value: str):
    def mutate(task: dict) -> None:
        env = container(task)["environment"]
        env[:] = [e for e in env if e["name"] != name] + [{"name": name, "value": value}]
    return mutate


MUTATIONS = {
    ("credential-broker", "JWT secret in plain env"): move_secret_to_env("BROKER_JWT_HS256_SECRET"),
    ("credential-broker", "cache key in plain env"): move_secret_to_env("BROKER_CACHE_KEY"),
    ("credential-broker", "cache URL (auth token) in plain env"): move_secret_to_env("BROKER_CACHE_URL"),
    ("credential-broker", "previous cache key in plain env"): set_env("BROKER_CACHE_KEY_PREVIOUS", "old"),
    ("credential-broker", "TLS key in plain env"): move_secret_to_env("BROKER_TLS_KEY"),
    ("credential-broker", "runs as root"): lambda t: container(t).update(user="0"),
    ("credential-broker", "no user"): lambda t: container(t).pop("user"),
    ("credential-broker", "writable root fs"): lambda t: container(t).update(readonlyRootFilesystem=False),
    ("credential-broker", "no health check"): lambda t: container(t).pop("healthCheck"),
    ("credential-broker", "shell health check"): lambda t: container(t)["healthCheck"].update(
        command=["CMD-SHELL", "credential-broker healthcheck || exit 1"]),
    ("credential-broker", "text logs"): set_env("BROKER_LOG_FORMAT", "text"),
    ("credential-broker", "json-file logs"): lambda t: container(t)["logConfiguration"].update(logDriver="json-file"),
    ("credential-broker", "stopTimeout below the drain"): lambda t: container(t).update(stopTimeout=10),
    ("credential-broker", "drain longer than stopTimeout"): set_env("BROKER_SHUTDOWN_TIMEOUT", "60s"),
    ("credential-broker", "static AWS keys"): set_env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
    ("credential-broker", "capabilities kept"): lambda t: container(t).pop("linuxParameters"),
    ("credential-broker", "another task role"): lambda t: t.update(taskRoleArn="${AdapterTaskRoleArn}"),
    ("mcp-adapter", "a task role"): lambda t: t.update(taskRoleArn="${BrokerTaskRoleArn}"),
    ("mcp-adapter", "ambient credentials file"): set_env("AWS_SHARED_CREDENTIALS_FILE", "/creds"),
    ("mcp-adapter", "client key in plain env"): move_secret_to_env("ADAPTER_BROKER_CLIENT_KEY"),
    ("mcp-adapter", "runs as root"): lambda t: container(t).update(user="root"),
    ("mcp-adapter", "text logs"): set_env("ADAPTER_LOG_FORMAT", "text"),
    ("mcp-adapter", "no health check"): lambda t: container(t).pop("healthCheck"),
    ("mcp-adapter", "secret from a plain value"): lambda t: container(t)["secrets"].append(
        {"name": "ADAPTER_X", "valueFrom": "literal"}),
}


@pytest.mark.parametrize("key", sorted(MUTATIONS), ids=lambda k: f"{k[0]}: {k[1]}")
def test_breaking_a_rule_is_caught(key: tuple[str, str]) -> None:
    name, _ = key
    task = dc.load_json(TASKS[name])
    MUTATIONS[key](task)
    assert dc.task_violations(task, name), f"the checks did not notice: {key}"
