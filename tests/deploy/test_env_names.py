"""Every BROKER_*/ADAPTER_* variable that the deployment files set is one the binaries read.

A misspelt variable is silently ignored by the binary (clap only reads the names it knows), so a
typo in a task definition would drop a setting without any error: caught here instead. The names
come from the `env = "..."` attributes of the clap definitions.
"""

from __future__ import annotations

import pytest

import deploy_checks as dc

BROKER_SOURCES = [dc.REPO / "broker" / "src" / f for f in ("config.rs", "ops.rs", "mint.rs", "quota.rs")]
ADAPTER_SOURCES = [dc.REPO / "adapter" / "src" / "config.rs"]

# Announced for issue 6 (adapter metrics and TLS client settings) and referenced by deploy/
# already, but not in the adapter's code yet. test_pending_settings_have_landed reports which are
# still missing; once all have landed this set can be emptied.
PENDING: set[str] = set()


def known() -> set[str]:
    return dc.env_names_in_code(*BROKER_SOURCES, *ADAPTER_SOURCES)


def names_in_deploy_files() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in (dc.BROKER_TASK, dc.ADAPTER_TASK):
        for c in dc.load_json(path)["containerDefinitions"]:
            names = {e["name"] for e in c.get("environment", [])} | {s["name"] for s in c.get("secrets", [])}
            out[str(path.relative_to(dc.REPO))] = names
    for name, svc in dc.load_compose()["services"].items():
        env = svc.get("environment", {})
        out[f"compose:{name}"] = set(env if isinstance(env, dict) else (e.split("=", 1)[0] for e in env))
    return out


def test_every_setting_is_read_by_a_binary() -> None:
    code = known()
    assert "BROKER_LISTEN" in code and "ADAPTER_LISTEN" in code, "could not read the clap definitions"
    unknown = []
    for where, names in names_in_deploy_files().items():
        for n in sorted(names):
            if n.startswith(("BROKER_", "ADAPTER_")) and n not in code | PENDING:
                unknown.append(f"{where}: {n}")
    assert not unknown, "settings no binary reads (typo?):\n" + "\n".join(unknown)


@pytest.mark.xfail(reason="the adapter's metrics and TLS client settings of issue 6 are being added", strict=False)
def test_pending_settings_have_landed() -> None:
    missing = sorted(PENDING - known())
    assert not missing, f"referenced by deploy/ but not read by the code yet: {missing}"
