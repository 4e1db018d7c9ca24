"""An adaptive refine job on the service against `bolab run --local` of the same spec: wall
seconds from submit to succeeded (one prefork worker, its own Redis and API) and in process,
rounds and runs. Prints figures; asserts nothing.

    PYTHONPATH=. .venv/bin/python bench/adaptive_service.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bo_engine.runner import run_spec
from bo_engine.spec import JobSpec
from tests.helpers import OwnLab, ended
from tests.test_adaptive_service import REFINE_JOB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    repeat = parser.parse_args().repeat
    spec = JobSpec.model_validate(REFINE_JOB)
    local = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = run_spec(spec.model_copy(update={"cache": False}))
        local.append(time.perf_counter() - started)
    runs = sum(len(c["runs"]) for c in result["cells"])
    with tempfile.TemporaryDirectory() as where:
        lab = OwnLab(Path(where))
        worker = lab.new_worker()
        worker.start()
        try:
            service = []
            for _ in range(repeat):
                started = time.perf_counter()
                job_id = lab.client.submit({**REFINE_JOB, "cache": False})["id"]
                assert ended(lab.client, job_id, 300)["status"] == "succeeded"
                service.append(time.perf_counter() - started)
        finally:
            worker.stop()
            lab.stop()
    print(f"refine job: {len(result['rounds'])} rounds, {len(result['cells'])} cells, {runs} runs")
    print(f"local (in process, cache off): best {min(local):.2f} s of {repeat}")
    print(f"service (submit -> succeeded, cache off): best {min(service):.2f} s of {repeat}")


if __name__ == "__main__":
    main()
