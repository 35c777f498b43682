"""`aeqprop sweep` end to end: the local pool, a Dask LocalCluster, a remote Dask scheduler and
workers started as processes on 127.0.0.1, a worker killed mid-sweep, a sweep stopped and resumed.

Every path must record, for each job, exactly one run bitwise equal to the run trained alone in
this process (the reference)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from aeqprop.store import RunStore
from aeqprop.sweep import load_sweep
from aeqprop.sweep_store import open_store, run_digest
from tests.conftest import PATIENCE

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

#: 4 runs of about 0.5 s: long enough to kill a worker or stop the sweep while runs are in flight.
SWEEP = """
name = "test"
seeds = [0, 1]
runs = "{runs}"
[config]
dataset.name = "digits"
substrate = {{ backend = "hopfield", options = {{ hidden = [32], eps = 0.1, tol = 1e-3 }} }}
protocol = {{ name = "eqprop", options = {{ lr = 0.1 }} }}
schedule = {{ epochs = {epochs}, batch_size = 16 }}
[grid]
"protocol.options.beta" = [0.2, 0.5]
"""


def sweep_file(tmp_path, epochs=5) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP.format(runs=tmp_path / "runs", epochs=epochs))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Digest of each job's run, trained alone in this process, keyed by (point, seed)."""
    from threadpoolctl import threadpool_limits

    from aeqprop import session
    from aeqprop.config import validate

    tmp = tmp_path_factory.mktemp("reference")
    out = {}
    with threadpool_limits(limits=1):
        for job in load_sweep(sweep_file(tmp)).jobs:
            outcome = session.start(validate({**job.config, "runs": str(tmp / "alone")}))
            out[(job.point, job.seed)] = run_digest(RunStore(tmp / "alone"), outcome.run_id)
    return out


def cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=kwargs.pop("timeout", 120),
        **kwargs,
    )


