"""`RemoteMonitor`: POSTs each epoch's logs to an HTTP server."""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from torchcallbacks.callbacks.base import Callback
from torchcallbacks.callbacks.json_logger import json_safe
from torchcallbacks.utils import require


class RemoteMonitor(Callback):
    """Sends ``{"epoch": <0-based epoch>, **logs}`` to ``root + path`` at every epoch end.

    Example::

        monitor = RemoteMonitor(root="http://localhost:9000", send_as_json=True)
        trainer.fit(x, y, epochs=10, callbacks=[monitor])

    ``send_as_json=False`` (Keras's default) posts a form with one field, ``field``, whose
    value is the JSON text of the record; ``send_as_json=True`` posts the record itself as
    ``application/json``. ``headers`` are passed to ``requests.post`` as given. NaN and
    infinite values are sent as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` so the
    payload is strict JSON (see `JSONLogger`).

    The monitor never stops training: each request, from connecting to the end of the
    answer's headers, takes at most ``timeout`` seconds (a server that trickles its answer
    cannot hold training longer; the body of the answer is not read),
    and a refused connection, a timeout or an answer other than 2xx gives one warning per
    kind of failure and fit, then the run goes on. The request runs in a helper thread that
    training waits for at most ``timeout`` seconds. Requires ``requests``
    (``pip install "torchcallbacks[remote]"``; without it the constructor raises an
    ``ImportError`` naming that extra).
    """

    def __init__(
        self,
        root: str = "http://localhost:9000",
        path: str = "/publish/epoch/end/",
        field: str = "data",
        headers: Mapping[str, str] | None = None,
        send_as_json: bool = False,
        timeout: float = 10.0,
    ) -> None:
        super().__init__()
        self._requests = require("requests", "remote", "RemoteMonitor")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds; got {timeout!r}")
        self.root = root
        self.path = path
        self.field = field
        self.headers = headers
        self.send_as_json = send_as_json
        self.timeout = timeout
        self._warned: set[str] = set()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._warned = set()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not getattr(self.trainer, "is_main_process", True):
            return
        payload = {"epoch": epoch, **json_safe(dict(logs or {}))}
        outcome: list[Any] = []
        worker = threading.Thread(
            target=self._post, args=(payload, outcome), name="RemoteMonitor", daemon=True
        )
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive() or (outcome and outcome[0] == "timeout"):
            self._warn(
                "timeout",
                f"Could not reach RemoteMonitor root server at {self.root}: no answer within "
                f"{self.timeout} seconds",
            )
        elif outcome and outcome[0] == "unreachable":
            self._warn("unreachable", f"Could not reach RemoteMonitor root server at {self.root}")
        elif outcome and not 200 <= outcome[0] < 300:
            status, reason = outcome
            self._warn(
                "status",
                f"RemoteMonitor root server at {self.root} answered {status} {reason} to "
                f"POST {self.root + self.path}",
            )

    def _post(self, payload: dict[str, Any], outcome: list[Any]) -> None:
        """POST ``payload`` (in the helper thread) and put ``"timeout"``, ``"unreachable"``
        or ``(status, reason)`` in ``outcome``. The answer's body is never read (as in
        Keras, only the status matters), so a server that trickles it costs nothing."""
        requests = self._requests
        if self.send_as_json:
            body: dict[str, Any] = {"json": payload}
        else:
            body = {"data": {self.field: json.dumps(payload, allow_nan=False)}}
        try:
            with requests.post(
                self.root + self.path,
                headers=self.headers,
                timeout=self.timeout,
                stream=True,
                **body,
            ) as response:
                outcome.extend((response.status_code, response.reason))
        except requests.exceptions.Timeout:
            outcome.append("timeout")
        except requests.exceptions.RequestException:
            outcome.append("unreachable")

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, stacklevel=3)
