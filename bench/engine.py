"""Engine benchmark: the batched Gram-form engine against the obvious implementation.

The obvious implementation is the profile of the paper's published notebook: one network at a
time, autograd, `torch.optim.SGD`, data generated one sample at a time, and train and test error
evaluated after every step. Both train the same cells, (n, d/n) in (50,1) (50,5) (100,2) (100,10)
(150,1) (150,10) with gamma = 5/n, 2 seeds each, in this one process. Then the full paper heatmap
(`examples/paper_heatmap.json`, 550 runs) is timed through the same path as `bolab run --local`.

Before the clock starts, one tiny run warms the engine up: it compiles the CPU loop
(`bo_engine.loop`, once per machine, then cached on disk) or loads it, and that time is printed.

    python bench/engine.py [--device cpu|cuda] [--skip-heatmap]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from bo_engine.runner import resolve_device, run_spec
from bo_engine.spec import Cell, JobSpec
from bo_engine.train import RunSetup, train_batch

CELLS = [(50, 1), (50, 5), (100, 2), (100, 10), (150, 1), (150, 10)]
SEEDS = 2
HEATMAP = Path(__file__).resolve().parent.parent / "examples" / "paper_heatmap.json"


def bench_cells() -> list[Cell]:
    return [JobSpec(n=n, d=n * r, gamma=5 / n, seeds=SEEDS).cells[0] for n, r in CELLS]


def naive_run(cell: Cell, seed: int, device: torch.device) -> tuple[int, float]:
    """One network, autograd and SGD; errors evaluated every step. Returns (steps, test error)."""
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(cell.d, generator=gen)
    v /= v.norm()

    def sample(corrupt: bool) -> tuple[torch.Tensor, float]:
        t = 1.0 if torch.rand(1, generator=gen).item() < 0.5 else -1.0
        xi = torch.randn(cell.d, generator=gen) / math.sqrt(cell.d)
        xi -= (xi @ v) * v
        x = math.sqrt(cell.gamma) * t * v + math.sqrt(1 - cell.gamma) * xi
        flip = corrupt and torch.rand(1, generator=gen).item() < cell.corruption_rate
        return x, -t if flip else t

    train = [sample(corrupt=True) for _ in range(cell.n)]
    test = [sample(corrupt=False) for _ in range(cell.n_test)]
    x = torch.stack([p for p, _ in train]).to(device)
    y = torch.tensor([label for _, label in train], device=device)
    x_test = torch.stack([p for p, _ in test]).to(device)
    y_test = torch.tensor([label for _, label in test], device=device)

    w = torch.nn.Parameter(torch.randn(cell.width, cell.d, generator=gen).to(device))
    with torch.no_grad():
        w *= cell.init_scale
    a = torch.tensor([1.0 if j % 2 == 0 else -1.0 for j in range(cell.width)], device=device)
    optimizer = torch.optim.SGD([w], lr=cell.lr)

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.leaky_relu(inputs @ w.T, cell.alpha) @ a

    test_error = 1.0
    for step in range(1, cell.max_steps + 1):
        optimizer.zero_grad()
        loss = torch.relu(1 - y * forward(x)).sum()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            train_error = (torch.sign(forward(x)) != y).float().mean().item()
            test_error = (torch.sign(forward(x_test)) != y_test).float().mean().item()
        if train_error == 0:
            return step, test_error
    return cell.max_steps, test_error


def engine_runs(cells: list[Cell], device: torch.device) -> list[dict]:
    """All runs of all cells, batched by shape as the runner does it."""
    groups: dict[tuple, list[RunSetup]] = {}
    for i, cell in enumerate(cells):
        for k in range(cell.seeds):
            groups.setdefault(cell.shape_key(), []).append(RunSetup(i, cell, cell.seed + k))
    runs: list[dict] = []
    for setups in groups.values():
        train_batch(
            setups,
            device=device,
            dtype=torch.float32,
            record_every=None,
            max_margin_baseline=True,
            theory=JobSpec(n=2, d=1).theory,
            on_run_done=lambda setup, run: runs.append({"cell": setup.cell_index, **run}),
        )
    return runs


def timed(fn, *args):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    value = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-heatmap", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cells = bench_cells()
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    _, warm_up_s = timed(engine_runs, [JobSpec(n=4, d=4, width=2, n_test=1).cells[0]], device)
    print(f"warm-up (compile or load the CPU loop): {warm_up_s:.2f} s")

    runs, engine_s = timed(engine_runs, cells, device)
    naive, naive_s = timed(
        lambda: [naive_run(c, c.seed + k, device) for c in cells for k in range(SEEDS)]
    )
    headers = ("cell", "engine steps", "engine test err", "naive steps", "naive test err")
    print(" ".join(f"{h:>16}" for h in headers))
    for i, cell in enumerate(cells):
        mine = [r for r in runs if r["cell"] == i]
        theirs = naive[i * SEEDS : (i + 1) * SEEDS]
        print(
            f"{f'({cell.n},{cell.d // cell.n})':>16} "
            f"{sum(r['steps'] for r in mine) / SEEDS:>16.0f} "
            f"{sum(r['test_error'] for r in mine) / SEEDS:>16.4f} "
            f"{sum(s for s, _ in theirs) / SEEDS:>16.0f} "
            f"{sum(e for _, e in theirs) / SEEDS:>16.4f}"
        )
    print(
        f"engine: {engine_s:.2f} s for {len(runs)} runs (metrics and max-margin baseline included)"
    )
    print(f"naive:  {naive_s:.2f} s for {len(naive)} runs")
    print(f"ratio:  {naive_s / engine_s:.1f}x")

    if not args.skip_heatmap:
        spec = JobSpec.model_validate_json(HEATMAP.read_text())
        spec = JobSpec.model_validate(
            {**spec.model_dump(exclude_unset=True), "device": args.device}
        )
        result, heatmap_s = timed(run_spec, spec)
        d_over_n = {}
        for cell in result["cells"]:
            d_over_n.setdefault(cell["params"]["d_over_n"], []).append(
                cell["summary"]["test_error"]["mean"]
            )
        trend = "  ".join(f"{r:g}:{sum(v) / len(v):.4f}" for r, v in sorted(d_over_n.items()))
        print(f"paper heatmap: {spec.runs_total} runs in {heatmap_s:.1f} s")
        print(f"mean test error by d/n: {trend}")


if __name__ == "__main__":
    main()
