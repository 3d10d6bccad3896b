"""Connecting to Ray.

- ``connect(address)`` with an address (``auto``, ``HOST:6379`` or ``ray://HOST:10001`` for the Ray client), or
  with ``RAY_ADDRESS`` set, joins an existing cluster and ships this project's code to its workers through a
  ``runtime_env`` (``py_modules``), so nodes run the same code as the caller; their Python packages (numpy,
  PyAV, …) come from the cluster's setup commands (see ``ray-cluster.yaml``).
- Without an address it starts the embedded local cluster sized for this machine: every core, and an object
  store of at most 2 GiB (the pipeline only moves feature arrays, plans and compressed segments through it).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "stylecast"
DEFAULT_OBJECT_STORE_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class ClusterInfo:
    address: str | None  # None for the embedded local cluster
    nodes: int
    cpus: float
    node_ids: tuple[str, ...]


def project_runtime_env() -> dict:
    """A runtime_env that ships this project's packages to every worker of a remote cluster (serve_app too:
    the JobManager imports its models and store, and the Serve deployment is its app)."""
    import actors
    import kernels
    import serve_app
    import stylecast

    import cluster

    modules = [str(Path(m.__file__).parent) for m in (stylecast, kernels, actors, cluster, serve_app)]
    env = {"NUMBA_NUM_THREADS": "1"}
    # Settings read where the chunks are dispatched, which on a cluster may be the JobManager's process.
    for name in ("STYLECAST_WORKER_START_TIMEOUT_S",):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return {"py_modules": modules, "env_vars": env}


def _object_store_bytes() -> int:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return DEFAULT_OBJECT_STORE_BYTES
    return int(min(DEFAULT_OBJECT_STORE_BYTES, 0.2 * total))


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    log_to_driver: bool = False,
) -> ClusterInfo:
    """Join ``address`` (or ``$RAY_ADDRESS``), or start the embedded local cluster.  Idempotent."""
    import ray

    if ray.is_initialized():
        return cluster_info()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, namespace=NAMESPACE, runtime_env=project_runtime_env(),
                 log_to_driver=log_to_driver)
    else:
        ray.init(
            address="local",  # always a new embedded cluster, never one that `ray start` left running here
            num_cpus=num_cpus or os.cpu_count() or 1,
            object_store_memory=object_store_memory or _object_store_bytes(),
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=log_to_driver,
            # Each worker renders or analyses one chunk on one core; parallelism comes from the chunks.
            runtime_env={"env_vars": {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}},
        )
    return cluster_info(address)


def cluster_info(address: str | None = None) -> ClusterInfo:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = sum(float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes)
    return ClusterInfo(address, len(nodes), cpus, tuple(n["NodeID"] for n in nodes))


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
