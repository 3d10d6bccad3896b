"""Dispatching chunk tasks over a pool of stage actors, surviving the loss of workers and nodes.

The pool is sized from the cluster's live CPUs (one chunk worker per core) and spread over the nodes.  A
chunk whose actor dies — its worker process crashed or its node went away — is re-queued on another actor
(a bounded number of times); a chunk that *fails* (bad data: the stage raised) fails the job at once with
that error, after the job's other in-flight chunks are cancelled.  New nodes add workers between chunks, so a
job that is already running speeds up when a node joins.  A node that cannot read the job's files (no share
mounted) is left out of the job; a chunk that runs far longer than the others (a stuck worker) is run again
on another worker.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError, TaskCancelledError

from stylecast.errors import CancelledError, InputUnavailable, StylecastError

MAX_ATTEMPTS = 3  # per chunk, counting only attempts lost to dead workers or nodes
# A pool with no worker started within this long fails the job if no node could ever host one; where nodes
# could but other jobs hold their CPUs (another driver's pools), the job waits for them instead.  An
# autoscaling cluster that starts from no worker node needs longer: the first node boots, pulls the image and
# installs the project before it can host a worker (STYLECAST_WORKER_START_TIMEOUT_S, see start_timeout_s).
START_TIMEOUT_S = 120.0
# After a cancel or a failure, how long in-flight chunks get to notice the flag and stop; a worker still busy
# then is stuck (a hung mount, a stopped process) and is killed, so that no later job's chunk waits on it.
STOP_WAIT_S = 10.0
# A chunk still running this long after the job's other chunks took their median time (at least
# STRAGGLER_MIN_S, once 3 have finished and none is left to start) is run again on an idle worker, preferably
# on another node; the first result wins and the other worker is killed.  Chunks are deterministic, so either
# copy gives the same result: this only rescues a job from one stuck worker (a hung mount, a stopped process).
STRAGGLER_FACTOR = 8.0
STRAGGLER_MIN_S = 120.0

_LOST = (RayActorError,)
try:  # not every Ray version has all of these
    from ray.exceptions import NodeDiedError, ObjectLostError, OwnerDiedError, WorkerCrashedError

    _LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError, OwnerDiedError)
except ImportError:  # pragma: no cover
    pass


class ChunkFailed(StylecastError):
    """A chunk could not be processed (its workers kept dying)."""


def _reason(exc: BaseException) -> str:
    """A worker's start-up error in one line: the innermost cause Ray wrapped, with its message."""
    cause = exc
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}".rstrip(": ")


def start_timeout_s() -> float:
    """START_TIMEOUT_S, or ``$STYLECAST_WORKER_START_TIMEOUT_S`` of the process that dispatches (read per job)."""
    name = "STYLECAST_WORKER_START_TIMEOUT_S"
    text = os.environ.get(name)
    try:
        value = float(text) if text else START_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be > 0 seconds, got {value:g}")
    return value


def _node_ip(node_id: str | None) -> str:
    """A node's IP address for messages (its id where Ray no longer knows it)."""
    for n in ray.nodes():
        if n.get("NodeID") == node_id:
            return n.get("NodeManagerAddress") or str(node_id)
    return str(node_id)


def draining_nodes() -> set[str] | None:
    """Ids of the nodes being drained: an admin's `ray drain-node`, or the autoscaler removing a preempted or
    idle node.  Such a node is still alive and its actors still answer, but Ray starts nothing new there, and
    whoever drained it stops it at its deadline (Ray stops it by itself once nothing runs there).  None where
    the GCS could not say (a slow answer; a Ray client connection, which has no GCS client)."""
    try:
        gcs = ray._private.worker.global_worker.gcs_client
        return set(gcs.get_draining_nodes(timeout=5))
    except Exception:  # noqa: BLE001 - the caller keeps what it knew
        return None


def live_cpus(nodes: list[dict] | None = None, draining: set[str] = frozenset()) -> float:
    """CPUs of the live nodes that are not being drained."""
    nodes = ray.nodes() if nodes is None else nodes
    return sum(float(n.get("Resources", {}).get("CPU", 0.0)) for n in nodes
               if n.get("Alive") and n.get("NodeID") not in draining)


