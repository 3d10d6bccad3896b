"""The Ray Serve deployment of the REST API, and the application builder for ``serve run`` / ``serve deploy``."""
from __future__ import annotations

import ray
from ray import serve

from serve_app.app import app
from serve_app.config import ServiceConfig


@serve.deployment(name="StylecastAPI", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=512)
@serve.ingress(app)
class StylecastAPI:
    """One replica: the FastAPI app with the store (reads) and the JobManager handle (writes)."""

    def __init__(self, config: dict) -> None:
        import serve_app.app as api
        from actors.job_manager import JOB_MANAGER_NAME
        from cluster.connect import NAMESPACE

        cfg = ServiceConfig(**config)
        manager = ray.get_actor(JOB_MANAGER_NAME, namespace=NAMESPACE)
        api.SERVICE = api.Service(cfg, manager)


def build_app(config: ServiceConfig):
    """Make sure the JobManager runs, and return the bound Serve application."""
    from actors.job_manager import get_or_create_job_manager

    manager = get_or_create_job_manager(
        config.data_dir, max_concurrent_jobs=config.max_concurrent_jobs, job_deadline_s=config.job_deadline_s,
        chunk_seconds=config.chunk_seconds, webhook_schedule_s=config.webhook_schedule_s,
        pool_idle_s=config.pool_idle_s, db_path=config.db_path,
        max_active_jobs_per_key=config.max_active_jobs_per_key)
    # The replicas read the manager's SQLite file: they run on its node (Serve would spread them).
    ip = ray.get(manager.node_ip.remote())
    deployment = StylecastAPI.options(ray_actor_options={"num_cpus": 0, "resources": {f"node:{ip}": 0.001}})
    return deployment.bind(config.model_dump(mode="json"))


def app_builder(args: dict):
    """Entry point for a Serve config file: ``import_path: serve_app.deployment:app_builder``; ``args`` are
    ServiceConfig fields (``data_dir`` required), overriding the STYLECAST_* environment."""
    return build_app(ServiceConfig.from_env(**(args or {})))