def inproc(*args):
    """The command in this process (fast, for commands that only read the store)."""
    from typer.testing import CliRunner

    import cli

    result = CliRunner().invoke(cli.app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def popen(*args, scratch: Path | None = None):
    """The command in a subprocess; ``scratch``: the workers' temporary folder (a killed worker leaves its
    scratch store there)."""
    env = ENV if scratch is None else {**ENV, "TMPDIR": str(scratch)}
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def recorded(runs: Path, sweep_id: int = 1) -> list[dict]:
    """The runs of a sweep, one row per run (not per job), with their job's point and seed."""
    store = open_store(str(runs), create=False)
    try:
        rows = store._query(
            "SELECT r.id, r.status, j.point, j.seed FROM runs r JOIN sweep_jobs j ON j.id = r.sweep_job "
            "WHERE j.sweep_id = ? ORDER BY r.id",
            (sweep_id,),
        )
        for row in rows:
            row["digest"] = run_digest(store, row["id"])
        return rows
    finally:
        store.close()


def assert_each_job_once_and_equal_to_reference(runs: Path, reference: dict, sweep_id: int = 1) -> None:
    rows = recorded(runs, sweep_id)
    assert sorted((r["point"], r["seed"]) for r in rows) == sorted(reference)  # exactly once each
    assert all(r["status"] == "completed" for r in rows), rows
    for r in rows:
        assert r["digest"] == reference[(r["point"], r["seed"])], f"run {r['id']} differs from the run alone"


def wait_for_runs(runs: Path, count: int, proc, timeout=PATIENCE) -> None:
    """Block until ``count`` runs are recorded (the process that writes them still running)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        if (runs / "aeqprop.db").exists():
            store = RunStore(runs, create=False)
            try:
                n = store._query("SELECT COUNT(*) AS n FROM runs")[0]["n"]
            finally:
                store.close()
            if n >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} runs recorded after {timeout} s")


def test_local_pool_runs_a_sweep_and_show_plot_export_read_it(tmp_path, reference):
    out = cli("sweep", "run", sweep_file(tmp_path), "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert "sweep 1: 4 runs in" in out.stdout and "sweep 1: 4 completed in" in out.stdout
    assert_each_job_once_and_equal_to_reference(tmp_path / "runs", reference)
    show = inproc("sweep", "show", "1", "--runs", tmp_path / "runs", "--markdown")
    lines = [l for l in show.output.splitlines() if l.startswith("| ")]
    assert len(lines) == 1 + 2 and lines[1].startswith("| * |") and " 2/2 " in lines[1]  # best first, marked
    csv = inproc("sweep", "export", "1", "--runs", tmp_path / "runs")
    rows = Path(csv.output.strip()).read_text().splitlines()
    assert rows[0].startswith("sweep,point,label,seed,protocol.options.beta,run_id,status") and len(rows) == 5
    png = inproc("sweep", "plot", "1", "--runs", tmp_path / "runs")
    assert png.exit_code == 0 and Path(png.output.strip()).stat().st_size > 10_000
    again = inproc("sweep", "resume", "1", "--runs", tmp_path / "runs")
    assert again.exit_code == 0 and "nothing to resume" in again.output


def test_bad_sweep_input_fails_with_one_line_and_records_nothing(tmp_path):
    path = sweep_file(tmp_path)
    path.write_text(path.read_text().replace('name = "eqprop"', 'name = "backprop"'))
    out = cli("sweep", "run", path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "unknown protocol 'backprop'" in out.stderr
    assert not (tmp_path / "runs").exists()
    out = cli("sweep", "run", sweep_file(tmp_path), "--scheduler", "localhost:1")
    assert out.returncode == 2 and "give the scheduler's address as tcp://HOST:PORT" in out.stderr
    out = inproc("sweep", "show", "3", "--runs", tmp_path / "nowhere")
    assert out.exit_code == 2 and "no run store" in out.output


@pytest.mark.slow
def test_a_dask_local_cluster_gives_the_same_runs_bitwise(tmp_path, reference):
    out = cli("sweep", "run", sweep_file(tmp_path), "--cluster", "local", "--workers", "2", "-q")
    assert out.returncode == 0, out.stderr
    assert "dask scheduler tcp://127.0.0.1:" in out.stdout and ", 2 workers, dashboard http://127.0.0.1:" in out.stdout
    assert_each_job_once_and_equal_to_reference(tmp_path / "runs", reference)


@pytest.mark.slow
def test_a_local_pool_worker_killed_mid_sweep_has_its_run_recorded_once(tmp_path, reference):
    proc = popen("sweep", "run", sweep_file(tmp_path), "--workers", "2", "-q", scratch=tmp_path)
    try:
        wait_for_runs(tmp_path / "runs", 1, proc)
        workers = [
            c
            for c in psutil.Process(proc.pid).children(recursive=True)
            if "resource_tracker" not in " ".join(c.cmdline())
        ]
        assert workers, "no pool worker found"
        workers[0].kill()
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "resubmitted after a lost worker" in out
    assert_each_job_once_and_equal_to_reference(tmp_path / "runs", reference)


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def hold_a_worker_mid_job(proc, scratch: Path, timeout: float = PATIENCE) -> psutil.Process:
    """Suspend (SIGSTOP) a pool worker of ``proc`` while it trains a job, and return it.

    A worker trains a job in a scratch store under ``scratch`` (``aeqprop-job-*``), open from the run's
    start until its result is about to go back; a worker suspended with that store open cannot return its
    job, so the sweep cannot end before it is stopped, however slow the machine. A worker caught between
    jobs is resumed and the search goes on. Only /proc is read (nothing opened in the scratch folder).
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        for worker in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "resource_tracker" in " ".join(worker.cmdline()):
                    continue
                worker.suspend()
                files = [f.path for f in worker.open_files()]
                if any("aeqprop-job-" in f and f.endswith("aeqprop.db") for f in files):
                    return worker
                worker.resume()
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.01)
    raise AssertionError(f"no pool worker was seen training a job within {timeout} s")


