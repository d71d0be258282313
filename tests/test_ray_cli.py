"""``vsml-es train`` end to end on Ray (subprocesses, real local Ray instances):
the default Ray run gives the in-process fitness, a run resumed with another worker count
continues it exactly, and Ctrl-C checkpoints and leaves no Ray process behind, with every
listening socket of the run on loopback."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["es.population=8", "task.episode_length=20", "checkpoint.every=1", "logging.eval_every=0",
        "logging.tensorboard=false"]


def _env():
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def vsml_es(*args, timeout=300):
    cmd = [sys.executable, "-m", "vsml_es.cli", *args]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stderr[-3000:]}"
    return res


def train_args(run_dir, generations, *extra):
    args = ["train", "configs/demo.yaml", "--run-dir", str(run_dir)]
    for o in TINY + [f"es.generations={generations}"]:
        args += ["-o", o]
    return args + list(extra)


def metrics(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_ray_run_resumed_with_another_worker_count_matches_in_process(tmp_path):
    ray_run, local_run = tmp_path / "ray", tmp_path / "none"
    vsml_es(*train_args(ray_run, 3, "--workers", "2"))  # default address: local Ray
    vsml_es("train", "--resume", str(ray_run), "-o", "es.generations=6", "--workers", "1")
    vsml_es(*train_args(local_run, 6, "--address", "none"))
    on_ray, in_process = metrics(ray_run), metrics(local_run)
    assert [r["generation"] for r in on_ray] == list(range(6)) == [r["generation"] for r in in_process]
    for a, b in zip(on_ray, in_process):
        for key in ("loss_mean", "loss_best", "loss_std", "accuracy_mean"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["generation"], key)
    assert [r["workers"] for r in on_ray] == [2, 2, 2, 1, 1, 1]
    assert all(r["retries"] == 0 and r["bytes_sent"] > 0 and "wait_slowest_seconds" in r for r in on_ray)
    assert all(r["bytes_sent"] == 0 for r in in_process)


def _alive(procs):
    left = []
    for pid, created in procs:
        try:
            p = psutil.Process(pid)
            if abs(p.create_time() - created) < 1e-3 and p.status() != psutil.STATUS_ZOMBIE:
                left.append((pid, p.name()))
        except psutil.NoSuchProcess:
            pass
    return left


def test_ctrl_c_checkpoints_and_leaves_no_ray_process_and_ray_listens_on_loopback(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "vsml_es.cli", *train_args(run_dir, 100000, "--workers", "1")]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its own process group, like a terminal job
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if (run_dir / "metrics.jsonl").exists() and len(metrics(run_dir)) >= 2:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        tree = psutil.Process(proc.pid).children(recursive=True)
        procs = [(p.pid, p.create_time()) for p in tree]
        names = {p.name() for p in tree}
        assert {"gcs_server", "raylet"} <= names, names
        listening = []
        for p in tree:
            try:
                listening += [c.laddr.ip for c in p.net_connections(kind="inet") if c.status == "LISTEN"]
            except psutil.Error:
                pass
        assert listening and all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1") for ip in listening), listening
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out[-3000:]
    assert "--resume" in out
    deadline = time.time() + 15
    while _alive(procs) and time.time() < deadline:
        time.sleep(0.2)
    assert _alive(procs) == [], f"Ray processes left after Ctrl-C: {_alive(procs)}"
    done = len(metrics(run_dir))
    assert done >= 2 and str(done) in os.listdir(run_dir / "checkpoints")


@pytest.mark.slow
def test_four_workers_match_in_process(tmp_path):
    """Slow: four workers compile side by side on two cores. The 1/2-worker tests above and in
    test_ray_dispatch.py cover the same dispatch logic in the default run."""
    vsml_es(*train_args(tmp_path / "four", 2, "--workers", "4"))
    vsml_es(*train_args(tmp_path / "none", 2, "--address", "none"))
    four, in_process = metrics(tmp_path / "four"), metrics(tmp_path / "none")
    assert [r["workers"] for r in four] == [4, 4]
    for a, b in zip(four, in_process):
        for key in ("loss_mean", "loss_best", "loss_std", "accuracy_mean"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), (a["generation"], key)
