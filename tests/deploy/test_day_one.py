"""Issue 20 ("ECS, day one"): the template and task definitions can be retried, reused across
regions, found, scaled, observed and audited; the Redis store does not evict; images are pinned
and stripped. Each test reads the shipped files, so removing a property fails here."""

from __future__ import annotations

import json
import re

import pytest

import deploy_checks as dc

COLLECTOR_TASK = dc.REPO / "deploy" / "ecs" / "collector-task.json"


@pytest.fixture(scope="module")
def template() -> dict:
    return dc.load_template()


def resources_of(template: dict, kind: str) -> dict[str, dict]:
    return {n: r for n, r in template["Resources"].items() if r["Type"] == kind}


def test_nothing_is_plainly_retained_so_a_rolled_back_create_can_be_retried(template: dict) -> None:
    retained = {n: r.get("DeletionPolicy") for n, r in template["Resources"].items()
                if r.get("DeletionPolicy", "Delete") != "Delete"}
    assert retained, "expected retained resources (repositories, log groups, secrets)"
    assert set(retained.values()) == {"RetainExceptOnCreate"}, retained
    for name in ("BrokerRepository", "AdapterRepository", "BrokerLogGroup", "JwtSecret", "HandleKeySecret"):
        assert name in retained


def test_create_cache_needs_subnets(template: dict) -> None:
    rule = template["Rules"]["CacheNeedsSubnets"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "CreateCache"}, "true"]}
    assertion = rule["Assertions"][0]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::EachMemberEquals": [{"Ref": "CacheSubnetIds"}, ""]}]}
    assert "CacheSubnetIds" in assertion["AssertDescription"]


