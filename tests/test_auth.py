"""API keys and isolation, against a real uvicorn API with a keys file (and in process).

Users see, list, read, plot and cancel only their own jobs (another's answers 404, exactly like
a missing one); an admin sees all; no valid key: 401; keys never reach a log; `bolab keys add`
takes effect without a restart; without keys the CLI will not bind a non-loopback address.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from bolab.client import LabClient, LabError
from bolab.stack import BOLAB, ApiServer, free_port
from tests.helpers import ENDLESS, TINY, eventually
from tests.inprocess import AppClient

pytestmark = pytest.mark.timeout(120)

JOB_ROUTES = [
    ("GET", "/v1/jobs/{id}"),
    ("GET", "/v1/jobs/{id}/results"),
    ("GET", "/v1/jobs/{id}/results?format=csv"),
    ("GET", "/v1/jobs/{id}/plot.png"),
    ("POST", "/v1/jobs/{id}/cancel"),
]


def as_(server: ApiServer, key: str | None) -> LabClient:
    return LabClient(server.url, api_key=key, timeout=30)


@pytest.fixture(scope="module")
def alice_job(secured_api: ApiServer, api_keys: dict[str, str]) -> str:
    with as_(secured_api, api_keys["alice"]) as alice:
        job_id = alice.submit({**TINY, "grid": {"gamma": [0.05, 0.2]}})["id"]
        assert alice.wait(job_id, timeout=60)["status"] == "succeeded"
    return job_id


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"X-API-Key": "bolab_wrong"}, {"Authorization": "x"}],
    ids=["none", "bad-bearer", "bad-x-api-key", "not-bearer"],
)
@pytest.mark.fast
def test_no_valid_key_is_401(secured_app: AppClient, headers: dict) -> None:
    job_id = "0123456789abcdef0123"  # answered before any job is looked up
    for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs")] + JOB_ROUTES:
        response = secured_app.request(method, path.format(id=job_id), json=TINY, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert "API key" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
    assert secured_app.get("/healthz", headers=headers).status_code == 200  # probes stay open


def test_both_header_forms_work(secured_api: ApiServer, api_keys: dict, alice_job: str) -> None:
    key = api_keys["alice"]
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        response = httpx.get(f"{secured_api.url}/v1/jobs/{alice_job}", headers=headers)
        assert response.status_code == 200
        assert response.json()["owner"] == "alice"


def test_users_see_only_their_own_jobs(
    secured_api: ApiServer, api_keys: dict[str, str], alice_job: str
) -> None:
    with as_(secured_api, api_keys["alice"]) as alice, as_(secured_api, api_keys["bob"]) as bob:
        for method, path in JOB_ROUTES:
            response = bob.http.request(method, path.format(id=alice_job))
            assert response.status_code == 404, (method, path)
            assert response.json()["detail"] == f"no job with id {alice_job!r}"  # as if missing
        for method, path in JOB_ROUTES[:-1]:
            assert alice.http.request(method, path.format(id=alice_job)).status_code == 200
        bob_job = bob.submit(TINY)["id"]
        bobs = [j["id"] for j in bob.list(limit=200)["items"]]
        alices = [j["id"] for j in alice.list(limit=200)["items"]]
        assert bob_job in bobs and alice_job not in bobs
        assert alice_job in alices and bob_job not in alices
        assert {j["owner"] for j in alice.list(status="succeeded", limit=200)["items"]} == {"alice"}


def test_admin_sees_and_cancels_everything(
    secured_api: ApiServer, api_keys: dict[str, str], alice_job: str
) -> None:
    with as_(secured_api, api_keys["bob"]) as bob, as_(secured_api, api_keys["root"]) as root:
        slow = bob.submit(ENDLESS)["id"]
        listed = {j["id"]: j["owner"] for j in root.list(limit=200)["items"]}
        assert listed[alice_job] == "alice" and listed[slow] == "bob"
        assert root.results(alice_job)["cells"]
        assert root.http.get(f"/v1/jobs/{alice_job}/plot.png").status_code == 200
        with pytest.raises(LabError) as caught, as_(secured_api, api_keys["alice"]) as alice:
            alice.cancel(slow)
        assert caught.value.status_code == 404
        assert root.cancel(slow)["status"] == "cancelled"
        assert bob.status(slow)["status"] == "cancelled"


def test_keys_never_reach_the_log(
    secured_api: ApiServer, api_keys: dict[str, str], lab_dir: Path, alice_job: str
) -> None:
    for key in (*api_keys.values(), "bolab_guessed-key"):
        httpx.get(f"{secured_api.url}/v1/jobs/{alice_job}", headers={"X-API-Key": key})
    logs = "".join(p.read_text(errors="replace") for p in (lab_dir / "logs").glob("*.log"))
    stored = (lab_dir / "keys").read_text()
    for key in (*api_keys.values(), "bolab_guessed-key"):
        assert key not in logs
        assert key not in stored  # only hashes are stored


def test_keys_add_prints_once_stores_hash_and_applies_live(
    secured_api: ApiServer, lab_dir: Path
) -> None:
    keys_file = lab_dir / "keys"
    done = subprocess.run(
        [*BOLAB, "keys", "add", "dave", "--file", str(keys_file)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    key = done.stdout.strip()
    assert key.startswith("bolab_") and len(key) > 40
    assert key not in keys_file.read_text() and "dave:user:" in keys_file.read_text()
    with as_(secured_api, key) as dave:  # the API re-reads the changed file: no restart
        assert eventually(lambda: dave.http.get("/v1/jobs").status_code == 200, timeout=5)
        assert dave.list()["items"] == []


@pytest.mark.parametrize("verb", ["api", "up"])
def test_open_api_refuses_non_loopback_bind(verb: str, tmp_path: Path) -> None:
    port = str(free_port())
    argv = [*BOLAB, verb, "--host", "0.0.0.0", "--port", port]
    if verb == "up":
        argv += ["--data-dir", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=_no_keys_env())
    assert done.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in done.stderr.replace("\n", " ")


def test_open_api_on_loopback_warns_loudly(redis_server, tmp_path: Path) -> None:  # noqa: ANN001
    log = tmp_path / "api.log"
    server = ApiServer(redis_server.url, log_path=log, env=_no_keys_env())
    server.start()
    try:
        assert httpx.get(f"{server.url}/v1/jobs").status_code == 200  # open: anonymous
    finally:
        server.stop()
    assert "no API keys configured" in log.read_text().replace("\n", " ")


def _no_keys_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("BOLAB_KEYS_FILE", "BOLAB_API_KEYS")}


def _keyed_server(redis_url: str, keys_file: Path, log: Path) -> ApiServer:
    """An API reading its own keys file (the shared one stays intact for the other tests)."""
    env = {**_no_keys_env(), "BOLAB_KEYS_FILE": str(keys_file)}
    return ApiServer(redis_url, env=env, log_path=log)


def test_emptied_keys_file_locks_the_api_not_opens_it(redis_server, tmp_path: Path) -> None:  # noqa: ANN001
    from service.auth import entry_line, new_key

    keys_file = tmp_path / "keys"
    keys_file.write_text("")  # exists, no entries yet: configured, so nobody gets in
    server = _keyed_server(redis_server.url, keys_file, tmp_path / "api.log")
    server.start()
    try:
        with as_(server, None) as nobody:
            assert nobody.http.get("/v1/jobs").status_code == 401
            key = new_key()
            keys_file.write_text(entry_line("erin", "user", key) + "\n")
            with as_(server, key) as erin:
                assert eventually(lambda: erin.http.get("/v1/jobs").status_code == 200, 5)
                keys_file.write_text("")  # the last key revoked (or an editor truncated it)
                assert eventually(lambda: erin.http.get("/v1/jobs").status_code == 401, 5)
            assert nobody.http.get("/v1/jobs").status_code == 401  # not anonymous admin
    finally:
        server.stop()


def test_malformed_keys_line_is_skipped_not_500(redis_server, tmp_path: Path) -> None:  # noqa: ANN001
    from service.auth import entry_line, new_key

    key = new_key()
    bad = ["not-an-entry", "x:user:" + "zz" * 32, "a:b:c:d"]
    keys_file = tmp_path / "keys"
    keys_file.write_text("\n".join([*bad, entry_line("fay", "user", key)]) + "\n")
    log = tmp_path / "api.log"
    server = _keyed_server(redis_server.url, keys_file, log)
    server.start()
    try:
        with as_(server, key) as fay, as_(server, None) as nobody:
            assert fay.http.get("/v1/jobs").status_code == 200
            assert nobody.http.get("/v1/jobs").status_code == 401
            assert fay.http.get("/v1/jobs").status_code == 200
    finally:
        server.stop()
    text = log.read_text()
    assert "malformed" in text and f"{keys_file}:1" in text
    assert not any(line in text for line in bad)  # the entries themselves stay out of the log
    # `bolab keys list` reads the file the same way: the good entry, no traceback.
    listed = subprocess.run(
        [*BOLAB, "keys", "list", "--file", str(keys_file)], capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "fay\tuser\n"
