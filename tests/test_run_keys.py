"""Run identity (bo_engine.runcache): what changes a run's numbers or document changes its key;
nothing else does."""

from __future__ import annotations

import pytest

import bo_engine
import bo_engine.train as train_mod
from bo_engine.runcache import predicted_device, run_key, run_refs, training_path
from bo_engine.spec import JobSpec

pytestmark = pytest.mark.fast

BASE = {"n": 40, "d": 80, "gamma": 0.05, "seeds": 2, "max_steps": 5000}


def keys_of(spec: dict, device_type: str = "cpu") -> list[str]:
    parsed = JobSpec.model_validate(spec)
    return [r.key for r in run_refs(parsed, range(len(parsed.cells)), device_type)]


def test_defaults_spelled_or_not_give_the_same_keys() -> None:
    spelled = {
        **BASE,
        "width": 64,
        "corruption_rate": 0.1,
        "alpha": 0.1,
        "init_scale": 1 / (64 * 80**0.5),
        "lr": 1 / (64 * 40),
        "stop": "zero_train_error",
        "n_test": 1000,
        "seed": 0,
        "dtype": "float32",
        "max_margin_baseline": True,
        "record_every": None,
        "cache": True,
        "device": "auto",
    }
    assert keys_of(spelled) == keys_of(BASE)


def test_a_cell_reached_through_a_grid_has_the_keys_of_the_same_cell_given_flat() -> None:
    grid = {"grid": {"n": [40], "d_over_n": [2], "gamma_times_n": [2]}, "seeds": 2}
    assert keys_of({**grid, "max_steps": 5000}) == keys_of(BASE)


def test_seeds_overlap_by_key() -> None:
    two, three = keys_of(BASE), keys_of({**BASE, "seeds": 3})
    assert three[:2] == two and three[2] not in two
    assert keys_of({**BASE, "seed": 1, "seeds": 1}) == [two[1]]


@pytest.mark.parametrize(
    "change",
    [
        {"n": 41},
        {"d": 81},
        {"width": 32},
        {"gamma": 0.06},
        {"corruption_rate": 0.2},
        {"num_corrupt": 4},
        {"alpha": 0.2},
        {"init_scale": 0.01},
        {"lr": 0.001},
        {"stop": "zero_loss"},
        {"max_steps": 5001},
        {"n_test": 999},
        {"dtype": "float64"},
        {"record_every": 100},
        {"max_margin_baseline": False},
    ],
)
def test_each_parameter_that_changes_a_run_changes_its_key(change: dict) -> None:
    assert set(keys_of({**BASE, **change})).isdisjoint(keys_of(BASE))


def test_what_does_not_change_a_run_keeps_its_key() -> None:
    theory = {"theory": {"benign_gamma_n": 3.0}}
    assert keys_of({**BASE, "cache": False, "device": "cpu", **theory}) == keys_of(BASE)


def test_the_numerics_version_is_in_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = keys_of(BASE)
    monkeypatch.setattr(bo_engine, "NUMERICS_VERSION", bo_engine.NUMERICS_VERSION + 1)
    assert set(keys_of(BASE)).isdisjoint(before)


def test_the_training_path_is_in_the_key() -> None:
    assert set(keys_of(BASE, "cuda")).isdisjoint(keys_of(BASE, "cpu"))
    plain = {**BASE, "n": 80, "d": 10}  # 4 d < n: the batched program on a CPU too
    assert set(keys_of(plain, "cuda")).isdisjoint(keys_of(plain, "cpu"))


@pytest.mark.parametrize("n,d", [(40, 80), (80, 10), (100, 25)])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_key_names_the_path_train_takes(n: int, d: int, device: str) -> None:
    import torch

    cell = JobSpec.model_validate({"n": n, "d": d}).cells[0]
    in_loop = train_mod._uses_compiled_loop(torch.device(device), cell)
    assert (training_path(cell, device) == "loop") == in_loop


def test_a_key_is_64_hex_digits_and_stable() -> None:
    cell = JobSpec.model_validate(BASE).cells[0]
    identity = dict(dtype="float32", path="loop", record_every=None, max_margin_baseline=True)
    key = run_key(cell, 0, **identity)
    assert key == run_key(cell, 0, **identity) and len(key) == 64 and int(key, 16) >= 0


def test_auto_jobs_are_predicted_on_a_cpu() -> None:
    assert predicted_device(JobSpec.model_validate(BASE)) == "cpu"
    assert predicted_device(JobSpec.model_validate({**BASE, "device": "cuda"})) == "cuda"