@dataclass
class ActorPool:
    """Chunk-worker actors of one class, one per live CPU, spread over nodes.

    A worker on a node that is being drained leaves ``ready`` (it takes no new chunk) and is stopped once the
    chunks already queued on it have run, so that the node soon stands idle and Ray can let it go.
    Safe to share between jobs running in threads (the JobManager's): every change is under one lock.
    """

    actor_cls: Any
    per_cpu: float = 1.0
    max_size: int | None = None
    ready: list = field(default_factory=list)
    starting: dict = field(default_factory=dict)  # ping ref -> actor
    node_of: dict = field(default_factory=dict)  # actor id -> node id
    start_errors: list = field(default_factory=list)  # why workers failed to start, since one last did
    draining: set = field(default_factory=set)  # ids of the nodes being drained, as of the last refresh
    retiring: dict = field(default_factory=dict)  # ping ref -> worker of a draining node, to kill when it answers
    stopped: dict = field(default_factory=dict)  # ids of the workers killed on purpose, not lost (an ordered set)
    _last_refresh: float = 0.0
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def node(self, actor) -> str | None:
        """The id of the node ``actor`` runs on (None before it has started)."""
        return self.node_of.get(actor._actor_id.hex())

    def _kind(self) -> str:
        cls = getattr(self.actor_cls, "__ray_metadata__", None)
        return getattr(cls, "class_name", None) or getattr(self.actor_cls, "__name__", "stylecast")

    def worker_cpus(self) -> float:
        return float(getattr(self.actor_cls, "_default_options", {}).get("num_cpus", 1.0) or 0.0)

    def can_ever_start(self) -> bool:
        """Whether some live node has the CPUs one worker asks for (free or not)."""
        need = self.worker_cpus()
        # A draining node counts: the autoscaler usually brings up its replacement while it drains.
        return any(n.get("Alive") and float(n.get("Resources", {}).get("CPU", 0.0)) >= need for n in ray.nodes())

    def target(self, nodes: list[dict] | None = None) -> int:
        n = max(1, int(live_cpus(nodes, self.draining) * self.per_cpu + 1e-9))
        return min(n, self.max_size) if self.max_size else n

    def refresh(self, force: bool = False) -> list:
        """Drop the actors of nodes that are gone, start actors up to the target size; return actors that
        became ready since the last call."""
        if force or time.monotonic() - self._last_refresh > 1.0:
            self.retire_draining()
        with self._lock:
            now = time.monotonic()
            if force or now - self._last_refresh > 1.0:
                self._last_refresh = now
                nodes = ray.nodes()
                alive = {n.get("NodeID") for n in nodes if n.get("Alive")}
                # A node removed while its actors sat idle leaves them dead in the pool: they would take
                # chunks only to lose them, and would hold the places of workers on the nodes that replaced it.
                for actor in [a for a in self.ready if self.node(a) not in alive]:
                    self.discard(actor)
                if force:  # a job starts: also drop workers whose process died since (a dead actor answers at once)
                    self._drop_dead()
                missing = self.target(nodes) - len(self.ready) - len(self.starting)
                for _ in range(max(0, missing)):
                    actor = self.actor_cls.options(scheduling_strategy="SPREAD").remote()
                    self.starting[actor.ping.remote()] = actor
            fresh = []
            if self.starting:
                done, _ = ray.wait(list(self.starting), num_returns=len(self.starting), timeout=0)
                for ref in done:
                    actor = self.starting.pop(ref, None)
                    if actor is None:
                        continue
                    try:
                        node = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - an actor that failed to start is dropped
                        # Only its own constructor failing says anything about the next one (a node that
                        # died while its actors started does not).
                        if getattr(exc, "actor_init_failed", False):
                            self.start_errors.append(exc)
                        continue
                    self.start_errors.clear()
                    self.node_of[actor._actor_id.hex()] = node
                    if node in self.draining:  # started there just before the drain began
                        self._retire(actor)
                        continue
                    self.ready.append(actor)
                    fresh.append(actor)
            return fresh

    def retire_draining(self) -> None:
        """Take the workers of nodes being drained out of service, and stop those that have run the chunks
        queued on them.  Cheap (one GCS call): jobs call it on each refresh, the JobManager every second, so
        that idle pools let a drained node go too."""
        draining = draining_nodes()  # outside the lock: a slow GCS must not hold up other jobs' threads
        with self._lock:
            if draining is not None:
                for node in draining - self.draining:
                    print(f"stylecast: node {_node_ip(node)} is being drained: its {self._kind()} workers take no "
                          "new chunks and stop once the chunks queued on them are done", file=sys.stderr)
                self.draining = draining
            for actor in [a for a in self.ready if self.node(a) in self.draining]:
                self._retire(actor)
            if self.retiring:
                done, _ = ray.wait(list(self.retiring), num_returns=len(self.retiring), timeout=0)
                for ref in done:
                    self.stop(self.retiring.pop(ref))

    def _retire(self, actor) -> None:
        """Take a worker of a draining node out of service: no new chunks, stopped when it has run the ones
        queued on it (an actor runs its calls in order, so a ping sent now answers after them)."""
        if actor in self.ready:
            self.ready.remove(actor)
        self.retiring[actor.ping.remote()] = actor

    def _drop_dead(self, timeout_s: float = 0.2) -> None:
        """Drop workers whose process has died: a dead actor's ping fails at once, so a short wait suffices
        (and a job starting beside a busy one does not wait long for the busy workers' answers)."""
        pings = {actor.ping.remote(): actor for actor in self.ready}
        answered, _ = ray.wait(list(pings), num_returns=len(pings), timeout=timeout_s) if pings else ([], [])
        for ref in answered:  # a busy worker (another job's chunk) answers later: it is not dropped
            try:
                ray.get(ref)
            except _LOST:
                self.discard(pings[ref])
            except Exception:  # noqa: BLE001 - any other answer means the worker is there
                pass

    def discard(self, actor) -> None:
        with self._lock:
            if actor in self.ready:
                self.ready.remove(actor)
            self.node_of.pop(actor._actor_id.hex(), None)
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def stop(self, actor) -> None:
        """Kill a live worker on purpose (stuck, or its node drained).  Chunks that other jobs had queued on it
        then fail for want of a worker: `stopped_on_purpose` tells them not to count that as an attempt."""
        with self._lock:
            self.stopped[actor._actor_id.hex()] = None
            while len(self.stopped) > 1000:
                del self.stopped[next(iter(self.stopped))]
        self.discard(actor)

    def stopped_on_purpose(self, actor) -> bool:
        return actor._actor_id.hex() in self.stopped

    def shutdown(self) -> None:
        with self._lock:
            actors = list(self.ready) + list(self.starting.values()) + list(self.retiring.values())
            self.ready.clear()
            self.starting.clear()
            self.retiring.clear()
            self.node_of.clear()
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass


def run_chunks(
    pool: ActorPool,
    tasks: list[tuple[Hashable, Callable]],
    *,
    on_done: Callable[[Hashable, Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_cancel: Callable[[], None] | None = None,
) -> dict:
    """Run ``tasks`` — ``(key, submit)`` where ``submit(actor)`` returns an ObjectRef — over the pool.

    Returns ``{key: result}``.  Raises the stage's own error for a deterministic failure, `ChunkFailed` when
    a chunk's workers died MAX_ATTEMPTS times, `CancelledError` when ``should_stop()`` turns true.
    """
    pending = deque(tasks)
    in_flight: dict = {}  # ref -> (actor, key, submit)
    started: dict = {}  # ref -> when it was submitted
    durations: list[float] = []  # of the chunks that finished
    with pool._lock:
        pool.start_errors.clear()  # an earlier job's start-up failures say nothing about this one
    pool.refresh(force=True)  # first: it drops the actors of nodes that have gone
    idle = list(pool.ready)
    unreadable: dict = {}  # node id -> why its workers could not read the job's files (no share mounted there)
    attempts: dict = {}
    results: dict = {}
    waiting_since = time.monotonic()
    warned = False
    start_timeout = start_timeout_s()

    def readable_workers_left() -> bool:
        """Whether a worker that may read the job's files is ready, or still starting (its node unknown)."""
        return bool(pool.starting) or any(pool.node(a) not in unreadable for a in pool.ready)

    def fail_unreadable(cause) -> None:
        cancel_all()
        raise InputUnavailable(f"{cause}, on every node with stylecast workers "
                               f"({', '.join(sorted(_node_ip(n) for n in unreadable))}): check that the file is "
                               "still there and that those nodes mount the media share") from None

    def cancel_all() -> None:
        if on_cancel is not None:
            on_cancel()
        for ref in in_flight:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001
                pass
        # ray.cancel does not interrupt a running actor task: the chunks stop when they see the job's flag
        # (on_cancel sets it).  Wait for that, so the flag outlives them and the workers are free when we return.
        if in_flight:
            _, stuck = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=STOP_WAIT_S)
            for ref in stuck:
                pool.stop(in_flight[ref][0])  # the pool starts a fresh worker in its place

    while pending or in_flight:
        if should_stop is not None and should_stop():
            cancel_all()
            raise CancelledError("cancelled")
        idle.extend(a for a in pool.refresh() if a not in idle)
        # Not the ones dropped with their node, nor those on a node that cannot read this job's files.
        idle = [a for a in idle if a in pool.ready and pool.node(a) not in unreadable]
        while pending and idle:
            actor = idle.pop(0)
            with pool._lock:  # another job's thread may retire or stop it meanwhile: check and submit as one
                if actor not in pool.ready:
                    continue
                key, submit = pending.popleft()
                ref = submit(actor)
            in_flight[ref], started[ref] = (actor, key, submit), time.monotonic()
        if idle and not pending and len(durations) >= 3:
            _rerun_stragglers(pool, in_flight, started, idle, float(sorted(durations)[len(durations) // 2]))
        if not in_flight:
            if unreadable and not readable_workers_left():
                fail_unreadable(next(iter(unreadable.values())))
            if not pool.ready and not pool.starting and len(pool.start_errors) >= MAX_ATTEMPTS:
                # Workers are started but fail in their constructor (an import, the kernels' warm-up, the
                # runtime_env): waiting would not help.
                raise ChunkFailed(f"no worker could be started: {_reason(pool.start_errors[-1])}")
            if time.monotonic() - waiting_since > start_timeout:
                if not pool.can_ever_start():
                    raise ChunkFailed(f"no worker could be started: no node of the cluster has the "
                                      f"{pool.worker_cpus():g} CPU a stylecast worker needs (add a worker node)")
                if not warned:
                    warned = True
                    print(f"stylecast: waiting for free CPUs on the cluster (other jobs hold them) since "
                          f"{start_timeout:g} s", file=sys.stderr)
            time.sleep(0.05)
            continue
        waiting_since = time.monotonic()
        ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.25)
        for ref in ready:
            actor, key, submit = in_flight.pop(ref)
            age = time.monotonic() - started.pop(ref)
            # Another copy of this chunk (a straggler's re-run, or the straggler) is still running: it answers
            # for the chunk if this one fails for want of a worker.
            twin = any(k == key for _, k, _ in in_flight.values())
            try:
                value = ray.get(ref)
            except TaskCancelledError:
                raise CancelledError("cancelled") from None
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, InputUnavailable):
                    # The driver could read the file, this worker's node cannot (a node without the share):
                    # the node is left out of this job, and the chunk goes to another node's worker.
                    node = pool.node(actor)
                    unreadable.setdefault(node, str(cause))
                    print(f"stylecast: node {_node_ip(node)} cannot read this job's files ({cause}); "
                          "its workers are left out of the job: does it mount the media share?", file=sys.stderr)
                    if not readable_workers_left():
                        fail_unreadable(cause)
                    if not twin:  # else the other copy answers for the chunk (and this one may be re-run again)
                        pending.appendleft((key, submit))
                    continue
                if isinstance(cause, _LOST):
                    # The stage itself lost a peer actor (a node went away): retry like a lost worker.
                    if twin:
                        idle.append(actor)
                        continue
                    attempts[key] = attempts.get(key, 0) + 1
                    if attempts[key] < MAX_ATTEMPTS:
                        idle.append(actor)
                        pending.appendleft((key, submit))
                        continue
                cancel_all()
                if isinstance(cause, StylecastError):
                    raise cause from None
                raise ChunkFailed(f"chunk {key} failed: {cause or exc}") from None
            except _LOST as exc:
                on_purpose = pool.stopped_on_purpose(actor)
                pool.discard(actor)
                # Its node may have gone with it: drop that node's other workers now, before the chunk goes
                # back to an idle one of them and uses up another of its attempts.
                idle.extend(pool.refresh(force=True))
                if twin:
                    continue
                if on_purpose:  # another job stopped this worker (stuck on its chunk, or drained): not our loss
                    pending.appendleft((key, submit))
                    continue
                attempts[key] = attempts.get(key, 0) + 1
                if attempts[key] >= MAX_ATTEMPTS:
                    cancel_all()
                    raise ChunkFailed(f"chunk {key} lost its worker {attempts[key]} times: {type(exc).__name__}") from None
                pending.appendleft((key, submit))
                continue
            except GetTimeoutError:  # pragma: no cover - ray.wait said it was ready
                pending.appendleft((key, submit))
                continue
            results[key] = value
            durations.append(age)
            idle.append(actor)
            for other in [r for r, (_, k, _) in in_flight.items() if k == key]:  # the straggler it rescued
                stuck = in_flight.pop(other)[0]
                started.pop(other, None)
                pool.stop(stuck)  # the pool starts a fresh worker in its place
            if on_done is not None:
                on_done(key, value)
    return results


def _rerun_stragglers(pool: ActorPool, in_flight: dict, started: dict, idle: list, median_s: float) -> None:
    """Give chunks that run far longer than the median a second worker (see STRAGGLER_FACTOR); a chunk that
    already runs twice gets no third."""
    limit = max(STRAGGLER_MIN_S, STRAGGLER_FACTOR * median_s)
    now = time.monotonic()
    copies = Counter(key for _, key, _ in in_flight.values())
    for ref, (actor, key, submit) in list(in_flight.items()):
        if not idle:
            return
        if copies[key] > 1 or now - started[ref] <= limit:
            continue
        node = pool.node(actor)
        # Another node's worker if there is one: a hung mount would hang this node's other workers too.
        spare = next((a for a in idle if pool.node(a) != node), idle[0])
        idle.remove(spare)
        copies[key] += 1
        print(f"stylecast: chunk {key} has run {now - started[ref]:.0f} s, the others took {median_s:.1f} s; "
              f"running it again on another worker (node {_node_ip(node)} may be stuck)", file=sys.stderr)
        copy = submit(spare)
        in_flight[copy], started[copy] = (spare, key, submit), now
