"""Trainer options on the CPU: gradient accumulation, clipping, bf16/fp16 autocast, compile.

Each option is checked against the hand-written loop it replaces: same data order
(``shuffle=False``), same initial weights, the final weights must agree.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F

from torchcallbacks import Callback, TerminateOnNaN, Trainer


def _data(samples: int = 40, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 4, generator=generator)
    return x, 3.0 * x[:, :1] - x[:, 1:2] + 0.5


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


def _hand_loop(x, y, batch_size, epochs, accumulate=1, clip=None):
    """The reference: loss / N, step every N batches and at each epoch end, clip first."""
    model = _model()
    optimizer = _sgd(model)
    clipped = False
    for _ in range(epochs):
        pending = False
        for index, start in enumerate(range(0, len(x), batch_size)):
            if not pending:
                optimizer.zero_grad(set_to_none=True)
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            (F.mse_loss(model(xb), yb) / accumulate).backward()
            pending = True
            if (index + 1) % accumulate == 0:
                clipped |= _clip(model, clip)
                optimizer.step()
                pending = False
        if pending:
            clipped |= _clip(model, clip)
            optimizer.step()
    return model, clipped


def _clip(model: torch.nn.Module, clip: tuple[str, float] | None) -> bool:
    """Apply torch's clip function; True when it changed something."""
    if clip is None:
        return False
    kind, limit = clip
    if kind == "norm":
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit)) > limit
    largest = max(float(p.grad.abs().max()) for p in model.parameters())
    torch.nn.utils.clip_grad_value_(model.parameters(), limit)
    return largest > limit


@pytest.mark.parametrize("accumulate", [1, 3, 4])
def test_accumulate_grad_batches_equals_a_hand_loop_stepping_every_n_batches(accumulate):
    x, y = _data(40)  # 10 batches of 4: with N=3 the 10th batch is stepped at the epoch end
    expected, _ = _hand_loop(x, y, batch_size=4, epochs=2, accumulate=accumulate)
    model = _model()
    trainer = Trainer(
        model, _sgd(model), loss="mse", device="cpu", accumulate_grad_batches=accumulate
    )
    trainer.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    _assert_same_weights(model, expected)
    assert trainer.global_step == 2 * -(-10 // accumulate)  # optimizer steps, not batches


@pytest.mark.parametrize("clip", [("norm", 0.5), ("value", 0.05)])
def test_gradient_clipping_equals_torch_clip_functions(clip):
    x, y = _data(40)
    expected, clipped = _hand_loop(x, y, batch_size=8, epochs=2, clip=clip)
    assert clipped, "the reference never clipped: the test would prove nothing"
    unclipped, _ = _hand_loop(x, y, batch_size=8, epochs=2)
    kind, limit = clip
    option = {"gradient_clip_norm" if kind == "norm" else "gradient_clip_value": limit}
    model = _model()
    trainer = Trainer(model, _sgd(model), loss="mse", device="cpu", **option)
    trainer.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    _assert_same_weights(model, expected)
    assert not torch.allclose(model[0].weight, unclipped[0].weight)


def test_clipping_with_accumulation_clips_the_summed_gradient():
    x, y = _data(40)
    expected, clipped = _hand_loop(x, y, batch_size=4, epochs=1, accumulate=3, clip=("norm", 0.5))
    assert clipped
    model = _model()
    trainer = Trainer(
        model,
        _sgd(model),
        loss="mse",
        device="cpu",
        accumulate_grad_batches=3,
        gradient_clip_norm=0.5,
    )
    trainer.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    _assert_same_weights(model, expected)


def _classification() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(256, 8, generator=generator)
    return x, (x[:, 0] + x[:, 1] - x[:, 2] > 0).long()


def _autocast_supported(dtype: torch.dtype) -> bool:
    try:
        with torch.autocast("cpu", dtype=dtype):
            out = torch.nn.Linear(2, 2)(torch.randn(1, 2))
        torch.amp.GradScaler("cpu")
    except (RuntimeError, TypeError, AttributeError):
        return False
    return out.dtype == dtype


@pytest.mark.parametrize(
    "precision,dtype", [("bf16-mixed", torch.bfloat16), ("16-mixed", torch.float16)]
)
def test_mixed_precision_on_cpu_runs_under_autocast_and_learns(precision, dtype):
    if not _autocast_supported(dtype):
        pytest.skip(f"CPU autocast to {dtype} is not supported by torch {torch.__version__}")
    x, y = _classification()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    seen: list[torch.dtype] = []
    model[2].register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    trainer = Trainer(
        model,
        optimizer,
        loss="cross_entropy",
        metrics=["accuracy"],
        device="cpu",
        precision=precision,
    )
    history = trainer.fit(x, y, batch_size=32, epochs=6, verbose=0)
    assert set(seen) == {dtype}  # every training forward ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights fp32
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    assert history.history["accuracy"][-1] > 0.85
    scaler = trainer.checkpoint_state()["scaler"]
    if precision == "16-mixed":
        assert scaler is not None and float(scaler["scale"]) > 0  # GradScaler state is saved
    else:
        assert scaler is None


def test_compile_trains_or_falls_back_with_a_warning():
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile does not exist in this torch")
    x, y = _data(64)
    model = _model()
    trainer = Trainer(model, _sgd(model), loss="mse", device="cpu", compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit notes inside dynamo
        history = trainer.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    # Compiled or not (after a fallback warning), the user's module's own parameters were
    # trained exactly as an eager loop trains them.
    eager, _ = _hand_loop(x, y, batch_size=16, epochs=3)
    for a, b in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


_NO_COMPILER = textwrap.dedent(
    """
    import warnings, torch
    from torchcallbacks import Trainer
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    trainer = Trainer(model, "sgd", "mse", device="cpu", compile=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = trainer.fit(x, x[:, :1], batch_size=16, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert any("training without it" in str(w.message) for w in caught), caught
    print("fell back")
    """
)


def test_compile_without_a_cpp_compiler_falls_back_to_eager(tmp_path):
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile does not exist in this torch")
    env = dict(
        os.environ,
        PATH=str(tmp_path),
        CXX=str(tmp_path / "no-such-compiler"),
        TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"),
    )
    done = subprocess.run(
        [sys.executable, "-c", _NO_COMPILER], capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0 and "fell back" in done.stdout, done.stderr[-2000:]


def test_fp16_overflow_skips_steps_without_tripping_terminate_on_nan():
    """A GradScaler scale too large for fp16 overflows the gradients: those steps are
    skipped and the scale backs off, while the loss stays finite and training goes on."""
    if not _autocast_supported(torch.float16):
        pytest.skip(f"CPU autocast to float16 is not supported by torch {torch.__version__}")
    x, y = _classification()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    trainer = Trainer(model, "sgd", loss="cross_entropy", device="cpu", precision="16-mixed")
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    skipped = []

    class CountSkipped(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.before = [p.detach().clone() for p in model.parameters()]

        def on_train_batch_end(self, batch, logs=None):
            unchanged = all(torch.equal(a, b) for a, b in zip(self.before, model.parameters()))
            skipped.append(unchanged)

    history = trainer.fit(
        x, y, batch_size=32, epochs=3, verbose=0, callbacks=[TerminateOnNaN(), CountSkipped()]
    )
    assert history.epoch == [0, 1, 2]  # TerminateOnNaN did not stop the run
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert skipped[0] and not skipped[-1]  # the first steps were skipped, later ones applied
    assert trainer.scaler.get_scale() < 2.0**40