@pytest.mark.slow
def test_a_sweep_stopped_by_ctrl_c_keeps_its_finished_runs_and_resumes(tmp_path, reference):
    proc = popen("sweep", "run", sweep_file(tmp_path), "--workers", "2", "-q", scratch=tmp_path)
    held, children, ended = None, [], False
    try:
        # one job held in flight: the other worker finishes runs, and the sweep is stopped before the last
        held = hold_a_worker_mid_job(proc, tmp_path)
        wait_for_runs(tmp_path / "runs", 1, proc, timeout=PATIENCE)
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=PATIENCE)
        ended = True
    finally:
        if ended:
            psutil.wait_procs(children, timeout=PATIENCE)
        left = [w for w in dict.fromkeys([held, *children]) if w is not None and alive(w)]
        # the sweep ends its workers; if it did not, the test does, the suspended one first (orphaned
        # workers hold the sweep's output pipes open, and a read of them would never end)
        for worker in left:
            worker.kill()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 1, err
    assert "sweep 1 interrupted" in out and "aeqprop sweep resume 1" in out
    assert not left, left  # no worker left behind
    done = recorded(tmp_path / "runs")
    assert 1 <= len(done) < 4 and all(r["status"] == "completed" for r in done)
    resumed = cli("sweep", "resume", "1", "--runs", tmp_path / "runs", "--workers", "2", "-q", timeout=PATIENCE)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{4 - len(done)} runs to go" in resumed.stdout
    assert_each_job_once_and_equal_to_reference(tmp_path / "runs", reference)


def training_workers(proc, timeout: float = PATIENCE) -> list[psutil.Process]:
    """The pool workers of ``proc``, once one of them trains a job (its scratch store open)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        workers = []
        for worker in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "resource_tracker" not in " ".join(worker.cmdline()):
                    workers.append(worker)
                    if any("aeqprop-job-" in f.path for f in worker.open_files()):
                        return workers
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.05)
    raise AssertionError(f"no pool worker was seen training a job within {timeout} s")


def test_a_sweep_killed_outright_leaves_no_worker_and_no_scratch_folder(tmp_path):
    """SIGKILL cannot be caught by the sweep: its pool workers see themselves orphaned, stop the run in
    flight at its next step (its scratch folder removed), and end (sweep_exec._start_worker); then
    multiprocessing's resource tracker, which they held open, ends too."""
    proc = popen("sweep", "run", sweep_file(tmp_path, epochs=2000), "--workers", "2", "-q", scratch=tmp_path)
    family: list[psutil.Process] = []
    try:
        workers = training_workers(proc)
        family = psutil.Process(proc.pid).children(recursive=True)
        proc.kill()
        proc.wait(timeout=PATIENCE)
        gone, left = psutil.wait_procs(family, timeout=30)
    finally:
        for child in family:  # before reading the pipes: a process left behind holds them open
            if alive(child):
                child.kill()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=PATIENCE)
    assert not left, left  # ended by themselves: the watcher's half second, then a step of the run
    assert workers and all(w in gone for w in workers)
    assert not list(tmp_path.glob("aeqprop-job-*"))  # the run in flight cleaned up after itself


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    """A `dask scheduler` and two `dask worker` processes (no nanny) on 127.0.0.1; stopped after the test."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")
    common = dict(cwd=tmp_path, env={**ENV, "TMPDIR": str(tmp_path)}, stdout=logs, stderr=logs)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            **common,
        )
    ]
    try:
        for _ in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--no-dashboard",
                    ],
                    **common,
                )
            )
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=PATIENCE)
        yield address, procs[1:]
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        logs.close()


@pytest.mark.slow
def test_a_remote_dask_scheduler_runs_the_sweep_and_survives_a_killed_worker(tmp_path, reference, dask_cluster):
    address, workers = dask_cluster
    proc = popen("sweep", "run", sweep_file(tmp_path), "--scheduler", address, "-q", scratch=tmp_path)
    try:
        wait_for_runs(tmp_path / "runs", 1, proc)
        workers[0].kill()  # SIGKILL mid-sweep: its run in flight is lost
        out, err = proc.communicate(timeout=PATIENCE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"dask scheduler {address}, 2 workers" in out and "sweep 1: 4 completed" in out
    assert_each_job_once_and_equal_to_reference(tmp_path / "runs", reference)
