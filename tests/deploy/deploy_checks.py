"""Checks of the deployment files in deploy/, shared by the tests in this folder.

Every check returns a list of violations (human-readable strings) instead of asserting, so the
tests can assert both ways: the real files have none, and a deliberately widened copy has some
(test_*.py mutate copies and expect a violation, so a check that silently stopped working fails).

The CloudFormation side has three parts:
  * ``load_template``: YAML with the short tags (!Ref, !Sub, !GetAtt, ...) turned into their long
    JSON form, as CloudFormation itself does;
  * ``resolve``: a small evaluator of the intrinsic functions for given parameter values
    (conditions, !If, !Sub, !Join, ...), leaving references to resources symbolic
    (``{{ref:Logical}}``, ``{{getatt:Logical.Attr}}``) except role ARNs, which are computed from
    the role's name so that they compare with the ARNs the broker's policy names;
  * ``template_violations``: the least-privilege rules of the issue, on the resolved template.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "cloudformation" / "iam.yaml"
BROKER_TASK = REPO / "deploy" / "ecs" / "broker-task.json"
ADAPTER_TASK = REPO / "deploy" / "ecs" / "adapter-task.json"
COMPOSE = REPO / "deploy" / "local" / "compose.yaml"
DEPLOY_README = REPO / "deploy" / "README.md"

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"

# The logical ids of the roles that ECS assumes; every other role in the template is a target
# (data) role and must trust the broker task role only.
BROKER_TASK_ROLE = "BrokerTaskRole"
BROKER_EXECUTION_ROLE = "BrokerExecutionRole"
ADAPTER_TASK_ROLE = "AdapterTaskRole"
ADAPTER_EXECUTION_ROLE = "AdapterExecutionRole"
# The metrics collector: its own task with its own role (never a sidecar of the broker or the
# adapter), allowed to write the metrics log group and nothing else.
COLLECTOR_TASK_ROLE = "CollectorTaskRole"
COLLECTOR_EXECUTION_ROLE = "CollectorExecutionRole"
SERVICE_ROLES = {BROKER_TASK_ROLE, BROKER_EXECUTION_ROLE, ADAPTER_TASK_ROLE, ADAPTER_EXECUTION_ROLE,
                 COLLECTOR_TASK_ROLE, COLLECTOR_EXECUTION_ROLE}
COLLECTOR_ACTIONS = {"logs:createlogstream", "logs:putlogevents", "logs:describelogstreams"}

BROKER_STS_ACTIONS = {"sts:assumerole", "sts:tagsession", "sts:setsourceidentity"}
ECS_TASKS = "ecs-tasks.amazonaws.com"

# Parameter values the template is evaluated with: the defaults, and every optional feature on
# (so both branches of each condition are checked).
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {
        "DataBucketName": "example-data-bucket",
        "VpcId": "vpc-0123456789abcdef0",
        "LoadBalancerSecurityGroupId": "sg-0123456789abcdef0",
        "CacheSubnetIds": "subnet-0123456789abcdef0,subnet-0fedcba9876543210",
    },
    "all-options": {
        "DataBucketName": "example-data-bucket",
        "DataBucketKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "SecretsKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/abcd1234-12ab-34cd-56ef-1234567890ab",
        "AdditionalTargetRoleArns": "arn:aws:iam::210987654321:role/partner-data-read",
        "EnableAutoscaling": "true",
        "EnableDataEventsTrail": "true",
        "VpcId": "vpc-0123456789abcdef0",
        "LoadBalancerSecurityGroupId": "sg-0123456789abcdef0",
        "CreateCache": "false",
    },
}


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that knows CloudFormation's short-form tags."""


def _long_form(tag: str):
    fn = tag if tag in ("Ref", "Condition") else f"Fn::{tag}"

    def construct(loader: yaml.SafeLoader, node: yaml.Node):
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt":  # !GetAtt Logical.Attr
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {fn: value}

    return construct


