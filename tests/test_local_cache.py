"""`bolab run --local --cache DIR`: the lab's cache logic on a directory, one file per run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bolab.cli import app
from bolab.local_cache import DirCache
from tests.helpers import TINY

pytestmark = [pytest.mark.fast, pytest.mark.timeout(120)]


def run_local(spec: dict, where: Path, *extra: str) -> tuple[dict, str]:
    spec_file, out = where / "spec.json", where / "out.json"
    spec_file.write_text(json.dumps(spec))
    result = CliRunner().invoke(app, ["run", "--local", str(spec_file), "--out", str(out), *extra])
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text()), result.stderr


def runs(result: dict) -> list[dict]:
    return [run for cell in result["cells"] for run in cell["runs"]]


def plain(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in ("cached", "source_job")}


def test_a_rerun_trains_nothing_and_gives_the_same_runs(tmp_path: Path) -> None:
    spec = {**TINY, "grid": {"n": [20, 24]}}
    cache = tmp_path / "cache"
    first, _ = run_local(spec, tmp_path, "--cache", str(cache))
    assert len(list(cache.glob("*.json"))) == 4  # one file per run
    again, said = run_local(spec, tmp_path, "--cache", str(cache))
    assert "4 from the cache" in said
    assert [r["cached"] for r in runs(first)] == [False] * 4
    assert [r["cached"] for r in runs(again)] == [True] * 4
    assert [plain(r) for r in runs(again)] == [plain(r) for r in runs(first)]
    assert [c["summary"] for c in again["cells"]] == [c["summary"] for c in first["cells"]]
    assert all(r["source_job"] is None for r in runs(again))


def test_more_seeds_train_only_the_new_ones(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run_local({**TINY, "seeds": 2}, tmp_path, "--cache", str(cache))
    more, said = run_local({**TINY, "seeds": 3}, tmp_path, "--cache", str(cache))
    assert [r["cached"] for r in runs(more)] == [True, True, False]
    assert len(list(cache.glob("*.json"))) == 3


def test_cache_false_retrains_and_other_dtypes_miss(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run_local(TINY, tmp_path, "--cache", str(cache))
    retrained, _ = run_local({**TINY, "cache": False}, tmp_path, "--cache", str(cache))
    other, _ = run_local({**TINY, "dtype": "float64"}, tmp_path, "--cache", str(cache))
    assert not any(r["cached"] for r in runs(retrained) + runs(other))


def test_a_damaged_file_is_a_miss_and_is_written_anew(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run_local(TINY, tmp_path, "--cache", str(cache))
    damaged = sorted(cache.glob("*.json"))[0]
    damaged.write_text('{"seed": ')  # a torn write another tool left
    again, _ = run_local(TINY, tmp_path, "--cache", str(cache))
    assert sorted(r["cached"] for r in runs(again)) == [False, True]
    assert json.loads(damaged.read_text())["seed"] in (0, 1)
    assert not list(cache.glob(".*.tmp"))  # no temporary file left behind


def test_writes_are_atomic_renames(tmp_path: Path) -> None:
    cache = DirCache(tmp_path / "c")
    cache.put("k", {"seed": 0})
    assert cache.get_many(["k", "missing"]) == {"k": {"seed": 0}}
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["k.json"]


def test_cache_needs_local(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(TINY))
    result = CliRunner().invoke(app, ["run", str(spec_file), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 2 and "--cache" in result.stderr
