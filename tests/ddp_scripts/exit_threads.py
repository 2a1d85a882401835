"""Run a training script (``--script PATH``; the other arguments are its own) and, as the
last step of each process's exit, write how many of gloo's threads still run to
``OUT.exit-threads-RANK`` (OUT: the script's ``--out``). A process group that is still
alive then is freed during interpreter shutdown, which can abort the process."""

from __future__ import annotations

import atexit
import os
import runpy
import sys
from pathlib import Path


def gloo_threads() -> int:
    return sum("gloo" in (task / "comm").read_text() for task in Path("/proc/self/task").iterdir())


def main() -> None:
    args = sys.argv[1:]
    script = args.pop(args.index("--script") + 1)
    args.remove("--script")
    out = args[args.index("--out") + 1]
    report = Path(f"{out}.exit-threads-{os.environ.get('RANK', '0')}")
    # Registered before the script registers its own handlers, so it runs after them all.
    atexit.register(lambda: report.write_text(str(gloo_threads())))
    sys.argv = [script, *args]
    sys.path.insert(0, str(Path(script).parent))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