for _tag in ("Ref", "Condition", "Sub", "GetAtt", "Join", "If", "Not", "Equals", "And", "Or",
             "Select", "Split", "FindInMap", "Base64", "Cidr", "GetAZs", "ImportValue", "Transform",
             "Length", "ToJsonString", "EachMemberEquals", "EachMemberIn", "Contains", "RefAll",
             "ValueOf", "ValueOfAll"):
    _CfnLoader.add_constructor(f"!{_tag}", _long_form(_tag))


def load_template(path: Path = TEMPLATE) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass


def load_json(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


def load_compose(path: Path = COMPOSE) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)  # resolves the <<: merge keys, as Compose does


# ------------------------------------------------------------------------------------------------
# Evaluating intrinsic functions
# ------------------------------------------------------------------------------------------------
_NO_VALUE = object()


class Resolver:
    def __init__(self, template: dict, overrides: dict[str, Any]):
        self.t = template
        self.params: dict[str, Any] = {}
        for name, spec in template.get("Parameters", {}).items():
            raw = overrides.get(name, spec.get("Default"))
            if raw is None:
                raise ValueError(f"scenario gives no value for parameter {name} (no Default)")
            raw = str(raw)
            self.params[name] = raw.split(",") if spec["Type"].startswith(("CommaDelimitedList", "List<")) else raw
        self.conditions: dict[str, bool] = {}
        for name in template.get("Conditions", {}):
            self.condition(name)

    # -- conditions --
    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.t["Conditions"][name]))
        return self.conditions[name]

    def resource_exists(self, logical: str) -> bool:
        cond = self.t["Resources"][logical].get("Condition")
        return cond is None or self.condition(cond)

    # -- references --
    def ref(self, name: str) -> Any:
        pseudo = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION,
                  "AWS::StackName": "deploy-test", "AWS::URLSuffix": "amazonaws.com"}
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.t.get("Resources", {}):
            return "{{ref:%s}}" % name
        raise KeyError(f"!Ref to unknown name {name}")

    def getatt(self, logical: str, attr: str) -> str:
        res = self.t["Resources"].get(logical)
        if res is None:
            raise KeyError(f"!GetAtt to unknown resource {logical}")
        if res["Type"] == "AWS::IAM::Role" and attr == "Arn":
            name = res.get("Properties", {}).get("RoleName")
            if name is not None:
                path = self.value(res["Properties"].get("Path", "/"))
                return f"arn:{PARTITION}:iam::{ACCOUNT}:role{path}{self.value(name)}"
        return "{{getatt:%s.%s}}" % (logical, attr)

    def sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        variables = {k: self.value(v) for k, v in variables.items()}

        def replace(m: re.Match) -> str:
            name = m.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical, attr = name.split(".", 1)
                return self.getatt(logical, attr)
            value = self.ref(name)
            return ",".join(value) if isinstance(value, list) else str(value)

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    # -- values --
    def value(self, v: Any) -> Any:
        if isinstance(v, list):
            out = [self.value(x) for x in v]
            return [x for x in out if x is not _NO_VALUE]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (key, arg), = v.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::GetAtt":
                logical, attr = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.getatt(logical, attr)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::Join":
                items = self.value(arg[1])
                flat: list = []
                for item in items if isinstance(items, list) else [items]:
                    flat.extend(item if isinstance(item, list) else [item])
                return arg[0].join(str(x) for x in flat)
            if key == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if key == "Fn::Equals":
                a, b = (self.value(x) for x in arg)
                return a == b
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(x) for x in arg)
            if key == "Fn::Or":
                return any(self.value(x) for x in arg)
            if key == "Fn::Select":
                return self.value(arg[1])[int(self.value(arg[0]))]
            if key == "Fn::Split":
                return str(self.value(arg[1])).split(arg[0])
        out = {k: self.value(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x is not _NO_VALUE}

    def resources(self) -> dict[str, dict]:
        """The resources that exist in this scenario, with every property resolved."""
        return {name: {"Type": res["Type"], "Properties": self.value(res.get("Properties", {}))}
                for name, res in self.t["Resources"].items() if self.resource_exists(name)}

    def outputs(self) -> dict[str, Any]:
        out = {}
        for name, spec in self.t.get("Outputs", {}).items():
            cond = spec.get("Condition")
            if cond is None or self.condition(cond):
                out[name] = self.value(spec["Value"])
        return out


# ------------------------------------------------------------------------------------------------
# IAM helpers
# ------------------------------------------------------------------------------------------------
def as_list(v: Any) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def statements(doc: Any) -> list[dict]:
    if not isinstance(doc, dict):
        return []
    return [s for s in as_list(doc.get("Statement")) if isinstance(s, dict)]


def policies_of_role(resources: dict[str, dict], role: str) -> list[tuple[str, dict]]:
    """(where, policy document) for everything that grants the role permissions in this
    template: inline Policies, AWS::IAM::Policy / RolePolicy / ManagedPolicy resources that name
    the role. Managed policies from outside the template are reported by ``role_violations``."""
    found = []
    props = resources[role]["Properties"]
    role_name = props.get("RoleName")
    names = {"{{ref:%s}}" % role} | ({role_name} if role_name else set())
    for p in as_list(props.get("Policies")):
        found.append((f"{role}.Policies[{p.get('PolicyName')}]", p.get("PolicyDocument")))
    for name, res in resources.items():
        if res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            if names & set(map(str, as_list(res["Properties"].get("Roles")))):
                found.append((name, res["Properties"].get("PolicyDocument")))
        if res["Type"] == "AWS::IAM::RolePolicy" and res["Properties"].get("RoleName") in names:
            found.append((name, res["Properties"].get("PolicyDocument")))
    return found


def boundary_of_role(resources: dict[str, dict], role: str) -> tuple[str, dict] | None:
    ref = resources[role]["Properties"].get("PermissionsBoundary")
    m = re.fullmatch(r"\{\{ref:(\w+)\}\}", str(ref)) if ref else None
    if m and resources.get(m.group(1), {}).get("Type") == "AWS::IAM::ManagedPolicy":
        return m.group(1), resources[m.group(1)]["Properties"]["PolicyDocument"]
    return None


def _wildcard(s: str) -> bool:
    return "*" in s or "?" in s


def allow_statements(where: str, doc: Any, problems: list[str]) -> list[dict]:
    """The Allow statements of a document; NotAction/NotResource/NotPrincipal in an Allow are
    violations (they grant everything except a list)."""
    out = []
    if not statements(doc):
        problems.append(f"{where}: policy document without statements")
    for s in statements(doc):
        if s.get("Effect") != "Allow":
            continue
        for neg in ("NotAction", "NotResource", "NotPrincipal"):
            if neg in s:
                problems.append(f"{where}: Allow with {neg} grants everything outside a list")
        out.append(s)
    return out


# ------------------------------------------------------------------------------------------------
# The rules
# ------------------------------------------------------------------------------------------------
def template_violations(template: dict) -> list[str]:
    """Every least-privilege rule, in every scenario."""
    problems: list[str] = []
    for scenario, overrides in SCENARIOS.items():
        r = Resolver(copy.deepcopy(template), overrides)
        problems += [f"[{scenario}] {p}" for p in _scenario_violations(r)]
    problems += _parameter_violations(template)
    return problems


def _parameter_violations(template: dict) -> list[str]:
    problems = []
    spec = template.get("Parameters", {}).get("AdditionalTargetRoleArns")
    if spec is not None:
        pattern = spec.get("AllowedPattern")
        if not pattern:
            problems.append("AdditionalTargetRoleArns has no AllowedPattern: any ARN, even '*', would be accepted")
        else:
            for bad in ("*", f"arn:aws:iam::{ACCOUNT}:role/*", f"arn:aws:iam::{ACCOUNT}:role/data-?",
                        f"arn:aws:iam::{ACCOUNT}:user/alice", f"arn:aws:s3:::bucket"):
                if re.fullmatch(pattern, bad):
                    problems.append(f"AdditionalTargetRoleArns' AllowedPattern accepts {bad!r}")
            if not re.fullmatch(pattern, f"arn:aws:iam::{ACCOUNT}:role/partner-data-read"):
                problems.append("AdditionalTargetRoleArns' AllowedPattern rejects a plain role ARN")
    return problems


def _scenario_violations(r: Resolver) -> list[str]:
    problems: list[str] = []
    resources = r.resources()
    roles = {n for n, res in resources.items() if res["Type"] == "AWS::IAM::Role"}
    for needed in SERVICE_ROLES:
        if needed not in roles:
            problems.append(f"role {needed} is missing")
    if problems:
        return problems
    target_roles = sorted(roles - SERVICE_ROLES)
    if not target_roles:
        problems.append("no target (data) role in the template")

    broker_arn = r.getatt(BROKER_TASK_ROLE, "Arn")
    target_arns = {r.getatt(t, "Arn") for t in target_roles}
    extra = {a for a in as_list(r.params.get("AdditionalTargetRoleArns")) if a}
    allowed_targets = target_arns | extra

    # Roles ECS assumes: trusted by ecs-tasks only, no managed policies from outside.
    for role in SERVICE_ROLES:
        props = resources[role]["Properties"]
        for s in statements(props.get("AssumeRolePolicyDocument")):
            principal = s.get("Principal")
            if s.get("Effect") == "Allow" and principal != {"Service": ECS_TASKS} and principal != {"Service": [ECS_TASKS]}:
                problems.append(f"{role}: trusted by {principal!r}; only {ECS_TASKS} may assume it")
        if props.get("ManagedPolicyArns"):
            problems.append(f"{role}: ManagedPolicyArns {props['ManagedPolicyArns']!r} cannot be verified here; use inline policies")
    # The same for the ManagedPolicy resources' own attachment list (caught by policies_of_role).

    problems += _broker_task_role(resources, allowed_targets)
    problems += _adapter_task_role(resources)
    problems += _execution_roles(resources)
    problems += _collector_task_role(resources)
    for role in target_roles:
        problems += _target_role(r, resources, role, broker_arn)

    # Every target role is one the broker may assume (else it is dead weight, or a typo).
    granted = set()
    for _, doc in policies_of_role(resources, BROKER_TASK_ROLE):
        for s in statements(doc):
            if s.get("Effect") == "Allow":
                granted |= set(map(str, as_list(s.get("Resource"))))
    for arn in sorted(target_arns - granted):
        problems.append(f"target role {arn} trusts the broker but the broker task role may not assume it")
    return problems


def _broker_sts_only(where: str, doc: Any, allowed_targets: set[str]) -> list[str]:
    problems: list[str] = []
    for s in allow_statements(where, doc, problems):
        actions = [str(a) for a in as_list(s.get("Action"))]
        if not actions:
            problems.append(f"{where}: Allow without Action")
        for a in actions:
            if _wildcard(a) or a.lower() not in BROKER_STS_ACTIONS:
                problems.append(f"{where}: action {a!r} is not one of sts:AssumeRole, sts:TagSession, sts:SetSourceIdentity")
        resources = [str(x) for x in as_list(s.get("Resource"))]
        if not resources:
            problems.append(f"{where}: Allow without Resource")
        for res in resources:
            if _wildcard(res):
                problems.append(f"{where}: wildcard resource {res!r}")
            elif res not in allowed_targets:
                problems.append(f"{where}: resource {res!r} is not an allowlisted target role")
        if "Condition" in s and not s["Condition"]:
            problems.append(f"{where}: empty Condition")
    return problems


def _broker_task_role(resources: dict, allowed_targets: set[str]) -> list[str]:
    problems: list[str] = []
    policies = policies_of_role(resources, BROKER_TASK_ROLE)
    if not policies:
        problems.append(f"{BROKER_TASK_ROLE}: no policy lets it assume the target roles")
    for where, doc in policies:
        problems += _broker_sts_only(where, doc, allowed_targets)
    boundary = boundary_of_role(resources, BROKER_TASK_ROLE)
    if boundary is None:
        problems.append(f"{BROKER_TASK_ROLE}: no permissions boundary from this template")
    else:
        problems += _broker_sts_only(f"boundary {boundary[0]}", boundary[1], allowed_targets)
    return problems


def _collector_task_role(resources: dict) -> list[str]:
    """The collector writes CloudWatch Logs (EMF) into log groups of this template; no S3, STS,
    IAM, wildcard action or '*' resource."""
    problems: list[str] = []
    for where, doc in policies_of_role(resources, COLLECTOR_TASK_ROLE):
        for s in allow_statements(where, doc, problems):
            for a in map(str, as_list(s.get("Action"))):
                if a.lower() not in COLLECTOR_ACTIONS:
                    problems.append(f"{where}: collector action {a!r} is not one of {sorted(COLLECTOR_ACTIONS)}")
            for res in map(str, as_list(s.get("Resource"))):
                if not res.startswith("{{getatt:") or "LogGroup.Arn" not in res:
                    problems.append(f"{where}: collector resource {res!r} is not a log group of this template")
    return problems


def _adapter_task_role(resources: dict) -> list[str]:
    problems: list[str] = []
    for where, doc in policies_of_role(resources, ADAPTER_TASK_ROLE):
        problems.append(f"{where}: the adapter task role must have no policy at all")
        for s in allow_statements(where, doc, problems):
            for a in map(str, as_list(s.get("Action"))):
                if a == "*" or a.lower().startswith(("s3:", "sts:")) or a.endswith(":*"):
                    problems.append(f"{where}: grants {a!r} to the adapter, whose only way to S3 is the broker")
    boundary = boundary_of_role(resources, ADAPTER_TASK_ROLE)
    if boundary is None:
        problems.append(f"{ADAPTER_TASK_ROLE}: no permissions boundary from this template")
    else:
        name, doc = boundary
        for s in allow_statements(f"boundary {name}", doc, problems):
            problems.append(f"boundary {name}: allows {as_list(s.get('Action'))!r}; it must allow nothing")
    return problems


def _execution_roles(resources: dict) -> list[str]:
    """ECS execution roles: pull, logs, their own secrets. No STS, no S3, and "*" only where AWS
    offers nothing narrower (ecr:GetAuthorizationToken)."""
    problems: list[str] = []
    own_secrets = {
        BROKER_EXECUTION_ROLE: {"JwtSecret", "CacheKeySecret", "HandleKeySecret", "CacheUrlSecret",
                                "BrokerTlsSecret"},
        ADAPTER_EXECUTION_ROLE: {"AdapterTlsSecret"},
        COLLECTOR_EXECUTION_ROLE: set(),
    }
    for role, secrets in own_secrets.items():
        for where, doc in policies_of_role(resources, role):
            for s in allow_statements(where, doc, problems):
                for a in map(str, as_list(s.get("Action"))):
                    low = a.lower()
                    if a == "*" or low.startswith(("s3:", "sts:", "iam:")) or low.endswith(":*"):
                        problems.append(f"{where}: execution role may not have {a!r}")
                    for res in map(str, as_list(s.get("Resource"))):
                        if res == "*" and low != "ecr:getauthorizationtoken":
                            problems.append(f"{where}: {a!r} on '*'")
                        if low == "secretsmanager:getsecretvalue":
                            m = re.fullmatch(r"\{\{ref:(\w+)\}\}", res)
                            if not m or m.group(1) not in secrets:
                                problems.append(f"{where}: reads secret {res!r}, not one of its own {sorted(secrets)}")
    return problems


def _requires_source_identity(condition: Any) -> bool:
    if not isinstance(condition, dict):
        return False
    for operator, keys in condition.items():
        if not isinstance(keys, dict):
            continue
        for key, value in keys.items():
            if key.lower() != "sts:sourceidentity":
                continue
            op = operator.lower()
            if op == "null" and str(value).lower() == "false":
                return True
            if op in ("stringlike", "stringequals") and as_list(value) and all(str(v) for v in as_list(value)):
                return True
    return False


def _target_role(r: Resolver, resources: dict, role: str, broker_arn: str) -> list[str]:
    problems: list[str] = []
    props = resources[role]["Properties"]
    trust = props.get("AssumeRolePolicyDocument")
    allows = allow_statements(f"{role} trust policy", trust, problems)
    if not allows:
        problems.append(f"{role}: trust policy allows nobody")
    for s in allows:
        principal = s.get("Principal")
        if not (isinstance(principal, dict) and set(principal) == {"AWS"} and as_list(principal["AWS"]) == [broker_arn]):
            problems.append(f"{role}: trusts {principal!r}; only the broker task role ({broker_arn}) may assume it")
        actions = [str(a) for a in as_list(s.get("Action"))]
        for a in actions:
            if _wildcard(a) or a.lower() not in BROKER_STS_ACTIONS:
                problems.append(f"{role}: trust policy allows {a!r}")
        if "sts:assumerole" not in {a.lower() for a in actions}:
            problems.append(f"{role}: trust policy does not allow sts:AssumeRole")
        if not _requires_source_identity(s.get("Condition")):
            problems.append(f"{role}: trust policy does not require sts:SourceIdentity to be set")
    if props.get("ManagedPolicyArns"):
        problems.append(f"{role}: ManagedPolicyArns cannot be verified here; use inline policies")
    # The data roles themselves: S3 on the data bucket (and its KMS key), nothing else.
    bucket = f"arn:{PARTITION}:s3:::{r.params.get('DataBucketName')}"
    kms = r.params.get("DataBucketKmsKeyArn") or None
    for where, doc in policies_of_role(resources, role):
        for s in allow_statements(where, doc, problems):
            for a in map(str, as_list(s.get("Action"))):
                if _wildcard(a) or not a.lower().startswith(("s3:", "kms:")):
                    problems.append(f"{where}: data role action {a!r} (only named s3:/kms: actions)")
            for res in map(str, as_list(s.get("Resource"))):
                if res not in (bucket, f"{bucket}/*") and res != kms:
                    problems.append(f"{where}: data role resource {res!r} is outside the data bucket")
    return problems


# ------------------------------------------------------------------------------------------------
# ECS task definitions
# ------------------------------------------------------------------------------------------------
# Settings that carry a secret: never in `environment`, always in `secrets`.
REQUIRED_SECRETS = {
    "credential-broker": {"BROKER_JWT_HS256_SECRET", "BROKER_CACHE_KEY", "BROKER_CACHE_URL", "BROKER_TLS_KEY"},
    "mcp-adapter": {"ADAPTER_BROKER_CLIENT_KEY"},
}
HEALTH_COMMANDS = {
    "credential-broker": ["CMD", "/usr/local/bin/credential-broker", "healthcheck"],
    "audit-log-shipper": ["CMD", "test", "-d", "/audit"],
    "mcp-adapter": ["CMD", "/usr/local/bin/mcp-adapter", "healthcheck"],
}
LOG_FORMAT_VARS = {"credential-broker": "BROKER_LOG_FORMAT", "mcp-adapter": "ADAPTER_LOG_FORMAT"}
AMBIENT_AWS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
               "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
               "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"}
