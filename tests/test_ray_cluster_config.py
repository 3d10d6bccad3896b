"""ray-cluster.yaml is a cluster-launcher config that `ray up` accepts.

Checked offline with the installed Ray's own rules: the JSON schema shipped in the package
(ray/autoscaler/ray-schema.json) and the launcher's validate_config / prepare_config (which
fill in the provider defaults the way `ray up` does). Nothing here contacts a cloud.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

import ray
import ray.autoscaler
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CONFIG_PATH = REPO / "ray-cluster.yaml"
SCHEMA_PATH = Path(ray.autoscaler.__file__).parent / "ray-schema.json"


@pytest.fixture(scope="module")
def raw_text() -> str:
    return CONFIG_PATH.read_text()


@pytest.fixture()
def config(raw_text) -> dict:
    return yaml.safe_load(raw_text)


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@pytest.fixture()
def prepared(config) -> dict:
    """The config as `ray up` sees it after merging the provider's defaults.yaml."""
    out = prepare_config(copy.deepcopy(config))
    validate_config(out)
    return out


def _node_types(cfg: dict) -> tuple[dict, dict]:
    types = cfg["available_node_types"]
    head_name = cfg["head_node_type"]
    workers = {k: v for k, v in types.items() if k != head_name}
    assert len(workers) == 1, f"expected exactly one worker type, got {sorted(workers)}"
    return types[head_name], next(iter(workers.values()))


# --- validity against Ray's own rules ---------------------------------------------------

def test_validates_against_rays_json_schema(config, schema):
    jsonschema.validate(config, schema)


def test_rays_validate_config_and_prepare_config_accept_it(config, prepared):
    validate_config(config)
    # prepare_config keeps our node types (it would replace them for `type: local`).
    assert set(prepared["available_node_types"]) == set(config["available_node_types"])
    assert prepared["cluster_name"] == config["cluster_name"] == "stylecast"


def test_docker_image_matches_installed_ray(config):
    # Every node and the submitting machine must run the same Ray version.
    image = config["docker"]["image"]
    m = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py(?P<py>\d{3,})-cpu", image)
    assert m, image
    assert m["ray"] == ray.__version__, (
        f"docker image has Ray {m['ray']} but this venv has {ray.__version__}; update the tag"
    )


# --- node types, resources, autoscaling ------------------------------------------------

def test_head_and_worker_types_with_resources(config):
    head, worker = _node_types(config)
    for node in (head, worker):
        assert node["node_config"].get("InstanceType")
    assert isinstance(worker["resources"].get("CPU"), int) and worker["resources"]["CPU"] >= 1, worker
    assert worker["resources"].get("stylecast_render", 0) >= 1
    # No chunk worker lands on the head: they ask for CPU, and the head advertises none.
    assert head["resources"].get("CPU") == 0 and "stylecast_render" not in head["resources"]


def test_worker_autoscaling_bounds(config, prepared):
    _, worker = _node_types(config)
    assert 0 <= worker["min_workers"] <= worker["max_workers"] <= config["max_workers"]
    assert sum(t.get("min_workers", 0) for t in config["available_node_types"].values()) <= config["max_workers"]
    head_p, _ = _node_types(prepared)
    assert head_p["max_workers"] == 0  # the head type is never scaled


# --- installing the project ------------------------------------------------------------

def test_file_mount_syncs_this_checkout(config):
    mounts = config["file_mounts"]
    remote = next(r for r, local in mounts.items() if (REPO / local).resolve() == REPO)
    assert remote == "~/stylecast"
    # `ray up` is run from the repo root; the local side must be the project itself.
    assert 'name = "stylecast"' in (REPO / mounts[remote] / "pyproject.toml").read_text()
    excluded = set(config.get("rsync_exclude", []))
    assert {".venv", ".git"} <= excluded
    assert ".gitignore" in config.get("rsync_filter", [])


def test_setup_commands_install_the_project(prepared):
    # prepare_config merges setup_commands into the head and worker lists, as ray up runs them.
    for key in ("head_setup_commands", "worker_setup_commands"):
        cmds = [shlex.split(c) for c in prepared[key]]
        assert any(c[:3] == ["pip", "install", "-e"] and c[3] == "~/stylecast" for c in cmds), (key, cmds)
    assert any("boto3" in c for c in prepared["head_setup_commands"])  # head autoscaler launches EC2


# --- starting Ray ----------------------------------------------------------------------

def _ray_start_args(cmds: list[str]) -> list[str]:
    starts = []
    for cmd in cmds:
        for part in cmd.split(";"):
            words = shlex.split(part)
            if words[:2] == ["ray", "start"]:
                starts.append(words)
    assert len(starts) == 1, cmds
    return starts[0]


