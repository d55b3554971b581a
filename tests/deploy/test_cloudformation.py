"""deploy/cloudformation/iam.yaml: cfn-lint, and the least-privilege properties of the issue.

The property checks live in deploy_checks.py. The mutation tests below widen a copy of the
template in the ways a later edit might, and require the checks to notice each one: a check
that stopped checking fails here rather than waving a wider role through.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import deploy_checks as dc


@pytest.fixture(scope="module")
def template() -> dict:
    return dc.load_template()


def cfn_lint_command() -> list[str]:
    exe = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    if exe is None:
        pytest.fail("cfn-lint is not installed (it is in tests/requirements.txt)")
    return [exe]


def test_cfn_lint_passes() -> None:
    # Informational checks too (I3011 etc.): the template is clean at every level.
    result = subprocess.run([*cfn_lint_command(), "--include-checks", "I", "--", str(dc.TEMPLATE)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"cfn-lint found problems:\n{result.stdout}{result.stderr}"


def test_cfn_lint_catches_a_broken_template(tmp_path: Path) -> None:
    # cfn-lint is not silently passing everything (wrong property name on a role).
    text = dc.TEMPLATE.read_text().replace("AssumeRolePolicyDocument:", "AssumeRolePolicy:", 1)
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    result = subprocess.run([*cfn_lint_command(), "--", str(broken)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0, "cfn-lint accepted a role without AssumeRolePolicyDocument"


def test_template_has_no_least_privilege_violation(template: dict) -> None:
    problems = dc.template_violations(template)
    assert problems == [], "\n".join(problems)


def test_short_tags_are_parsed(template: dict) -> None:
    trust = template["Resources"]["DataReadWriteRole"]["Properties"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"]["AWS"] == {"Fn::GetAtt": ["BrokerTaskRole", "Arn"]}


def test_broker_may_assume_exactly_the_target_roles(template: dict) -> None:
    for name, overrides in dc.SCENARIOS.items():
        r = dc.Resolver(copy.deepcopy(template), overrides)
        granted = set()
        for _, doc in dc.policies_of_role(r.resources(), dc.BROKER_TASK_ROLE):
            for s in dc.statements(doc):
                granted |= set(dc.as_list(s["Resource"]))
        expected = {r.getatt("DataReadWriteRole", "Arn"), r.getatt("DataReadOnlyRole", "Arn")}
        expected |= {a for a in r.params["AdditionalTargetRoleArns"] if a}
        assert granted == expected, name
        # The output the operator copies into BROKER_ALLOWED_ROLE_ARNS names the same roles.
        assert set(r.outputs()["BrokerAllowedRoleArns"].split(",")) == expected, name


def test_adapter_task_role_has_no_permission_at_all(template: dict) -> None:
    r = dc.Resolver(copy.deepcopy(template), dc.SCENARIOS["all-options"])
    resources = r.resources()
    assert dc.policies_of_role(resources, dc.ADAPTER_TASK_ROLE) == []
    assert "ManagedPolicyArns" not in resources[dc.ADAPTER_TASK_ROLE]["Properties"]
    _, boundary = dc.boundary_of_role(resources, dc.ADAPTER_TASK_ROLE)
    assert [s["Effect"] for s in boundary["Statement"]] == ["Deny"]


# ------------------------------------------------------------------------------------------------
# Mutations: each widens something; the checks must object.
# ------------------------------------------------------------------------------------------------
def res(t: dict, name: str) -> dict:
    return t["Resources"][name]["Properties"]


def broker_stmt(t: dict) -> dict:
    return res(t, "BrokerTaskRole")["Policies"][0]["PolicyDocument"]["Statement"][0]


def trust(t: dict, role: str = "DataReadWriteRole") -> dict:
    return res(t, role)["AssumeRolePolicyDocument"]["Statement"][0]


def add_resource(t: dict, name: str, resource: dict) -> None:
    t["Resources"][name] = resource


def policy_resource(role: str, action, resource="*", kind="AWS::IAM::Policy") -> dict:
    props = {"PolicyDocument": {"Version": "2012-10-17",
                                "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]},
             "Roles": [{"Ref": role}]}
    props["PolicyName" if kind == "AWS::IAM::Policy" else "Description"] = "added"
    return {"Type": kind, "Properties": props}


MUTATIONS = {
    "broker: extra S3 action": lambda t: broker_stmt(t)["Action"].append("s3:GetObject"),
    "broker: sts:* instead of the three actions": lambda t: broker_stmt(t).update(Action="sts:*"),
    "broker: AssumeRoleWithWebIdentity": lambda t: broker_stmt(t)["Action"].append("sts:AssumeRoleWithWebIdentity"),
    "broker: Resource *": lambda t: broker_stmt(t).update(Resource="*"),
    "broker: wildcard role ARN": lambda t: broker_stmt(t)["Resource"].append(
        {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${NamePrefix}-*"}),
    "broker: a role outside the allowlist": lambda t: broker_stmt(t)["Resource"].append(
        "arn:aws:iam::123456789012:role/ops-admin"),
    "broker: NotResource": lambda t: broker_stmt(t).update(NotResource=broker_stmt(t).pop("Resource")),
    "broker: new s3:* statement": lambda t: res(t, "BrokerTaskRole")["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}),
    "broker: managed policy": lambda t: res(t, "BrokerTaskRole").update(
        ManagedPolicyArns=["arn:aws:iam::aws:policy/AdministratorAccess"]),
    "broker: AWS::IAM::Policy attached": lambda t: add_resource(
        t, "Extra", policy_resource("BrokerTaskRole", "s3:GetObject", "arn:aws:s3:::example-data-bucket/*")),
    "broker: RolePolicy attached": lambda t: add_resource(t, "Extra", {"Type": "AWS::IAM::RolePolicy", "Properties": {
        "PolicyName": "x", "RoleName": {"Ref": "BrokerTaskRole"},
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}]}}}),
    "broker: no permissions boundary": lambda t: res(t, "BrokerTaskRole").pop("PermissionsBoundary"),
    "broker: boundary widened": lambda t: res(t, "BrokerTaskBoundary")["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}),
    "broker: trusted by EC2": lambda t: res(t, "BrokerTaskRole")["AssumeRolePolicyDocument"]["Statement"][0].update(
        Principal={"Service": "ec2.amazonaws.com"}),
    "adapter: inline S3 policy": lambda t: res(t, "AdapterTaskRole").update(Policies=[{"PolicyName": "s3", "PolicyDocument": {
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}]}}]),
    "adapter: managed S3 policy": lambda t: res(t, "AdapterTaskRole").update(
        ManagedPolicyArns=["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess"]),
    "adapter: AWS::IAM::Policy with STS": lambda t: add_resource(t, "Extra", policy_resource("AdapterTaskRole", "sts:AssumeRole")),
    "adapter: ManagedPolicy attached": lambda t: add_resource(
        t, "Extra", policy_resource("AdapterTaskRole", "*", kind="AWS::IAM::ManagedPolicy")),
    "adapter: harmless-looking logs policy": lambda t: add_resource(
        t, "Extra", policy_resource("AdapterTaskRole", "logs:PutLogEvents")),
    "adapter: boundary allows everything": lambda t: res(t, "AdapterTaskBoundary")["PolicyDocument"]["Statement"][0].update(Effect="Allow"),
    "adapter: no boundary": lambda t: res(t, "AdapterTaskRole").pop("PermissionsBoundary"),
    "target: trusts the account": lambda t: trust(t).update(Principal={"AWS": {"Fn::Sub": "arn:aws:iam::${AWS::AccountId}:root"}}),
    "target: trusts one more principal": lambda t: trust(t).update(Principal={"AWS": [
        {"Fn::GetAtt": ["BrokerTaskRole", "Arn"]}, "arn:aws:iam::123456789012:role/other"]}),
    "target: trusts anyone": lambda t: trust(t).update(Principal="*"),
    "target: trusts the adapter task role": lambda t: trust(t, "DataReadOnlyRole").update(
        Principal={"AWS": {"Fn::GetAtt": ["AdapterTaskRole", "Arn"]}}),
    "target: no SourceIdentity condition": lambda t: trust(t).pop("Condition"),
    "target: SourceIdentity only if present": lambda t: trust(t).update(
        Condition={"StringLikeIfExists": {"sts:SourceIdentity": "*"}}),
    "target: SourceIdentity must be absent": lambda t: trust(t).update(Condition={"Null": {"sts:SourceIdentity": "true"}}),
    "target: extra statement for EC2": lambda t: res(t, "DataReadOnlyRole")["AssumeRolePolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}),
    "target: sts:* in trust": lambda t: trust(t).update(Action="sts:*"),
    "target: a new role trusting the account": lambda t: add_resource(t, "OpsRole", {"Type": "AWS::IAM::Role", "Properties": {
        "RoleName": "ops", "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]}}}),
    "data role: s3:*": lambda t: res(t, "DataReadOnlyRole")["Policies"][0]["PolicyDocument"]["Statement"][1].update(Action="s3:*"),
    "data role: every bucket": lambda t: res(t, "DataReadWriteRole")["Policies"][0]["PolicyDocument"]["Statement"][1].update(Resource="*"),
    "data role: iam action": lambda t: res(t, "DataReadWriteRole")["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}),
    "execution role: sts": lambda t: res(t, "BrokerExecutionRole")["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}),
    "execution role: every secret": lambda t: res(t, "BrokerExecutionRole")["Policies"][0]["PolicyDocument"]["Statement"][3].update(Resource="*"),
    "adapter execution role: the broker's JWT secret": lambda t: res(t, "AdapterExecutionRole")["Policies"][0]["PolicyDocument"]["Statement"][3].update(
        Resource=[{"Ref": "AdapterTlsSecret"}, {"Ref": "JwtSecret"}]),
    "execution role: logs on *": lambda t: res(t, "AdapterExecutionRole")["Policies"][0]["PolicyDocument"]["Statement"][2].update(Resource="*"),
    "parameter: additional targets accept wildcards": lambda t: t["Parameters"]["AdditionalTargetRoleArns"].update(AllowedPattern=".*"),
    "parameter: additional targets unchecked": lambda t: t["Parameters"]["AdditionalTargetRoleArns"].pop("AllowedPattern"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_widening_is_caught(template: dict, mutation: str) -> None:
    widened = copy.deepcopy(template)
    MUTATIONS[mutation](widened)
    problems = dc.template_violations(widened)
    assert problems, f"the checks did not notice: {mutation}"
