"""The kill -9 campaign (tests/kill_campaign.py): runs killed at every save point and at
random moments resume bit-identically, with no missing best checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CAMPAIGN = os.path.join(os.path.dirname(__file__), "kill_campaign.py")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the campaign forks its runs (POSIX)")
@pytest.mark.parametrize("data", ["loader", "tensors"])
def test_kill_campaign_resumes_bit_identically_without_losing_the_best_file(tmp_path, data):
    result = subprocess.run(
        [sys.executable, CAMPAIGN, str(tmp_path), data, "12"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(CAMPAIGN))},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    reference = report["reference"]
    assert reference["best_exists"] and reference["epochs"] == [0, 1, 2, 3]
    trials = report["trials"]
    save_kills = [t for t in trials if "kill_at_save" in t["kill"]]
    random_kills = [t for t in trials if "kill_after" in t["kill"]]
    # one kill just before and one just after the rename of every file the run writes
    assert report["saves"] >= 8 and len(save_kills) == 2 * report["saves"]
    assert all(t["first_exit"] == -9 for t in save_kills)
    assert len(random_kills) == 12 and sum(t["first_exit"] == -9 for t in random_kills) >= 10
    failed = [
        {key: value for key, value in trial.items() if key != "outcome"}
        | {
            "differs": sorted(
                key for key, value in trial.get("outcome", {}).items() if value != reference[key]
            )
        }
        for trial in trials
        if not trial["identical"]
    ]
    assert failed == []
