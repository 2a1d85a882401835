"""RemoteMonitor against a real HTTP server on 127.0.0.1, through the real Trainer."""

import json
import math
import socket
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode

import pytest
import torch

from torchcallbacks import Callback, RemoteMonitor, Trainer


class Server:
    """A stdlib HTTP server in a thread that records each POST and answers ``status``
    after waiting ``delay`` seconds (cut short when the test ends)."""

    def __init__(self, status=200, delay=0.0):
        self.requests = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, dict(self.headers), body))
                outer.release.wait(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server_factory():
    servers = []

    def make(**kwargs):
        servers.append(Server(**kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def fit(monitor, epochs=2, extra=()):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    trainer = Trainer(model, "sgd", "mse", ["mae"], "cpu")
    x = torch.randn(16, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit(
            x,
            x.sum(1, keepdim=True),
            batch_size=8,
            epochs=epochs,
            verbose=0,
            validation_split=0.25,
            callbacks=[*extra, monitor],
        )
    messages = [str(w.message) for w in caught if "RemoteMonitor" in str(w.message)]
    return history, messages


def expected_records(history):
    return [
        {"epoch": e, **{key: values[e] for key, values in history.history.items()}}
        for e in history.epoch
    ]


def test_form_payload_is_keras_exact(server_factory):
    server = server_factory()
    history, messages = fit(RemoteMonitor(root=server.root))
    assert messages == []
    assert [path for path, _, _ in server.requests] == ["/publish/epoch/end/"] * 2
    for (_, headers, body), record in zip(server.requests, expected_records(history)):
        assert headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert body == urlencode({"data": json.dumps(record)}).encode()
        assert json.loads(parse_qs(body.decode())["data"][0]) == record
    assert list(json.loads(parse_qs(server.requests[0][2].decode())["data"][0])) == [
        "epoch",
        "loss",
        "mae",
        "val_loss",
        "val_mae",
    ]


def test_json_payload_custom_path_field_and_headers(server_factory):
    server = server_factory()
    monitor = RemoteMonitor(
        root=server.root, path="/runs/7", headers={"X-Token": "secret"}, send_as_json=True
    )
    history, messages = fit(monitor)
    assert messages == []
    assert [path for path, _, _ in server.requests] == ["/runs/7", "/runs/7"]
    for (_, headers, body), record in zip(server.requests, expected_records(history)):
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Token"] == "secret"
        assert json.loads(body) == record

    form = server_factory()
    fit(RemoteMonitor(root=form.root, field="metrics"), epochs=1)
    assert list(parse_qs(form.requests[0][2].decode())) == ["metrics"]


def test_non_finite_values_are_sent_as_strict_json(server_factory):
    server = server_factory()

    class Odd(Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs.update(gap=math.inf, ratio=math.nan)

    fit(RemoteMonitor(root=server.root, send_as_json=True), epochs=1, extra=[Odd()])

    def refuse(token):
        raise ValueError(token)

    record = json.loads(server.requests[0][2], parse_constant=refuse)
    assert record["gap"] == "Infinity" and record["ratio"] == "NaN"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_server_warns_once_and_training_completes():
    root = f"http://127.0.0.1:{free_port()}"
    history, messages = fit(RemoteMonitor(root=root), epochs=3)
    assert history.epoch == [0, 1, 2]
    assert messages == [f"Could not reach RemoteMonitor root server at {root}"]


def test_server_error_warns_once_and_training_completes(server_factory):
    server = server_factory(status=500)
    history, messages = fit(RemoteMonitor(root=server.root), epochs=3)
    assert history.epoch == [0, 1, 2]
    assert len(server.requests) == 3
    assert messages == [
        f"RemoteMonitor root server at {server.root} answered 500 Internal Server Error to "
        f"POST {server.root}/publish/epoch/end/"
    ]


def test_slow_server_times_out_warns_once_and_training_completes(server_factory):
    server = server_factory(delay=30.0)
    history, messages = fit(RemoteMonitor(root=server.root, timeout=0.2), epochs=2)
    assert history.epoch == [0, 1]
    assert messages == [
        f"Could not reach RemoteMonitor root server at {server.root}: no answer within 0.2 seconds"
    ]


@pytest.mark.parametrize("timeout", [0, -1.0, "10", None])
def test_timeout_must_be_positive(timeout):
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        RemoteMonitor(timeout=timeout)


def test_only_the_main_process_posts(server_factory):
    class WorkerTrainer(Trainer):
        is_main_process = False

    server = server_factory()
    trainer = WorkerTrainer(torch.nn.Linear(1, 1), "sgd", "mse", device="cpu")
    trainer.fit(
        torch.ones(4, 1),
        torch.ones(4, 1),
        epochs=2,
        verbose=0,
        callbacks=[RemoteMonitor(root=server.root)],
    )
    assert server.requests == []
