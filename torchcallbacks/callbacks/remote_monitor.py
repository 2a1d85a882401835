"""`RemoteMonitor`: POSTs each epoch's logs to an HTTP server."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping

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

    The monitor never stops training: each request waits at most ``timeout`` seconds, and a
    refused connection, a timeout or an answer other than 2xx gives one warning per kind of
    failure and fit, then the run goes on. Requires ``requests``
    (``pip install "torchcallbacks[remote]"``).
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
        requests = self._requests
        payload = {"epoch": epoch, **json_safe(dict(logs or {}))}
        url = self.root + self.path
        try:
            if self.send_as_json:
                response = requests.post(
                    url, json=payload, headers=self.headers, timeout=self.timeout
                )
            else:
                form = {self.field: json.dumps(payload, allow_nan=False)}
                response = requests.post(url, form, headers=self.headers, timeout=self.timeout)
        except requests.exceptions.Timeout:
            self._warn(
                "timeout",
                f"Could not reach RemoteMonitor root server at {self.root}: no answer within "
                f"{self.timeout} seconds",
            )
        except requests.exceptions.RequestException:
            self._warn("unreachable", f"Could not reach RemoteMonitor root server at {self.root}")
        else:
            if not 200 <= response.status_code < 300:
                self._warn(
                    "status",
                    f"RemoteMonitor root server at {self.root} answered {response.status_code} "
                    f"{response.reason} to POST {url}",
                )

    def _warn(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, stacklevel=3)
