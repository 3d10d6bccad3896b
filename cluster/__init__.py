"""Ray bootstrap: connect to an existing cluster or start the embedded local one."""
from cluster.connect import ClusterInfo, cluster_info, connect, project_runtime_env, shutdown

__all__ = ["ClusterInfo", "cluster_info", "connect", "project_runtime_env", "shutdown"]
