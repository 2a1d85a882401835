"""Progress bar text as a user sees it, captured from a pipe and from a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from torchcallbacks import Trainer, ProgbarLogger
    torch.manual_seed(0)
    x = torch.randn(40, 3); y = x.sum(1, keepdim=True)
    callbacks = [ProgbarLogger(style=sys.argv[2])] if sys.argv[2] != "default" else None
    trainer = Trainer(torch.nn.Linear(3, 1), "sgd", "mse", metrics=["mae"])
    trainer.fit(x, y, batch_size=10, epochs=2, verbose=int(sys.argv[1]), callbacks=callbacks,
                validation_data=(x, y))
    trainer.evaluate(x, y, batch_size=10, verbose=int(sys.argv[1]))
    """
)


def _run(verbose: int, style: str = "default", tty: bool = False) -> str:
    command = [sys.executable, "-c", SCRIPT, str(verbose), style]
    if not tty:
        return subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=120
        ).stdout
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode()


FINAL = (
    r"4/4 \[==============================\] - \d+s \d+(ms|us)/step - loss: \d+\.\d{4} "
    r"- mae: \d+\.\d{4}"
)


def test_piped_verbose_1_has_no_control_characters_and_keras2_lines():
    out = _run(1)
    assert not re.search(r"[\r\b\x1b]", out)
    lines = out.splitlines()
    assert lines[0] == "Epoch 1/2"
    assert re.fullmatch(FINAL + r" - val_loss: \d+\.\d{4} - val_mae: \d+\.\d{4}", lines[1])
    assert lines[2] == "Epoch 2/2"
    assert re.fullmatch(FINAL + r" - val_loss: \d+\.\d{4} - val_mae: \d+\.\d{4}", lines[3])
    assert re.fullmatch(FINAL, lines[4])  # evaluate prints its own bar
    assert len(lines) == 5


def test_piped_verbose_2_one_line_per_epoch():
    lines = _run(2).splitlines()
    pattern = (
        r"4/4 - \d+s - loss: \d+\.\d{4} - mae: \d+\.\d{4} - val_loss: \d+\.\d{4} - "
        r"val_mae: \d+\.\d{4} - \d+(s|ms|us)/epoch - \d+(s|ms|us)/step"
    )
    assert lines[0] == "Epoch 1/2" and re.fullmatch(pattern, lines[1])
    assert re.fullmatch(pattern, lines[3])


def test_piped_keras3_style_has_no_ansi_and_counts_steps():
    # Keras 3 has no count_mode: its bar counts steps even though a ProgbarLogger the user
    # builds counts samples by default in the tf.keras style.
    lines = _run(1, "keras3").splitlines()
    assert re.fullmatch(
        r"4/4 ━{20} \d+s \d+(ms|us)/step - loss: \d+\.\d{4} - mae: \d+\.\d{4} - val_loss: "
        r"\d+\.\d{4} - val_mae: \d+\.\d{4}",
        lines[1],
    )


def test_terminal_redraws_in_place():
    out = _run(1, tty=True)
    assert "\r" in out
    # The last redraw of each epoch ends with the full bar and a newline.
    finals = re.findall(r"\r(4/4 \[=+\][^\r\n]*?) *\r?\n", out)
    assert len(finals) == 3
    assert all(re.match(FINAL, line) for line in finals)
    # In-progress redraws show the running logs the bar reads from the trainer.
    assert re.search(r"1/4 \[=+>\.+\] - ETA: \d+s - loss: \d+\.\d{4} - mae: \d+\.\d{4}", out)


def test_verbose_0_prints_nothing():
    assert _run(0) == ""


def test_count_mode_samples_counts_samples_in_keras2_style_only():
    import io

    import torch

    from torchcallbacks import ProgbarLogger, Trainer

    x, y = torch.randn(40, 3), torch.randn(40, 1)
    lines = {}
    for style in ("keras2", "keras3"):
        stream = io.StringIO()
        trainer = Trainer(torch.nn.Linear(3, 1), "sgd", "mse")
        logger = ProgbarLogger(count_mode="samples", style=style, stream=stream)
        trainer.fit(x, y, batch_size=10, epochs=1, verbose=2, callbacks=[logger])
        lines[style] = stream.getvalue().splitlines()
    assert re.fullmatch(r"40/40 - .* \d+(s|ms|us)/sample", lines["keras2"][-1])
    assert re.fullmatch(r"4/4 - \d+s - \d+(s|ms|us)/step - loss: \d+\.\d{4}", lines["keras3"][-1])
