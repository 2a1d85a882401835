"""Checks of user input made before any training: output paths and `fit` arguments.

Each check raises at once with a message naming the argument (or path), the value and the
fix, so that a mistake costs no training time. `check_output_path` is what the callbacks
that write files (ModelCheckpoint, CSVLogger, JSONLogger, TensorBoard, BackupAndRestore)
call in ``on_train_begin``.
"""

from __future__ import annotations

import os
import string
import tempfile


def check_output_path(path: str | os.PathLike, owner: str, folder: bool = False) -> None:
    """Raise an ``OSError`` naming ``path`` when ``owner`` could not write it.

    ``path`` is a file to write (``folder=False``) or a folder to write files in. Nothing is
    created: the nearest existing folder on the way is probed with a temporary file.
    """
    path = os.path.abspath(os.fspath(path))
    if not folder and os.path.isdir(path):
        raise IsADirectoryError(
            21, f"{owner} cannot write the file {path!r}: it is an existing folder", path
        )
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(
            20, f"{owner} needs the folder {path!r}, but a file has that name", path
        )
    existing = path if folder else os.path.dirname(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(
            20,
            f"{owner} cannot write {path!r}: {existing!r} on the way is a file, not a folder",
            path,
        )
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".torchcallbacks-probe-"):
            pass
    except OSError as error:
        raise OSError(
            error.errno,
            f"{owner} cannot write {path!r}: {error.strerror} in {existing!r}. Choose a folder "
            "this process can write to",
            path,
        ) from error


def check_output_template(template: str, owner: str) -> None:
    """`check_output_path` for a path template: the file itself when it has no
    ``{placeholder}``, else the folder before the first placeholder."""
    if "{" not in template:
        check_output_path(template, owner)
    else:
        check_output_path(os.path.dirname(template.split("{", 1)[0]) or ".", owner, folder=True)


def check_path_template(template: str) -> None:
    """Raise a ``ValueError`` for a ModelCheckpoint path template that cannot be formatted:
    unbalanced braces, positional ``{}`` fields, or a format that does not suit the value
    (``epoch``/``batch`` are ints, logged values floats)."""
    try:
        fields = [
            (field, spec or "")
            for _, field, spec, _ in string.Formatter().parse(template)
            if field is not None
        ]
    except ValueError as error:
        raise ValueError(
            f"ModelCheckpoint filepath {template!r} is not a valid path template ({error}): "
            "write placeholders as {name} or {name:format}, e.g. 'ckpt/{epoch:02d}.pt', and "
            "double literal braces ({{ and }})."
        ) from None
    for field, spec in fields:
        if not field.isidentifier():
            raise ValueError(
                f"ModelCheckpoint filepath {template!r}: the placeholder {{{field}}} needs the "
                "name of a logged value, 'epoch' or 'batch', e.g. 'ckpt/{epoch:02d}.pt'."
            )
        sample = 1 if field in ("epoch", "batch") else 0.5
        try:
            format(sample, spec)
        except ValueError as error:
            kind = "an int" if isinstance(sample, int) else "a float"
            example = "{epoch:02d}" if isinstance(sample, int) else f"{{{field}:.4f}}"
            raise ValueError(
                f"ModelCheckpoint filepath {template!r}: {{{field}:{spec}}} cannot format "
                f"{field}, {kind} ({error}); use e.g. {example}."
            ) from None