def test_global_iam_names_carry_the_region(template: dict) -> None:
    named = [(n, r["Properties"].get("RoleName") or r["Properties"].get("ManagedPolicyName"))
             for n, r in template["Resources"].items()
             if r["Type"] in ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy")]
    assert named
    for name, value in named:
        assert "${AWS::Region}" in json.dumps(value), f"{name}: {value}"
    # The longest role name stays within IAM's 64 characters.
    prefix_max = int(re.search(r"\{1,(\d+)\}", template["Parameters"]["NamePrefix"]["AllowedPattern"]).group(1)) + 1
    longest = max(len(json.dumps(v).split("${AWS::Region}")[1].strip('"}')) for _, v in named
                  if "RoleName" in json.dumps(template["Resources"][_]["Properties"]))
    assert prefix_max + 1 + len("ap-southeast-4") + longest <= 64


def test_service_discovery_target_group_and_autoscaling(template: dict) -> None:
    ns = resources_of(template, "AWS::ServiceDiscovery::PrivateDnsNamespace")
    assert len(ns) == 1
    services = resources_of(template, "AWS::ServiceDiscovery::Service")
    assert {r["Properties"]["Name"] for r in services.values()} == {"broker", "adapter"}
    for r in services.values():
        assert r["Properties"]["DnsConfig"]["DnsRecords"] == [{"Type": "A", "TTL": 10}]
    (tg,) = resources_of(template, "AWS::ElasticLoadBalancingV2::TargetGroup").values()
    props = tg["Properties"]
    assert props["TargetType"] == "ip" and props["Port"] == 8000
    assert props["HealthCheckPath"] == "/healthz"
    delay = {a["Key"]: a["Value"] for a in props["TargetGroupAttributes"]}["deregistration_delay.timeout_seconds"]
    drain = template["Parameters"][delay["Ref"]]
    # The adapter drains 3 s + 10 s after SIGTERM; its task stops after stopTimeout.
    stop = dc.load_json(dc.ADAPTER_TASK)["containerDefinitions"][0]["stopTimeout"]
    assert 13 <= drain["MinValue"] and drain["Default"] <= stop
    targets = resources_of(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    ids = sorted(json.dumps(r["Properties"]["ResourceId"]) for r in targets.values())
    assert any("credential-broker" in i for i in ids) and any("mcp-adapter" in i for i in ids)
    policies = resources_of(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    assert len(policies) == 2
    for r in policies.values():
        assert r["Properties"]["PolicyType"] == "TargetTrackingScaling"
    outputs = template["Outputs"]
    for name in ("ClusterName", "BrokerHost", "BrokerCloudMapServiceArn", "AdapterTargetGroupArn"):
        assert name in outputs


def test_collector_is_its_own_service_reaching_both_metrics_ports(template: dict) -> None:
    ingress = resources_of(template, "AWS::EC2::SecurityGroupIngress")
    scraped = {r["Properties"]["GroupId"]["Ref"] for r in ingress.values()
               if r["Properties"]["FromPort"] == 9464
               and r["Properties"].get("SourceSecurityGroupId") == {"Ref": "CollectorSecurityGroup"}}
    assert scraped == {"BrokerSecurityGroup", "AdapterSecurityGroup"}
    task = dc.load_json(COLLECTOR_TASK)
    assert task["taskRoleArn"] == "${CollectorTaskRoleArn}"
    (c,) = task["containerDefinitions"]
    config = {e["name"]: e["value"] for e in c["environment"]}["AOT_CONFIG_CONTENT"]
    assert "broker.${ServiceNamespaceName}" in config and "adapter.${ServiceNamespaceName}" in config
    assert "awsemf" in config and "${MetricsLogGroupName}" in config
    # No metrics sidecar: the adapter task holds the adapter alone (a task role would hand AWS
    # credentials to every container in it); the broker task holds the broker and the shipper of
    # its audit log, which needs no AWS access of its own (awslogs ships its output).
    adapter = dc.load_json(dc.ADAPTER_TASK)["containerDefinitions"]
    assert [c["name"] for c in adapter] == ["mcp-adapter"], adapter
    broker = [c["name"] for c in dc.load_json(dc.BROKER_TASK)["containerDefinitions"]]
    assert sorted(broker) == ["audit-log-shipper", "credential-broker"], broker
    outputs = template["Outputs"]
    for name in dc.placeholders(task) - {"Region", "CollectorImageTag"}:
        assert name in outputs, name


def test_data_events_trail_is_offered(template: dict) -> None:
    (trail,) = resources_of(template, "AWS::CloudTrail::Trail").values()
    assert trail["Condition"] == "DataEventsTrailCondition"
    (selector,) = trail["Properties"]["EventSelectors"]
    (data,) = selector["DataResources"]
    assert data["Type"] == "AWS::S3::Object"
    assert "${DataBucketName}/" in json.dumps(data["Values"])


def test_handle_key_is_provisioned_and_injected(template: dict) -> None:
    assert template["Resources"]["HandleKeySecret"]["Type"] == "AWS::SecretsManager::Secret"
    assert "HandleKeySecretArn" in template["Outputs"]
    secrets = {s["name"]: s["valueFrom"] for s in dc.load_json(dc.BROKER_TASK)["containerDefinitions"][0]["secrets"]}
    assert secrets["BROKER_HANDLE_KEY"] == "${HandleKeySecretArn}"


def test_role_chaining_caps_sessions_at_one_hour(template: dict) -> None:
    p = template["Parameters"]["MaxSessionDurationSeconds"]
    assert p["MaxValue"] <= 3600 and p["Default"] <= 3600
    env = {e["name"]: e["value"] for e in dc.load_json(dc.BROKER_TASK)["containerDefinitions"][0]["environment"]}
    assert dc._seconds(env["BROKER_CREDENTIAL_TTL"]) <= 3600


def test_redis_does_not_evict(template: dict) -> None:
    (group,) = resources_of(template, "AWS::ElastiCache::ParameterGroup").values()
    assert group["Properties"]["Properties"]["maxmemory-policy"] == "noeviction"
    (name,) = resources_of(template, "AWS::ElastiCache::ParameterGroup")
    rg = template["Resources"]["CacheReplicationGroup"]["Properties"]
    assert rg["CacheParameterGroupName"] == {"Ref": name}


@pytest.mark.parametrize("dockerfile", ["broker.Dockerfile", "adapter.Dockerfile"])
def test_release_images_are_pinned_by_digest_and_binaries_stripped(dockerfile: str) -> None:
    text = (dc.REPO / "deploy" / "docker" / dockerfile).read_text()
    assert "--profile dist" in text and "target/dist/" in text
    cargo = (dc.REPO / "Cargo.toml").read_text()
    profile = cargo.split("[profile.dist]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^strip\s*=\s*(true|"symbols")', profile, re.M), profile
    # Every docker build in the step-by-step pins both base images by digest and the platform.
    readme = dc.DEPLOY_README.read_text()
    builds = [b for b in re.findall(r"docker build[^\n]*(?:\\\n[^\n]*)*", readme) if dockerfile in b]
    assert builds, f"deploy/README.md has no docker build of {dockerfile}"
    for b in builds:
        assert "--platform linux/amd64" in b, b
        for arg in ("RUST_IMAGE", "RUNTIME_IMAGE"):
            m = re.search(rf'--build-arg {arg}=("?)(\S+?)\1(\s|$)', b)
            assert m, f"{arg} not passed: {b}"
            value = m.group(2)
            if value.startswith("$"):
                # A shell variable: its assignment in the README pins the digest.
                var = value.strip("${}")
                assert re.search(rf'^{var}="[^"\s]+@sha256:', readme, re.M), f"{var} is not assigned a @sha256: image"
            else:
                assert "@sha256:" in value, b