SENSITIVE_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|PRIVATE|_KEY$|_KEY_PREVIOUS$|CACHE_URL$)")


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)\s*(ms|s|m|h)?", duration.strip())
    if not m:
        raise ValueError(f"unparsable duration {duration!r}")
    n, unit = int(m.group(1)), m.group(2) or "s"
    return {"ms": n // 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


def task_violations(task: dict, expected_container: str) -> list[str]:
    problems: list[str] = []
    if task.get("requiresCompatibilities") != ["FARGATE"]:
        problems.append("requiresCompatibilities must be [FARGATE]")
    if task.get("networkMode") != "awsvpc":
        problems.append("networkMode must be awsvpc")
    if expected_container == "mcp-adapter" and "taskRoleArn" in task:
        problems.append("the adapter task must have no task role (no AWS identity at all); "
                        f"got taskRoleArn {task['taskRoleArn']!r}")
    if expected_container == "credential-broker" and task.get("taskRoleArn") != "${BrokerTaskRoleArn}":
        problems.append("the broker task role must be the template's BrokerTaskRole (${BrokerTaskRoleArn})")
    containers = task.get("containerDefinitions", [])
    # The broker task also runs the audit-log shipper (its audit trail to its own log group).
    sidecars = ["audit-log-shipper"] if expected_container == "credential-broker" else []
    if [c.get("name") for c in containers] != [expected_container, *sidecars]:
        problems.append(f"expected exactly the containers {[expected_container, *sidecars]!r}")
    for c in containers:
        name = c.get("name")
        env = {e["name"]: e.get("value") for e in c.get("environment", [])}
        secrets = {s["name"]: s.get("valueFrom") for s in c.get("secrets", [])}
        user = str(c.get("user", ""))
        if not re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user):
            problems.append(f"{name}: user {user!r} must be a numeric non-root uid[:gid]")
        if c.get("readonlyRootFilesystem") is not True:
            problems.append(f"{name}: readonlyRootFilesystem must be true")
        if c.get("privileged"):
            problems.append(f"{name}: privileged")
        drops = c.get("linuxParameters", {}).get("capabilities", {}).get("drop", [])
        if "ALL" not in drops:
            problems.append(f"{name}: capabilities must drop ALL")
        if c.get("linuxParameters", {}).get("capabilities", {}).get("add"):
            problems.append(f"{name}: adds capabilities")
        hc = c.get("healthCheck", {})
        if hc.get("command") != HEALTH_COMMANDS.get(name):
            problems.append(f"{name}: healthCheck.command must be {HEALTH_COMMANDS.get(name)} (exec form, no shell)")
        stop = c.get("stopTimeout")
        drain = _seconds(env.get("BROKER_SHUTDOWN_TIMEOUT", "20s"))
        if not isinstance(stop, int) or stop < max(20, drain) or stop > 120:
            problems.append(f"{name}: stopTimeout {stop!r} must cover the {drain} s drain (>= 20, Fargate max 120)")
        elif stop <= drain:
            problems.append(f"{name}: stopTimeout {stop} leaves no margin after the {drain} s drain")
        log = c.get("logConfiguration", {})
        if log.get("logDriver") != "awslogs":
            problems.append(f"{name}: logDriver must be awslogs")
        for opt in ("awslogs-group", "awslogs-region", "awslogs-stream-prefix"):
            if not log.get("options", {}).get(opt):
                problems.append(f"{name}: awslogs option {opt} missing")
        fmt_var = LOG_FORMAT_VARS.get(name)
        if fmt_var and env.get(fmt_var) != "json":
            problems.append(f"{name}: {fmt_var} must be json")
        for var in sorted(set(env) | set(secrets)):
            if var in AMBIENT_AWS:
                problems.append(f"{name}: {var} gives the task ambient AWS credentials")
        for var in sorted(env):
            if SENSITIVE_NAME.search(var) and not var.endswith("_FILE"):
                problems.append(f"{name}: {var} is a secret and must come from `secrets`, not `environment`")
        for var in sorted(REQUIRED_SECRETS.get(name, set()) - set(secrets)):
            problems.append(f"{name}: {var} must be injected from `secrets` (Secrets Manager / SSM)")
        for var, source in secrets.items():
            if not re.match(r"^(\$\{\w+\}|arn:aws[a-z-]*:(secretsmanager|ssm):)", str(source)):
                problems.append(f"{name}: secret {var} valueFrom {source!r} is not a Secrets Manager/SSM ARN")
    return problems


PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def placeholders(obj: Any) -> set[str]:
    return set(PLACEHOLDER.findall(json.dumps(obj)))


def render(obj: Any, values: dict[str, str]) -> Any:
    return json.loads(PLACEHOLDER.sub(lambda m: values[m.group(1)], json.dumps(obj)))


def env_names_in_code(*files: Iterable[Path]) -> set[str]:
    names: set[str] = set()
    for path in files:
        names |= set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', Path(path).read_text()))
    return names
