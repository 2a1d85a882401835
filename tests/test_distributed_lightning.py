"""A real LightningModule trained through its own ``training_step`` under torchrun (2 CPU
processes, gloo), with DDP and with FSDP2, against one process on the same global batches.

The worker is ``tests/ddp_scripts/lightning_ddp.py`` (a subclass of Lightning's
``BoringModel`` that logs with ``self.log``), started once for the whole module; the
single-process reference runs the worker's `fit_once` here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPTS = Path(__file__).parent / "ddp_scripts"
sys.path.insert(0, str(SCRIPTS))
import launch  # noqa: E402
import lightning_ddp  # noqa: E402  (the worker script: its modules and data)

from torchcallbacks import Trainer  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with gloo is not available in this torch build",
)

# what the worker reports -> (its module class, Trainer options, its weights file)
RUNS = {
    "ddp": (lightning_ddp.LoggingBoringModel, {}, "ddp.pt"),
    "fsdp": (lightning_ddp.LoggingBoringModel, {}, "fsdp.pt"),
    "fsdp_layer_step": (lightning_ddp.LayerStepModel, {}, "layer.pt"),
    "ddp_accumulate": (lightning_ddp.LoggingBoringModel, {"accumulate_grad_batches": 2},
                       "accumulate.pt"),
}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning_ddp")
    done = launch.run(SCRIPTS / "lightning_ddp.py", out, 2, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    single = {  # one process, batch_size=16: the same global batches
        name: lightning_ddp.fit_once(str(out / f"single_{name}.pt"), module_class, **options)
        for name, (module_class, options, _) in RUNS.items()
        if name != "fsdp"  # the same single-process run as "ddp"
    }
    single["fsdp"] = single["ddp"]
    single["manual"] = lightning_ddp.fit_once(
        str(out / "single_manual.pt"), lightning_ddp.ManualTwoOptimizers
    )
    single["hooks"] = lightning_ddp.hook_calls()
    return out, ranks, single


@pytest.mark.parametrize("name", list(RUNS))
def test_two_ranks_equal_one_process_on_the_same_global_batches(runs, name):
    """Epoch logs (the loss, what training_step and validation_step log, the scheduler's
    lr), final weights, evaluate (test_step's logs) and predict agree with one process;
    both ranks end with the same weights: DDP/FSDP2 synchronised training_step's
    gradients."""
    _, (rank0, rank1), single = runs
    expected = single[name]
    first, second = rank0[name], rank1[name]
    assert first["model_is_module"] and second["model_is_module"]
    assert first["history"] == second["history"]
    assert sorted(first["history"]) == ["loss", "lr", "train_mse", "val_loss"]
    for key, values in expected["history"].items():
        assert first["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key
    assert first["weights"] == second["weights"]
    assert first["weights"] == pytest.approx(expected["weights"], abs=1e-5)
    assert first["weights"] != pytest.approx(
        lightning_ddp.flat_weights(_fresh(RUNS[name][0]).state_dict()), abs=1e-3
    )  # it trained
    assert first["evaluate"] == second["evaluate"]
    assert first["evaluate"] == pytest.approx(expected["evaluate"], rel=1e-5)
    assert first["predict"] == second["predict"]
    torch.testing.assert_close(
        torch.tensor(first["predict"]), torch.tensor(expected["predict"]), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("name", list(RUNS))
def test_saved_weights_load_into_a_fresh_module_without_prefixes(runs, name):
    out, (rank0, _), _ = runs
    module_class, _, filename = RUNS[name]
    saved = torch.load(out / filename)
    fresh = _fresh(module_class)
    assert list(saved) == list(fresh.state_dict()) == ["layer.weight", "layer.bias"]
    fresh.load_state_dict(saved)
    assert lightning_ddp.flat_weights(fresh.state_dict()) == pytest.approx(rank0[name]["weights"])
    x_val, _ = lightning_ddp.data(24, seed=2)
    predicted = Trainer(fresh, device="cpu").predict(x_val[:5], verbose=0)
    torch.testing.assert_close(predicted, torch.tensor(rank0[name]["predict"]), atol=1e-5, rtol=0)


def test_manual_optimization_with_two_optimizers_under_ddp_equals_one_process(runs):
    """manual_backward averages each backward pass's gradients over the ranks: two
    toggled optimizers end with the weights of one process on the same global batches."""
    _, (rank0, rank1), single = runs
    expected, first, second = single["manual"], rank0["manual"], rank1["manual"]
    assert first["weights"] == second["weights"]
    assert first["weights"] == pytest.approx(expected["weights"], abs=1e-5)
    assert sorted(first["history"]) == ["head_mse", "train_mse", "val_loss"]
    for key, values in expected["history"].items():
        assert first["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-6), key


def test_the_same_hooks_in_the_same_order_under_ddp_as_in_one_process(runs):
    """prepare_data runs on rank 0 only (every rank waits for it), as in Lightning."""
    _, (rank0, rank1), single = runs
    assert rank0["hooks"] == single["hooks"]
    assert rank1["hooks"] == [name for name in single["hooks"] if name != "prepare_data"]
    assert {"on_before_backward", "optimizer_step", "on_validation_batch_end"} <= set(
        single["hooks"]
    )


def test_a_lightning_module_the_user_wrapped_in_ddp_gets_an_error_naming_the_fix(runs):
    _, (rank0, rank1), _ = runs
    for rank in (rank0, rank1):
        message = rank["wrapped_by_the_user"]
        assert "LoggingBoringModel defines training_step" in message
        assert "Pass the module itself" in message


def _fresh(module_class: type) -> torch.nn.Module:
    torch.manual_seed(0)
    return module_class()
