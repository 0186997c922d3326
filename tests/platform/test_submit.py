"""`anomalyr1 submit`: what is submitted, what is refused before the cluster is contacted, and
one real job on a Ray head started for the test (its own processes, killed afterwards by their
temp dir, so the session's Ray and anyone else's are left alone)."""

import http.server
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

from anomalyr1.platform import cli
from anomalyr1.platform.metrics import read_metrics
from anomalyr1.platform.recipe import load_recipe
from anomalyr1.platform.submit import SubmitError, job_spec
from ray_processes import kill_processes_under

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "recipes" / "tiny_cpu.yaml"


@pytest.fixture
def local(tiny_model, synthetic_root, cache_dir, tmp_path):
    """Overrides that keep a run on the session's model and data and under tmp_path."""
    return [f"model.path={tiny_model}", f"data.root={synthetic_root}", f"model.cache_dir={cache_dir}",
            f"trainer.output_dir={tmp_path / 'run'}", "trainer.progress_bar=false"]


def test_the_job_trains_the_recipe_inside_the_uploaded_repository(local, tmp_path):
    overrides = local + ["trainer.steps=2", "data.datasets=['Synth MVTec']"]
    spec = job_spec(str(TINY), overrides, load_recipe(str(TINY), overrides), cwd=tmp_path)  # found from the recipe, not cwd
    assert spec.runtime_env["working_dir"] == str(REPO)
    assert "pip" not in spec.runtime_env and "env_vars" not in spec.runtime_env
    sets = [part for override in overrides for part in ("--set", override)]
    assert shlex.split(spec.entrypoint) == ["python", "-m", "anomalyr1.platform.cli", "train", "recipes/tiny_cpu.yaml", *sets]


def test_runtime_pip_and_env_vars_come_from_the_recipe(local):
    overrides = local + ["trainer.runtime_pip=[vllm==0.11.0, flash-attn]", "trainer.runtime_env_vars={HF_HOME: /data/hf, NCCL_DEBUG: INFO}"]
    spec = job_spec(str(TINY), overrides, load_recipe(str(TINY), overrides), cwd=REPO)
    assert spec.runtime_env["pip"] == ["vllm==0.11.0", "flash-attn"]
    assert spec.runtime_env["env_vars"] == {"HF_HOME": "/data/hf", "NCCL_DEBUG": "INFO"}


def test_env_vars_the_platform_sets_for_every_actor_are_refused(local):
    overrides = local + ["trainer.runtime_env_vars={OMP_NUM_THREADS: '8'}"]
    with pytest.raises(SubmitError, match="trainer.runtime_env_vars: OMP_NUM_THREADS is set by the platform"):
        job_spec(str(TINY), overrides, load_recipe(str(TINY), overrides), cwd=REPO)


def test_a_recipe_outside_the_repository_is_refused(local, tmp_path):
    outside = tmp_path / "mine.yaml"
    shutil.copy(TINY, outside)
    recipe = load_recipe(str(outside), local)
    with pytest.raises(SubmitError, match=f"mine.yaml is outside {REPO}, the folder uploaded"):
        job_spec(str(outside), local, recipe, cwd=REPO)
    if not any((folder / "pyproject.toml").is_file() for folder in tmp_path.parents):
        with pytest.raises(SubmitError, match="no pyproject.toml above"):
            job_spec(str(outside), local, recipe, cwd=tmp_path)


def _uploaded(root: Path, package: Path, excludes: list[str]) -> set[str]:
    from ray._private.runtime_env.packaging import create_package

    create_package(str(root), package, include_gitignore=True, excludes=excludes)
    return {name for name in zipfile.ZipFile(package).namelist() if not name.endswith("/")}


