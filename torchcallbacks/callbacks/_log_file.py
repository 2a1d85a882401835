"""The append-only file behind `CSVLogger` and `JSONLogger`, resumable to a saved length."""

from __future__ import annotations

import contextlib
import io
import os
import warnings

from torchcallbacks.checkpoints.files import write_error
from torchcallbacks.checks import check_output_path


class LogFile:
    """A log written in whole records, that a resumed run can cut back to a saved length.

    `begin` decides, at train begin, whether the run appends to the file or replaces it, but
    touches nothing: the file is opened (and truncated) at the first `write`. ``length`` is
    the file's byte length after the last record this logger wrote; `restore` cuts the file
    back to a saved ``length``, so records written after a backup disappear on resume.

    Each record goes to the OS in one unbuffered write, so a crash never leaves half a line;
    a write that fails part way (a full disk) is cut back to the last whole record and
    raises an ``OSError`` naming the file.
    """

    def __init__(self, filename: str | os.PathLike) -> None:
        self.filename = os.fspath(filename)
        self.length = 0
        self._file: io.FileIO | None = None

    def begin(self, append: bool, owner: str, writer: bool = True) -> None:
        """Start a run: keep the current content when ``append``, else replace it. On the
        process that writes (``writer``), raise an ``OSError`` naming the file when ``owner``
        could not write it."""
        self.close()
        if writer:
            check_output_path(self.filename, owner)
        exists = append and os.path.exists(self.filename)
        self.length = os.path.getsize(self.filename) if exists else 0

    def write(self, text: str) -> None:
        record = text.encode("utf-8")
        view = memoryview(record)
        try:
            if self._file is None:
                self._open()
            while view:
                view = view[self._file.write(view) :]
        except OSError as error:
            if self._file is not None:  # drop the part of the record that got through
                with contextlib.suppress(OSError):
                    self._file.truncate(self.length)
            raise write_error(self.filename, error) from error
        self.length += len(record)

    def restore(self, length: int) -> None:
        """Cut the file back to ``length`` bytes (the state of a backup) and append from there."""
        self.close()
        size = os.path.getsize(self.filename) if os.path.exists(self.filename) else 0
        if size < length:
            warnings.warn(
                f"{self.filename} holds {size} bytes, fewer than the {length} it had when the "
                "backup was made (was it replaced?); new records are appended to it as it is.",
                stacklevel=3,
            )
            length = size
        self.length = length
        if size:
            self._open()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> None:
        folder = os.path.dirname(self.filename)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._file = io.FileIO(self.filename, "a")
        self._file.truncate(self.length)
