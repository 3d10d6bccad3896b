"""The same FastAPI app on plain uvicorn, without Ray: read-only (GET) endpoints over an existing data dir.

Used by the API benchmark to measure what Ray Serve's ingress costs, side by side with the real service:
    python -m serve_app.standalone --data-dir DIR --port 8001
"""
from __future__ import annotations

import argparse

import uvicorn

import serve_app.app as api
from serve_app.config import ServiceConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8001)
    args = ap.parse_args()
    api.SERVICE = api.Service(ServiceConfig.from_env(data_dir=args.data_dir, host=args.host, port=args.port))
    uvicorn.run(api.app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
