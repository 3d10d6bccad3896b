"""Job webhooks, signed per Standard Webhooks (https://www.standardwebhooks.com), delivered durably with retries.

Signing
-------
The secret is configured as ``whsec_<base64>``; the key is the decoded base64 part.  Every request carries

* ``webhook-id``: ``msg_<uuid>``, the same for every attempt of one event (receivers dedupe on it);
* ``webhook-timestamp``: integer epoch seconds of this attempt;
* ``webhook-signature``: ``v1,<base64(HMAC-SHA256(key, "{id}.{timestamp}." + body))>``.

Receivers verify with `verify` (or any Standard Webhooks library).  With no secret configured (``key=None``)
requests are sent **unsigned** (no ``webhook-signature`` header); ``webhook-id`` and ``webhook-timestamp``
are still sent.

Delivery
--------
`WebhookSender.enqueue` writes the event to the `Store` and returns at once; a daemon thread hands due events
to a small thread pool that POSTs them (httpcore).  An attempt ends within ``2 × timeout_s`` however slowly
the receiver answers.  Every attempt (status code / error / duration) is recorded in the store.  Network
errors, timeouts and non-2xx answers (redirects included: they are not followed) are retried on the schedule;
after the last attempt the event is given up.  Events survive restarts: a new sender on the same store picks
up whatever is pending.

Target URLs are checked against SSRF with `check_webhook_url` (when the job is created, and again by the
sender before each attempt unless ``allow_private``), and each attempt connects to an address that check
resolved (no second DNS lookup for the connection to be rebound to a private address).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from serve_app.store import Store, WebhookEvent

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
DEFAULT_SCHEDULE_S: tuple[float, ...] = (0, 5, 30, 120, 300, 450)
"""Delay before each attempt: the first after enqueue, each next one after the previous attempt failed.
Six attempts over about 15 minutes."""


# ----------------------------------------------------------------------------------------------------- signing

def parse_secret(value: str) -> bytes:
    """The HMAC key from a ``whsec_<base64>`` secret; `ValueError` with the reason otherwise."""
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ValueError(f"webhook secret must look like '{SECRET_PREFIX}<base64>'")
    encoded = value[len(SECRET_PREFIX):].strip()
    if not encoded:
        raise ValueError(f"webhook secret has nothing after '{SECRET_PREFIX}'")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"webhook secret: the part after '{SECRET_PREFIX}' is not valid base64") from None
    if not key:
        raise ValueError("webhook secret decodes to an empty key")
    return key


def generate_secret(n_bytes: int = 32) -> str:
    """A fresh ``whsec_...`` secret (Standard Webhooks recommends 24–64 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(n_bytes)).decode()


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}." + body>``."""
    mac = hmac.new(key, f"{webhook_id}.{int(timestamp)}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(key: bytes, headers: Mapping[str, str], body: bytes, tolerance_s: float = 300,
           now: float | None = None) -> bool:
    """True when ``headers`` (any letter case) carry a valid ``v1`` signature of ``body`` and a timestamp
    within ``tolerance_s`` of now.  The signature header may list several space-separated signatures (key
    rotation); one match is enough.  Comparisons are constant-time."""
    lowered = {k.lower(): v for k, v in headers.items()}
    webhook_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not webhook_id or not timestamp or not signatures:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > tolerance_s:
        return False
    expected = sign(key, webhook_id, ts, body).encode()
    found = False
    for candidate in signatures.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected):
            found = True  # no early exit: same work whatever matches
    return found


# ---------------------------------------------------------------------------------------------- URL checks

