"""Webhooks: Standard Webhooks signing, SSRF checks on URLs, and durable delivery to real loopback receivers.

No external network: receivers are http.server instances on 127.0.0.1; URL checks use IP literals or
``localhost`` only.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serve_app.store import Store
from serve_app.webhooks import (WebhookSender, check_webhook_url, generate_secret, parse_secret, sign, verify)

FAST = (0, 0.3, 0.6)  # three attempts within a second


# ----------------------------------------------------------------------------------------------------- signing

def test_parse_secret():
    raw = bytes(range(32))
    assert parse_secret("whsec_" + base64.b64encode(raw).decode()) == raw
    for bad in ("", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_", "whsec_not*base64!", "sk_abc"):
        with pytest.raises(ValueError, match="secret"):
            parse_secret(bad)
    assert len(parse_secret(generate_secret())) == 32


def test_sign_matches_hand_computed_hmac():
    key = b"0123456789abcdef0123456789abcdef"
    body = b'{"job_id":"j1","status":"completed"}'
    expected = base64.b64encode(hmac.new(key, b"msg_abc.1700000000." + body, hashlib.sha256).digest()).decode()
    assert sign(key, "msg_abc", 1700000000, body) == "v1," + expected


def test_sign_matches_standard_webhooks_vector():
    # the test vector of the Standard Webhooks reference libraries
    key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    assert (sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
            == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")


def test_verify():
    key = parse_secret(generate_secret())
    body = b'{"a":1}'
    ts = int(time.time())
    headers = {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(ts),
               "Webhook-Signature": sign(key, "msg_1", ts, body)}
    assert verify(key, headers, body)
    assert not verify(key, headers, b'{"a":2}')  # tampered body
    assert not verify(b"another key", headers, body)
    assert not verify(key, {**headers, "Webhook-Id": "msg_2"}, body)
    # several signatures (key rotation): one valid is enough
    other = sign(b"old key", "msg_1", ts, body)
    assert verify(key, {**headers, "Webhook-Signature": f"{other} {headers['Webhook-Signature']}"}, body)
    assert not verify(key, {**headers, "Webhook-Signature": other}, body)
    # stale or future timestamps
    old = ts - 600
    stale = {"webhook-id": "msg_1", "webhook-timestamp": str(old), "webhook-signature": sign(key, "msg_1", old, body)}
    assert not verify(key, stale, body)
    assert verify(key, stale, body, tolerance_s=900)
    assert verify(key, stale, body, now=old + 10)
    # missing or malformed headers
    assert not verify(key, {}, body)
    assert not verify(key, {**headers, "Webhook-Timestamp": "soon"}, body)
    assert not verify(key, {**headers, "Webhook-Signature": "v2," + headers["Webhook-Signature"][3:]}, body)


# -------------------------------------------------------------------------------------------------- URL checks

@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.8.9.10:8080/hook", "loopback"),
    ("http://localhost:9000/hook", "loopback"),
    ("http://10.0.0.5/hook", "private"),
    ("https://192.168.1.20/hook", "private"),
    ("http://172.16.0.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"),
    ("http://[::1]/hook", "loopback"),
    ("http://[fc00::1]/hook", "private"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://[::ffff:10.0.0.1]/hook", "private"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://[::]/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://240.0.0.1/hook", "reserved"),
    ("http://100.64.0.1/hook", "routable"),
])
def test_private_addresses_refused(url, reason):
    with pytest.raises(ValueError, match=reason):
        check_webhook_url(url, allow_private=False)


@pytest.mark.parametrize("url", ["http://93.184.216.34/hook", "https://93.184.216.34:8443/a?b=c",
                                 "https://[2606:4700:4700::1111]/hook"])
def test_public_literals_allowed(url):
    check_webhook_url(url, allow_private=False)


def test_allow_private():
    check_webhook_url("http://127.0.0.1:1234/hook", allow_private=True)
    check_webhook_url("http://[::1]/hook", allow_private=True)
    check_webhook_url("http://localhost/hook", allow_private=True)


@pytest.mark.parametrize("url, match", [
    ("ftp://93.184.216.34/x", "http or https"),
    ("file:///etc/passwd", "http or https"),
    ("93.184.216.34/hook", "http or https"),
    ("http:///hook", "no host"),
    ("http://93.184.216.34:99999/", "malformed"),
])
def test_malformed_urls(url, match):
    with pytest.raises(ValueError, match=match):
        check_webhook_url(url, allow_private=True)


def test_unresolvable_host():
    # .invalid never resolves (RFC 6761); answered locally by the resolver
    with pytest.raises(ValueError, match="resolve"):
        check_webhook_url("http://no-such-host.invalid/hook", allow_private=True)


# --------------------------------------------------------------------------------------------------- receivers

class Receiver:
    """A real HTTP server on 127.0.0.1.  ``statuses``: codes answered in turn (the last one repeats);
    ``delay_s``: sleep before answering."""

    def __init__(self, port: int = 0, statuses: tuple[int, ...] = (200,), delay_s: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], bytes, str]] = []
        self.statuses = list(statuses)
        self.delay_s = delay_s
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body, self.path))
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path)
    yield s
    s.close()


@pytest.fixture
def senders():
    made: list[WebhookSender] = []

    def make(*args, **kwargs) -> WebhookSender:
        made.append(WebhookSender(*args, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.stop()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PAYLOAD = {"job_id": "j1", "status": "completed", "progress": 100.0}


# ---------------------------------------------------------------------------------------------------- delivery

def test_delivery_arrives_signed(store, receivers, senders):
    key = parse_secret(generate_secret())
    rx = receivers(delay_s=1.0)  # answers a second after the request
    sender = senders(store, key, schedule_s=FAST, timeout_s=2, allow_private=True).start()
    sent_after = int(time.time())
    webhook_id = sender.enqueue("j1", rx.url, PAYLOAD)
    # enqueue does not wait for delivery: the receiver has not answered yet
    assert store.get_webhook_event(webhook_id).state == "pending"
    assert webhook_id.startswith("msg_")
    wait_for(lambda: store.get_webhook_event(webhook_id).state != "pending")
    sent_before = int(time.time())

    assert len(rx.requests) == 1
    headers, body, path = rx.requests[0]
    assert path == "/hook" and json.loads(body) == PAYLOAD
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == webhook_id
    assert sent_after <= int(headers["webhook-timestamp"]) <= sent_before  # signed at sending time
    assert verify(key, headers, body)
    assert not verify(key, headers, body.replace(b"completed", b"failed"))

    [delivery] = store.list_deliveries("j1")
    assert delivery.delivered and delivery.status_code == 200 and delivery.attempt == 1
    assert delivery.webhook_id == webhook_id and delivery.error is None and delivery.duration_ms >= 0
    assert store.get_webhook_event(webhook_id).state == "delivered"


def test_unsigned_without_key_and_pydantic_payload(store, receivers, senders):
    from serve_app.models import utcnow
    rx = receivers()
    sender = senders(store, None, schedule_s=FAST, timeout_s=2, allow_private=True).start()
    when = utcnow()
    webhook_id = sender.enqueue("j1", rx.url, {"job_id": "j1", "at": when})
    wait_for(lambda: store.get_webhook_event(webhook_id).state == "delivered")
    headers, body, _ = rx.requests[0]
    assert "webhook-signature" not in headers and headers["webhook-id"] == webhook_id
    assert json.loads(body) == {"job_id": "j1", "at": when.isoformat().replace("+00:00", "Z")}


def test_retries_until_2xx(store, receivers, senders):
    rx = receivers(statuses=(500, 500, 200))
    key = parse_secret(generate_secret())
    sender = senders(store, key, schedule_s=FAST, timeout_s=2, allow_private=True).start()
    webhook_id = sender.enqueue("j1", rx.url, PAYLOAD)
    wait_for(lambda: store.get_webhook_event(webhook_id).state != "pending")

    deliveries = store.list_deliveries("j1")
    assert [(d.attempt, d.status_code, d.delivered) for d in deliveries] == [(1, 500, False), (2, 500, False),
                                                                            (3, 200, True)]
    assert deliveries[0].error == "HTTP 500" and deliveries[0].next_attempt_at is not None
    assert deliveries[2].next_attempt_at is None
    assert all(d.webhook_id == webhook_id for d in deliveries)
    # same webhook-id every attempt, each signed with its own timestamp
    assert {h["webhook-id"] for h, _, _ in rx.requests} == {webhook_id}
    assert all(verify(key, h, b) for h, b, _ in rx.requests)
    # backoff respected: attempt 2 >= 0.3 s after attempt 1, attempt 3 >= 0.6 s after attempt 2
    times = [d.attempted_at.timestamp() for d in deliveries]
    assert times[1] - times[0] >= 0.29 and times[2] - times[1] >= 0.59
    assert store.get_webhook_event(webhook_id).state == "delivered"


def test_gives_up_after_last_attempt(store, receivers, senders):
    rx = receivers(statuses=(503,))
    sender = senders(store, None, schedule_s=(0, 0.1, 0.1), timeout_s=2, allow_private=True).start()
    webhook_id = sender.enqueue("j1", rx.url, PAYLOAD)
    wait_for(lambda: store.get_webhook_event(webhook_id).state != "pending")
    event = store.get_webhook_event(webhook_id)
    assert event.state == "gave_up" and event.attempts == 3 and event.next_attempt_at is None
    assert [d.status_code for d in store.list_deliveries("j1")] == [503, 503, 503]
    time.sleep(0.3)
    assert len(rx.requests) == 3  # no more attempts


def test_receiver_down_then_up(store, receivers, senders):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    sender = senders(store, None, schedule_s=FAST, timeout_s=2, allow_private=True).start()
    webhook_id = sender.enqueue("j1", url, PAYLOAD)
    wait_for(lambda: len(store.list_deliveries("j1")) >= 1)  # first attempt: connection refused
    first = store.list_deliveries("j1")[0]
    assert not first.delivered and first.status_code is None and "Connect" in first.error
    rx = receivers(port=port)
    wait_for(lambda: store.get_webhook_event(webhook_id).state != "pending")
    assert store.get_webhook_event(webhook_id).state == "delivered"
    deliveries = store.list_deliveries("j1")
    assert deliveries[-1].delivered and deliveries[-1].attempt >= 2
    assert len(rx.requests) == 1


def test_slow_receiver_times_out(store, receivers, senders):
    rx = receivers(delay_s=1.5)
    sender = senders(store, None, schedule_s=(0,), timeout_s=0.4, allow_private=True).start()
    webhook_id = sender.enqueue("j1", rx.url, PAYLOAD)
    wait_for(lambda: store.get_webhook_event(webhook_id).state != "pending")
    [delivery] = store.list_deliveries("j1")
    assert not delivery.delivered and delivery.status_code is None
    assert "timeout" in delivery.error
    assert 300 <= delivery.duration_ms < 1400
    assert store.get_webhook_event(webhook_id).state == "gave_up"


def test_slow_receiver_does_not_hold_up_others(store, receivers, senders):
    slow, fast = receivers(delay_s=2.0), receivers()
    sender = senders(store, None, schedule_s=(0,), timeout_s=5, allow_private=True).start()
    slow_id = sender.enqueue("slow", slow.url, PAYLOAD)
    fast_ids = [sender.enqueue(f"fast{i}", fast.url, PAYLOAD) for i in range(3)]
    wait_for(lambda: all(store.get_webhook_event(i).state == "delivered" for i in fast_ids), timeout_s=5)
    # Delivered while the slow receiver still holds its answer (2 s): they did not queue behind it.
    assert store.get_webhook_event(slow_id).state == "pending"  # still in flight
    wait_for(lambda: store.get_webhook_event(slow_id).state == "delivered", timeout_s=5)


def test_pending_events_delivered_after_restart(tmp_path, receivers, senders):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    key = parse_secret(generate_secret())
    store1 = Store(tmp_path)
    first = senders(store1, key, schedule_s=(0, 0.5, 0.5, 0.5), timeout_s=2, allow_private=True).start()
    failed_id = first.enqueue("j1", url, PAYLOAD)  # receiver down: attempt 1 fails
    wait_for(lambda: len(store1.list_deliveries("j1")) == 1)
    first.stop()
    never_started = WebhookSender(store1, key, schedule_s=(0, 0.5), allow_private=True)
    queued_id = never_started.enqueue("j2", url, {"job_id": "j2"})  # written, never sent
    store1.close()  # "process" ends

    rx = receivers(port=port)
    store2 = Store(tmp_path)  # the new process
    try:
        senders(store2, key, schedule_s=(0, 0.5, 0.5, 0.5), timeout_s=2, allow_private=True).start()
        wait_for(lambda: all(store2.get_webhook_event(i).state != "pending" for i in (failed_id, queued_id)))
        assert store2.get_webhook_event(failed_id).state == "delivered"
        assert store2.get_webhook_event(queued_id).state == "delivered"
        assert [d.delivered for d in store2.list_deliveries("j1")] == [False, True]
        assert {h["webhook-id"] for h, _, _ in rx.requests} == {failed_id, queued_id}
        assert all(verify(key, h, b) for h, b, _ in rx.requests)
    finally:
        store2.close()


def test_private_target_refused_at_send_time(store, receivers, senders):
    rx = receivers()
    sender = senders(store, None, schedule_s=FAST, timeout_s=2).start()  # allow_private=False (default)
    webhook_id = sender.enqueue("j1", rx.url, PAYLOAD)
    wait_for(lambda: store.get_webhook_event(webhook_id).state != "pending")
    [delivery] = store.list_deliveries("j1")
    assert "loopback" in delivery.error and not delivery.delivered
    assert store.get_webhook_event(webhook_id).state == "gave_up"  # no point retrying
    assert rx.requests == []


def test_redirects_not_followed(store, receivers, senders):
    rx = receivers(statuses=(307,))
    sender = senders(store, None, schedule_s=(0,), timeout_s=2, allow_private=True).start()
    webhook_id = sender.enqueue("j1", rx.url, PAYLOAD)
    wait_for(lambda: store.get_webhook_event(webhook_id).state != "pending")
    [delivery] = store.list_deliveries("j1")
    assert delivery.status_code == 307 and not delivery.delivered


def test_schedule_validation(store):
    with pytest.raises(ValueError):
        WebhookSender(store, None, schedule_s=())
    with pytest.raises(ValueError):
        WebhookSender(store, None, schedule_s=(0, -1))


def test_an_attempt_connects_to_the_checked_address_not_a_second_lookup(store, receivers):
    """DNS rebinding: a name checked as public must not be looked up again for the connection (the second
    answer could be 127.0.0.1).  The attempt connects to the addresses the check returned, in turn, and
    still names the host in its request."""
    rx = receivers()
    assert check_webhook_url(rx.url, allow_private=True) == ["127.0.0.1"]
    sender = WebhookSender(store, None, allow_private=True)
    url = f"http://rebound.invalid:{rx.port}/hook"  # no resolver knows this name: only the pinned address works
    # the first address refuses (nothing listens on 127.0.0.2 here): the next one is tried
    assert sender._post(url, ["127.0.0.2", "127.0.0.1"], b"{}", {"content-type": "application/json"}) == 200
    headers, body, path = rx.requests[-1]
    assert headers["host"] == f"rebound.invalid:{rx.port}" and body == b"{}" and path == "/hook"


def test_a_receiver_that_answers_a_byte_at_a_time_is_cut_off(store, senders):
    """Every read gets a timeout, but a receiver could send one byte just inside it, forever: the attempt
    has one deadline (2 x timeout_s), so a worker is never held longer."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        conn.recv(65536)
        while not stop.is_set():
            try:
                conn.sendall(b"H")
            except OSError:
                break
            time.sleep(0.1)
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    try:
        sender = senders(store, None, schedule_s=(0,), timeout_s=0.5, allow_private=True).start()
        webhook_id = sender.enqueue("j1", f"http://127.0.0.1:{listener.getsockname()[1]}/hook", PAYLOAD)
        wait_for(lambda: store.get_webhook_event(webhook_id).state != "pending", timeout_s=20)
        [delivery] = store.list_deliveries("j1")
        assert not delivery.delivered and "timeout" in delivery.error
        assert store.get_webhook_event(webhook_id).state == "gave_up"
    finally:
        stop.set()
        listener.close()


def test_the_request_is_built_as_an_http_client_builds_it(store, receivers):
    """Credentials in the URL become Basic auth, a path is percent-encoded, and an IPv6 literal is named in
    brackets in the Host header (the request line and headers are httpx's, only the connection is pinned)."""
    import base64 as b64
    import socket

    rx = receivers()
    sender = WebhookSender(store, None, allow_private=True)
    assert sender._post(f"http://hook%20user:pa%20ss@127.0.0.1:{rx.port}/a b/hook", ["127.0.0.1"], b"{}", {}) == 200
    headers, _, path = rx.requests[-1]
    assert path == "/a%20b/hook"
    assert headers["authorization"] == "Basic " + b64.b64encode(b"hook user:pa ss").decode()
    assert headers["host"] == f"127.0.0.1:{rx.port}"

    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback here")

    class V6Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(self.headers["host"])
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = V6Server(("::1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        port = server.server_address[1]
        assert sender._post(f"http://[::1]:{port}/hook", check_webhook_url(f"http://[::1]:{port}/hook", True),
                            b"{}", {}) == 204
        assert seen == [f"[::1]:{port}"]
    finally:
        server.shutdown()
        server.server_close()
