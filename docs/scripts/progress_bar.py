"""Draws docs/assets/progress_bar.svg: the progress bar of a real fit, as a terminal shows it.

    python docs/scripts/progress_bar.py

Runs a fit with ``verbose=1`` in a detached tmux session (a real terminal, so the bar
redraws in place as it does for users), captures the pane in the middle of the last epoch,
while the bar is still moving, and renders it with rich. Needs tmux and rich.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "assets" / "progress_bar.svg"
SESSION = "torchcallbacks-progress-bar"
FIT = """
import torch
from torch import nn
from torchcallbacks import EarlyStopping, Trainer, seed_everything

seed_everything(0)
x = torch.randn(40_000, 20)
y = (x[:, :10].sum(1) > x[:, 10:].sum(1)).long()
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
trainer = Trainer(model, optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
trainer.fit(x, y, epochs=3, batch_size=32, validation_split=0.2,
            callbacks=[EarlyStopping(monitor="val_loss", patience=2)])
"""


def capture() -> str:
    """The pane's text, with its colours as escape sequences."""
    return subprocess.run(
        ["tmux", "capture-pane", "-p", "-e", "-t", SESSION],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "train.py"
        script.write_text(FIT)
        done = Path(folder) / "done"
        command = (
            f"cd {shlex.quote(str(ROOT))} && OMP_NUM_THREADS=1 PYTHONPATH={shlex.quote(str(ROOT))} "
            f"{shlex.quote(sys.executable)} train.py; touch {shlex.quote(str(done))}; sleep 60"
        ).replace("train.py", shlex.quote(str(script)), 1)
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", SESSION, "-x", "132", "-y", "7", command],
            check=True,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        try:
            deadline = time.monotonic() + 300
            pane = ""
            while not done.exists() and time.monotonic() < deadline:
                pane = capture()
                last = pane.rstrip().splitlines()[-1] if pane.strip() else ""
                if "Epoch 3/3" in pane and "ETA" in last and last.count("=") >= 10:
                    break  # a third of the last epoch or more: the bar is half drawn
                time.sleep(0.1)
            else:
                raise RuntimeError("the fit ended before the pane could be captured mid-epoch")
        finally:
            subprocess.run(["tmux", "kill-session", "-t", SESSION], check=False)
    console = Console(record=True, width=132, file=open(os.devnull, "w"))
    console.print(Text.from_ansi("$ python train.py\n" + pane.rstrip()))
    console.save_svg(str(OUT), title="python train.py")
    print(pane.rstrip())
    print(f"Wrote {OUT}")


if __name__ == "__main__":
    main()