def _files(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x")


def test_the_upload_leaves_out_environments_data_outputs_and_caches(local, tmp_path):
    root = tmp_path / "repo"
    kept = ["pyproject.toml", "recipes/r.yaml", "platform/cli.py", "tests/runs/case.json", "tests/data/case.json",
            "builds/notes.txt"]  # only top-level runs/, data/, build/
    dropped = [".venv/lib/site.py", ".git/HEAD", "runs/x/metrics.jsonl", "platform/__pycache__/cli.pyc",
               "anomalyr1.egg-info/PKG-INFO", "data/MMAD/mmad.json", "data/MMAD/VisA/candle/good/000.png",
               "out/run/final/model.safetensors", "cache/tiny/config.json", "sets/mine/mmad.json", "models/m/config.json",
               ".pytest_cache/v", ".hypothesis/db", "build/lib/x.py", "dist/x.whl"]
    _files(root, kept + dropped)
    shutil.copy(TINY, root / "recipes" / "r.yaml")
    # absolute paths that happen to lie inside the root: read and written there, never from the upload
    overrides = local + [f"trainer.output_dir={root}/out/run", f"model.cache_dir={root}/cache", "data.source=mmad",
                         f"data.root={root}/sets/mine", f"model.path={root}/models/m"]
    recipe = load_recipe(str(root / "recipes" / "r.yaml"), overrides, check_files=False)
    spec = job_spec(str(root / "recipes" / "r.yaml"), overrides, recipe, cwd=REPO)
    assert _uploaded(root, tmp_path / "package.zip", spec.runtime_env["excludes"]) == set(kept)


def test_the_repository_gitignore_keeps_data_out_of_a_plain_ray_job_submit(tmp_path):
    """`ray job submit --working-dir .` has no excludes of ours, but Ray honours .gitignore."""
    root = tmp_path / "repo"
    _files(root, ["pyproject.toml", "tests/data/case.json", "data/MMAD/mmad.json"])
    shutil.copy(REPO / ".gitignore", root / ".gitignore")
    assert _uploaded(root, tmp_path / "package.zip", []) == {"pyproject.toml", "tests/data/case.json", ".gitignore"}


def test_relative_paths_are_refused_before_the_cluster_is_contacted(local, capsys):
    overrides = local + ["trainer.output_dir=runs/mine", "data.source=mmad", "data.root=data/MMAD"]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        address = f"http://127.0.0.1:{server.getsockname()[1]}"
        assert cli.main(["submit", str(TINY), "--address", address, *[f"--set={o}" for o in overrides]]) == 2
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody knocked
    err = capsys.readouterr().err.strip()
    assert err == (f"error: data.root = 'data/MMAD', trainer.output_dir = 'runs/mine' are relative: the job resolves relative paths "
                   f"in Ray's temporary copy of {REPO}, a different one on each node, deleted after the job; use an absolute path "
                   "on storage every node shares (e.g. /shared/...)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_bad_recipe_fails_before_the_cluster_is_contacted(capsys):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        address = f"http://127.0.0.1:{server.getsockname()[1]}"
        assert cli.main(["submit", str(TINY), "--set", "rollout.n=1", "--address", address]) == 2
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody knocked
    err = capsys.readouterr().err.strip()
    assert err == f"error: {TINY}: rollout.n = 1: Input should be greater than or equal to 2"


def test_an_unreachable_cluster_is_one_line(local, capsys):
    address = f"http://127.0.0.1:{_free_port()}"
    assert cli.main(["submit", str(TINY), "--address", address, *[f"--set={o}" for o in local]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: could not reach Ray's job server at {address}: "), err


def test_a_cluster_that_wants_a_token_says_how_to_give_it(local, capsys):
    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()
            self.wfile.write(b"Unauthorized: Missing authentication token")

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unauthorized) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        address = f"http://127.0.0.1:{server.server_address[1]}"
        assert cli.main(["submit", str(TINY), "--address", address, *[f"--set={o}" for o in local]]) == 2
        server.shutdown()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wants a token" in err[0] and "RAY_AUTH_MODE=token" in err[0], err


def test_submit_runs_the_tiny_recipe_as_a_job_on_a_ray_head(local, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    bin_dir = Path(sys.executable).parent
    gcs, dashboard, client, agent = (_free_port() for _ in range(4))
    temp_dir = tempfile.mkdtemp(prefix="ar1-head-")  # short: Ray's socket paths live under it
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        head = subprocess.run(
            [str(bin_dir / "ray"), "start", "--head", f"--port={gcs}", f"--dashboard-port={dashboard}",
             f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}", "--num-cpus=2",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}",
             "--object-store-memory=300000000", "--disable-usage-stats"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert head.returncode == 0, head.stdout[-2000:] + head.stderr[-2000:]
        # Ray marks a job's entrypoint as job_paths expects: the embedded recipe's relative output_dir is refused
        jobs = JobSubmissionClient(address)
        refused = jobs.submit_job(entrypoint="python -m anomalyr1.platform.cli validate")
        deadline = time.monotonic() + 120
        while not (refused_status := jobs.get_job_status(refused)).is_terminal() and time.monotonic() < deadline:
            time.sleep(1.0)
        refused_logs = jobs.get_job_logs(refused)
        small = ["trainer.steps=2", "trainer.prompts_per_step=2", "rollout.workers=1", "reward.actors=1", "learner.workers=1"]
        done = subprocess.run(
            [str(bin_dir / "anomalyr1"), "submit", str(TINY), "--address", address, *[f"--set={o}" for o in local + small]],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
        )
        job = re.search(r"^job: (raysubmit_\w+)$", done.stdout, re.MULTILINE)
        status = JobSubmissionClient(address).get_job_status(job.group(1)) if job else None
    finally:
        kill_processes_under(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert refused_status == JobStatus.FAILED, refused_logs[-3000:]
    assert f"error: tiny_cpu.yaml: trainer.output_dir = 'runs/tiny_cpu' is relative, and this runs as Ray job {refused}," in refused_logs
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert job, done.stdout[-3000:]
    assert status == JobStatus.SUCCEEDED
    assert "final model:" in done.stdout, "the job's own output was not followed"
    assert done.stdout.rstrip().endswith(f"job {job.group(1)} SUCCEEDED")
    run = tmp_path / "run"
    assert [m["step"] for m in read_metrics(run / "metrics.jsonl")] == [1, 2]
    assert (run / "final" / "model.safetensors").is_file() and (run / "final" / "config.json").is_file()