def _object_store_bytes(args: list[str]) -> int:
    (val,) = [a.split("=", 1)[1] for a in args if a.startswith("--object-store-memory=")]
    return int(val)


def test_head_start_commands(prepared):
    cmds = prepared["head_start_ray_commands"]
    assert cmds[0] == "ray stop"
    args = _ray_start_args(cmds)
    assert "--head" in args
    assert "--port=6379" in args
    assert "--dashboard-host=0.0.0.0" in args
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in args
    assert 1 << 30 <= _object_store_bytes(args) <= 4 << 30


def test_worker_start_commands(prepared):
    cmds = prepared["worker_start_ray_commands"]
    assert cmds[0] == "ray stop"
    args = _ray_start_args(cmds)
    assert "--address=$RAY_HEAD_IP:6379" in args
    assert "--head" not in args
    assert 1 << 30 <= _object_store_bytes(args) <= 8 << 30


def test_serve_line_deploys_the_service_config_without_blocking(config, raw_text):
    """Commented (it needs a data dir chosen by the admin); uncommented it must return, or `ray up` hangs."""
    line = re.search(r"^\s*#\s*- (serve run .*)$", raw_text, re.M)
    assert line, "the commented serve line is missing"
    words = line.group(1).split()
    assert "--non-blocking" in words and "--address" in words
    assert words[-1] == "~/stylecast/serve_app/serve_config.yaml"
    serve_config = yaml.safe_load((REPO / "serve_app" / "serve_config.yaml").read_text())
    app = serve_config["applications"][0]
    assert app["import_path"] == "serve_app.deployment:app_builder" and app["args"]["data_dir"]
    from serve_app.config import ServiceConfig

    args = ServiceConfig(**app["args"])  # every key is a setting the service knows
    # uploads on the media share that every node mounts; the database on the head's own disk
    assert args.data_dir.startswith("/mnt/media/") and args.db_path and not args.db_path.startswith("/mnt/media/")
    assert not any("serve" in c.split()[:1] for c in config["head_start_ray_commands"])


# --- the validator really rejects broken configs ---------------------------------------

def _break_unknown_key(c):
    c["worker_count"] = 3


def _break_max_workers_type(c):
    c["max_workers"] = "four"


def _break_resource_type(c):
    c["available_node_types"]["worker"]["resources"]["stylecast_render"] = "one"


def _break_missing_node_config(c):
    del c["available_node_types"]["worker"]["node_config"]


def _break_unknown_node_type_key(c):
    c["available_node_types"]["worker"]["min_worker"] = 1


BREAKS_SCHEMA = [
    _break_unknown_key,
    _break_max_workers_type,
    _break_resource_type,
    _break_missing_node_config,
    _break_unknown_node_type_key,
]


@pytest.mark.parametrize("breaker", BREAKS_SCHEMA, ids=lambda f: f.__name__[len("_break_"):])
def test_schema_rejects_broken_copy(config, schema, breaker):
    broken = copy.deepcopy(config)
    breaker(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def test_validate_config_rejects_unknown_head_type(config):
    broken = copy.deepcopy(config)
    broken["head_node_type"] = "nope"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(broken)


def test_validate_config_rejects_min_workers_over_global_max(config):
    broken = copy.deepcopy(config)
    broken["available_node_types"]["worker"]["min_workers"] = config["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(broken)


def test_local_provider_would_drop_node_types(config):
    """Why this file uses AWS: Ray's on-prem provider refuses available_node_types."""
    import click

    local = copy.deepcopy(config)
    local["provider"] = {"type": "local", "head_ip": "10.0.0.1", "worker_ips": ["10.0.0.2"]}
    local.pop("docker")
    with pytest.raises(click.ClickException, match="available_node_types"):
        prepare_config(local)


def test_runtime_env_ships_every_project_package_the_cluster_code_imports():
    """A remote cluster gets this project only through py_modules: each first-party package that the code
    running there imports (actors, the JobManager's serve_app models, …) must be shipped."""
    import ast

    from cluster.connect import project_runtime_env

    root = Path(__file__).resolve().parents[1]
    ours = {p.name for p in root.iterdir() if (p / "__init__.py").exists() and p.name not in ("tests", "bench")}
    shipped = {Path(m).name for m in project_runtime_env()["py_modules"]}
    imported = set()
    for package in shipped:
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    imported.add(node.module.split(".")[0])
    assert imported & ours <= shipped, sorted((imported & ours) - shipped)
    assert "serve_app" in shipped and "actors" in shipped