class UnresolvableHostError(ValueError):
    """The webhook URL's host does not resolve (possibly a transient DNS failure)."""


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why this address is not a public one ("a loopback address", ...), or None when it is."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:a.b.c.d is a.b.c.d
        reason = _refusal(mapped)
        return None if reason is None else f"{reason} (IPv4-mapped)"
    checks = (("is_unspecified", "an unspecified"), ("is_loopback", "a loopback"),
              ("is_link_local", "a link-local"), ("is_multicast", "a multicast"), ("is_reserved", "a reserved"),
              ("is_private", "a private"))
    for attr, name in checks:
        if getattr(ip, attr):
            return f"{name} address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def _resolve(host: str, port: int, timeout_s: float) -> list[str]:
    """Addresses of ``host`` via getaddrinfo, in a daemon thread so a hung resolver cannot stall the caller."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=work, name="webhook-resolve", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise UnresolvableHostError(f"webhook host {host!r} did not resolve within {timeout_s:g} s")
    if "error" in result:
        raise UnresolvableHostError(f"webhook host {host!r} does not resolve: {result['error']}")
    # A link-local IPv6 answer needs its zone to be connected to (getaddrinfo gives the scope id apart).
    addresses = [f"{info[4][0]}%{socket.if_indextoname(info[4][3])}"
                 if info[0] == socket.AF_INET6 and info[4][3] and "%" not in info[4][0] else info[4][0]
                 for info in result["infos"]]
    if not addresses:
        raise UnresolvableHostError(f"webhook host {host!r} resolves to no address")
    return addresses


RESOLVE_TIMEOUT_S = 3.0  # a webhook host that does not resolve within this long is retried later


def check_webhook_url(url: str, allow_private: bool, *, resolve_timeout_s: float = RESOLVE_TIMEOUT_S) -> list[str]:
    """Refuse (`ValueError` with the reason) a webhook URL that is not http(s) with a host, or whose host
    resolves to ANY loopback, private, link-local, multicast, reserved, unspecified or otherwise non-public
    address (IPv4, IPv6 and IPv4-mapped IPv6), unless ``allow_private``.  An unresolvable host raises
    `UnresolvableHostError` (a `ValueError`) even with ``allow_private``.  IP literals need no DNS.

    Returns the addresses checked: a delivery connects to one of them (`_PinnedBackend`), never to what a
    second lookup might answer (a name that resolves to a public address once and to 127.0.0.1 next)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"webhook URL is malformed: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"webhook URL must be http or https, not {parts.scheme or '(none)'!r}")
    host = parts.hostname
    if not host:
        raise ValueError("webhook URL has no host")
    if port is None:
        port = 443 if parts.scheme.lower() == "https" else 80
    try:
        addresses = [str(ipaddress.ip_address(host.split("%")[0]))]  # a literal: no DNS
        literal = True
    except ValueError:
        addresses = _resolve(host, port, resolve_timeout_s)
        literal = False
    if allow_private:
        return addresses
    for address in addresses:
        reason = _refusal(ipaddress.ip_address(address.split("%")[0]))  # drop an IPv6 zone id
        if reason is not None:
            shown = host if literal else f"{host} ({address})"
            raise ValueError(f"webhook URL refused: {shown} is {reason}")
    return addresses


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits at most until one deadline for the whole attempt: a
    receiver that answers a byte at a time cannot hold an attempt (and a sender's worker) longer."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream, self._deadline = stream, deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the attempt ran past its deadline")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, self._left(timeout)),
                               self._deadline)

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _PinnedBackend(httpcore.SyncBackend):
    """Connects to the checked addresses (in turn, as a resolver's answer is tried), whatever the URL's host
    name resolves to now (TLS still verifies and sends that name), and bounds the attempt by ``deadline``
    (time.monotonic())."""

    def __init__(self, addresses: Sequence[str], deadline: float) -> None:
        self._addresses, self._deadline = list(addresses), deadline

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        failure: Exception | None = None
        for address in self._addresses:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the attempt ran past its deadline")
            try:
                stream = super().connect_tcp(address, port, timeout=left if timeout is None else min(timeout, left),
                                             local_address=local_address, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:  # e.g. an IPv6 route that drops
                failure = exc
                continue
            return _DeadlineStream(stream, self._deadline)
        raise failure or httpcore.ConnectError(f"no address to connect to for {host}")


# ------------------------------------------------------------------------------------------------------ sender

class WebhookSender:
    """Durable webhook delivery on top of a `Store`.

    ``key``: the HMAC key (`parse_secret`), or None to send unsigned requests.
    ``schedule_s``: delay before each attempt (first: after enqueue; next: after the previous failure); its
    length is the number of attempts.  ``timeout_s``: per-request httpx timeout (connect/read/write/pool).
    ``clock``: epoch seconds, for timestamps and due times (waiting uses real time).
    ``max_workers``: concurrent deliveries, so a slow receiver holds one worker, not the queue.
    ``allow_private``: skip the SSRF re-check made before every attempt (tests with loopback receivers; never in
    production).  ``poll_interval_s``: longest sleep between looks at the store (other processes may add events).
    """

    def __init__(self, store: Store, key: bytes | None, *, schedule_s: Sequence[float] = DEFAULT_SCHEDULE_S,
                 timeout_s: float = 10, clock: Callable[[], float] = time.time, max_workers: int = 4,
                 allow_private: bool = False, poll_interval_s: float = 1.0,
                 user_agent: str = "stylecast-webhooks/1") -> None:
        self.store = store
        self.key = key
        self.set_schedule(schedule_s)
        self.timeout_s = float(timeout_s)
        self.clock = clock
        self.max_workers = max_workers
        self.allow_private = allow_private
        self.poll_interval_s = poll_interval_s
        # One attempt (DNS, connect, send, the answer's head) ends within this long, however the receiver
        # trickles; an attempt not recorded by the end of its lease is considered lost (its process died).
        self.attempt_deadline_s = 2 * self.timeout_s
        self.lease_s = RESOLVE_TIMEOUT_S + self.attempt_deadline_s + 30
        self.user_agent = user_agent
        self._ssl_context = httpx.create_ssl_context()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._count_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- public

    def set_schedule(self, schedule_s: Sequence[float]) -> None:
        """The delays before each attempt (see the class); takes effect for the next attempt."""
        if not schedule_s:
            raise ValueError("schedule_s needs at least one attempt")
        if any(d < 0 for d in schedule_s):
            raise ValueError("schedule_s delays must be >= 0")
        self.schedule_s = tuple(float(d) for d in schedule_s)

    def enqueue(self, job_id: str, url: str, payload: dict[str, Any] | BaseModel) -> str:
        """Persist one event (a new ``msg_<uuid>`` webhook-id) due now + ``schedule_s[0]`` and wake the worker.
        Returns the webhook-id.  Does not wait for delivery; the body is the compact JSON of ``payload``
        (datetimes as ISO 8601)."""
        if isinstance(payload, BaseModel):
            payload = payload.model_dump(mode="json")
        body = json.dumps(to_jsonable_python(payload), separators=(",", ":")).encode()
        webhook_id = f"msg_{uuid.uuid4().hex}"
        now = self.clock()
        self.store.add_webhook_event(webhook_id, job_id, url, body, now + self.schedule_s[0], now=now)
        self._wake.set()
        return webhook_id

    def start(self) -> WebhookSender:
        """Start the delivery thread (idempotent).  Pending events already in the store are picked up."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._pool = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="webhook-send")
        self._thread = threading.Thread(target=self._loop, name="webhook-sender", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop taking events and wait for attempts in flight (each ends within its deadline, 2 x timeout_s).
        Pending events stay in the store for the next sender."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> WebhookSender:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def deliver_once(self, event: WebhookEvent) -> bool:
        """Make one attempt for ``event`` now and record it; True when delivered.  (The worker's unit of work;
        public for tools and tests.)"""
        attempt = event.attempts + 1
        now = self.clock()
        timestamp = int(now)
        headers = {"content-type": "application/json", "webhook-id": event.webhook_id,
                   "webhook-timestamp": str(timestamp)}
        if self.key is not None:
            headers["webhook-signature"] = sign(self.key, event.webhook_id, timestamp, event.payload)
        status_code: int | None = None
        error: str | None = None
        give_up_now = False
        started = time.perf_counter()
        try:
            addresses = check_webhook_url(event.url, allow_private=self.allow_private)
            status_code = self._post(event.url, addresses, event.payload, headers)
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except UnresolvableHostError as exc:  # maybe transient DNS trouble: retry
            error = str(exc)
        except ValueError as exc:  # refused address or malformed URL: retrying cannot help
            error = str(exc)
            give_up_now = True
        except httpcore.TimeoutException as exc:
            error = f"timeout after {time.perf_counter() - started:.1f} s ({type(exc).__name__})"
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        except Exception as exc:  # noqa: BLE001 — never let one event kill a worker
            error = f"{type(exc).__name__}: {exc}"
        duration_ms = (time.perf_counter() - started) * 1000.0
        delivered = error is None
        next_at = None
        if not delivered and not give_up_now and attempt < len(self.schedule_s):
            next_at = self.clock() + self.schedule_s[attempt]
        self.store.record_delivery_attempt(event.webhook_id, delivery_id=f"dlv_{uuid.uuid4().hex}",
                                           attempted_at=now, delivered=delivered, status_code=status_code,
                                           error=error, duration_ms=round(duration_ms, 3),
                                           next_attempt_at=next_at)
        if delivered:
            log.info("webhook %s for job %s delivered (attempt %d)", event.webhook_id, event.job_id, attempt)
        elif next_at is None:
            log.warning("webhook %s for job %s given up after attempt %d: %s", event.webhook_id, event.job_id,
                        attempt, error)
        return delivered

    # ------------------------------------------------------------------------------------------ internals

    def _post(self, url: str, addresses: Sequence[str], body: bytes, headers: dict[str, str]) -> int:
        """POST ``body`` to ``url`` over a connection to one of ``addresses``; the answer's status (its body is
        not read).  No redirects (a 3xx could point anywhere), no proxies, and one deadline for everything."""
        deadline = time.monotonic() + self.attempt_deadline_s
        timeouts = {"connect": self.timeout_s, "read": self.timeout_s, "write": self.timeout_s,
                    "pool": self.timeout_s}
        # httpx builds the request as its own client would: Host (IPv6 literals in brackets), percent- and
        # IDNA-encoding, Basic auth from credentials in the URL, Content-Length.
        target = httpx.URL(url)
        request = httpx.Request("POST", target, headers={"user-agent": self.user_agent, **headers}, content=body)
        if target.username or target.password:
            token = base64.b64encode(f"{target.username}:{target.password}".encode()).decode()
            request.headers["authorization"] = f"Basic {token}"
        core_url = httpcore.URL(scheme=target.raw_scheme, host=target.raw_host, port=target.port,
                                target=target.raw_path)
        with httpcore.ConnectionPool(ssl_context=self._ssl_context, max_connections=1,
                                     network_backend=_PinnedBackend(addresses, deadline)) as pool:
            with pool.stream("POST", core_url, headers=request.headers.raw, content=body,
                             extensions={"timeout": timeouts}) as response:
                return response.status

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            events: list[WebhookEvent] = []
            try:
                with self._count_lock:
                    free = self.max_workers - self._in_flight
                events = self.store.claim_webhook_events(self.clock(), free, self.lease_s) if free > 0 else []
                for event in events:
                    with self._count_lock:
                        self._in_flight += 1
                    assert self._pool is not None
                    self._pool.submit(self._work, event)
                next_due = self.store.next_webhook_due()
            except Exception:  # noqa: BLE001 — e.g. the store is briefly busy; try again shortly
                log.exception("webhook sender loop error")
                next_due = None
                free = 0
            wait = self.poll_interval_s
            if next_due is not None and free - len(events) > 0:  # all busy: a finishing worker wakes us
                wait = min(wait, max(0.0, next_due.timestamp() - self.clock()))
            self._wake.wait(max(wait, 0.005))

    def _work(self, event: WebhookEvent) -> None:
        try:
            self.deliver_once(event)
        except Exception:  # noqa: BLE001 — recording failed; the claim lease makes the event due again later
            log.exception("webhook %s: attempt could not be recorded", event.webhook_id)
        finally:
            with self._count_lock:
                self._in_flight -= 1
            self._wake.set()
