"""03_predict with real daisy worker processes: equality with predict_scan, kills, faults.

Faults are injected through the worker's documented test hook, the environment
variable ``CELLBLOCK_PREDICT_FAULT`` (``cellblock.blockwise.worker``): ``sleep=S``
slows every block so a process can be killed mid-run, ``well=EXP/PlateN/WELL``
raises on the block holding that well, ``start`` crashes the worker at start.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import daisy.v2 as daisy
import numpy as np
import pandas as pd
import pytest
import zarr

from cellblock.blockwise.cli import blockwise_main, scan_main
from cellblock.blockwise.geometry import BlockGrid, block_shape
from cellblock.blockwise.launcher import (
    ContainerWrapper,
    LocalLauncher,
    WorkerExitError,
    WorkerSpec,
    launcher_class,
)
from cellblock.blockwise.report import RunSummary
from cellblock.blockwise.task import TaskResult, done_count
from cellblock.blockwise.worker import FAULT_ENV, Fault
from cellblock.errors import UserError
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import PackedDataset
from tests.conftest import ROOT, run_script
from tests.test_inference import train_tiny_run

BLOCKWISE = ROOT / "03_predict" / "predict_blockwise.py"
SCAN = ROOT / "03_predict" / "predict_scan.py"
EXPERIMENTS = "HEPG2-02,HUVEC-02/Plate1,HUVEC-02/Plate2"  # 6 test plates, 42 wells
SUMMARY = re.compile(r"blocks: (\d+) with wells; (\d+) completed now, (\d+) skipped "
                     r"\(done before\), (\d+) failed, (\d+) not run")  # fmt: skip


@pytest.fixture(scope="module")
def trained(tiny_packed, tmp_path_factory) -> Path:
    return train_tiny_run(tiny_packed, tmp_path_factory.getbasetemp())


def _common(run: Path, data: Path, out: Path) -> list[str]:
    return ["--run", str(run), "--data", str(data), "--out", str(out), "--split", "test",
            "--experiments", EXPERIMENTS, "--tta", "flips", "--batch-size", "8"]  # fmt: skip


def _blockwise_args(run: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [str(BLOCKWISE), *_common(run, data, out), "--block-wells", "4", "--workers", "2",
            *extra]  # fmt: skip


def _env(fault: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    if fault:
        env[FAULT_ENV] = fault
    return env


def _start(args: list[str], log: Path, fault: str | None = None) -> subprocess.Popen:
    """The driver as its own process; output to ``log`` (no pipe to fill up)."""
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, *args], stdout=f, stderr=subprocess.STDOUT,
                                env=_env(fault), start_new_session=True)  # fmt: skip


def _run(args: list[str], fault: str | None = None, timeout: float = 300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          env=_env(fault), timeout=timeout)  # fmt: skip


def _counts(stdout: str) -> tuple[int, ...]:
    """(blocks, completed, skipped, failed, not run) of a summary."""
    match = SUMMARY.search(stdout)
    assert match, stdout
    return tuple(int(g) for g in match.groups())


def _load(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    root = zarr.open_group(out / "predictions.zarr", mode="r")
    return {f"{e}/{p}": (root[e][p]["logits"][:], root[e][p]["embeddings"][:])
            for e in root.group_keys() for p in root[e].group_keys()}  # fmt: skip


def _assert_identical(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key in want:
        for a, b in zip(got[key], want[key], strict=True):
            assert np.array_equal(a, b, equal_nan=True), key


def _assert_close(got: dict, want: dict) -> None:
    """Equal up to float rounding: other batch compositions, float16 embeddings."""
    assert got.keys() == want.keys()
    for key in want:
        (lg, em), (lw, ew) = got[key], want[key]
        assert np.array_equal(np.isnan(lg), np.isnan(lw)), key
        np.testing.assert_allclose(lg, lw, rtol=1e-5, atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(em.astype(np.float32), ew.astype(np.float32), rtol=2e-3,
                                   atol=2e-3, equal_nan=True)  # fmt: skip


def _lines(out: Path) -> int:
    path = out / "blockwise" / "blocks.jsonl"
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _marked(out: Path) -> int:
    """Blocks the driver has marked done so far (0 while a marker chunk is half-written)."""
    try:
        return sum(done_count(p) for p in (out / "blockwise" / "tracking").glob("*"))
    except Exception:  # read while daisy writes the chunk
        return 0


def _worker_pids(out: Path) -> list[int]:
    """Live processes running a worker of ``out``'s plan."""
    plan = str(out / "blockwise" / "plan.json").encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if plan in argv and b"--plan" in argv and state != "Z":
            pids.append(int(proc.name))
    return pids


def _assert_workers_served(out: Path, completed: int) -> str:
    """Every worker reached the loopback server; their finished blocks sum to ``completed``.

    How the blocks split between workers is a race (a slow starter may get none), so
    only the sum is asserted. Returns the workers' logs, joined.
    """
    texts = [p.read_text() for p in sorted((out / "logs").glob("worker_*.log"))]
    assert texts and all("daisy server 127.0.0.1:" in t for t in texts)
    finished = [int(m) for t in texts for m in re.findall(r"no blocks left; finished (\d+)", t)]
    assert len(finished) == len(texts) and sum(finished) == completed, finished
    joined = "\n".join(texts)
    assert "sites in" in joined
    return joined


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _loopback_listeners() -> dict[int, str]:
    """Listening TCP ports of this machine -> local address (hex, as /proc shows it)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].rsplit(":", 1)
                out[int(port, 16)] = address
    return out


@pytest.fixture(scope="module")
def scan_out(trained, tiny_packed, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scan") / "pred"
    r = run_script(SCAN, *_common(trained, tiny_packed, out))
    assert r.returncode == 0, r.stderr
    assert "sites: 84 in" in r.stdout
    return out


@pytest.fixture(scope="module")
def clean_out(trained, tiny_packed, tmp_path_factory) -> tuple[Path, str]:
    """An uninterrupted blockwise run with 2 workers: the reference of the fault tests."""
    out = tmp_path_factory.mktemp("clean") / "pred"
    r = _run(_blockwise_args(trained, tiny_packed, out))
    assert r.returncode == 0, r.stdout + r.stderr
    # off a terminal: a timestamped progress line of the blocks (cellblock.progress)
    assert re.search(
        r"^\d{4}-\d\d-\d\d [\d:]{8} predict: (\d+)/\1 block .*done in", r.stderr, re.M
    ), r.stderr
    return out, r.stdout


@pytest.mark.slow
def test_blockwise_equals_scan_and_reruns_skip(clean_out, scan_out, trained, tiny_packed):
    out, stdout = clean_out
    blocks, completed, skipped, failed, not_run = _counts(stdout)
    assert blocks > 12 and completed == blocks and skipped == failed == not_run == 0
    assert "sites: 84 in" in stdout and "img/s" in stdout and "first block after" in stdout
    _assert_close(_load(out), _load(scan_out))
    info = zarr.open_group(out / "predictions.zarr").attrs["cellblock_predictions"]
    assert info["setup"] == "synthetic/tiny" and info["iteration"] == 20 and info["tta"] == "flips"
    logs = sorted(p.name for p in (out / "logs").glob("worker_*.log"))
    assert logs == ["worker_0.log", "worker_1.log"]
    text = _assert_workers_served(out, completed)
    assert "02_train/synthetic/tiny" in text  # the run's setup folder rides along (--setup)
    assert not (Path.cwd() / "daisy_logs").exists()  # daisy's logs go under PRED/logs
    assert (out / "logs" / "daisy").is_dir()
    # a rerun skips every block and changes nothing
    before = _load(out)
    r = _run(_blockwise_args(trained, tiny_packed, out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _counts(r.stdout) == (blocks, 0, blocks, 0, 0)
    _assert_identical(_load(out), before)


@pytest.mark.slow
def test_killed_worker_run_completes_identically(clean_out, trained, tiny_packed, tmp_path):
    out = tmp_path / "pred"
    proc = _start(_blockwise_args(trained, tiny_packed, out), tmp_path / "driver.log", "sleep=0.3")
    try:
        _wait_for(lambda: _lines(out) >= 2 and len(_worker_pids(out)) == 2, 120, "two workers")
        # the daisy server listens on loopback only
        # (any worker's log: the one that wrote a block line has connected)
        logs = "".join(p.read_text() for p in (out / "logs").glob("worker_*.log"))
        port = int(re.search(r"daisy server 127\.0\.0\.1:(\d+)", logs).group(1))
        assert _loopback_listeners()[port] in ("0100007F", "0000000000000000FFFF00000100007F")
        victim = _worker_pids(out)[0]
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    stdout = (tmp_path / "driver.log").read_text()
    blocks, completed, *_ = _counts(stdout)
    assert completed == blocks and "1 restart(s)" in stdout
    _assert_identical(_load(out), _load(clean_out[0]))


@pytest.mark.slow
def test_killed_driver_rerun_skips_done_blocks(clean_out, trained, tiny_packed, tmp_path):
    out = tmp_path / "pred"
    proc = _start(_blockwise_args(trained, tiny_packed, out), tmp_path / "driver.log", "sleep=0.3")
    try:
        # the driver's done markers, not the workers' lines: a worker writes its line after
        # releasing the block, before the driver has marked it done
        _wait_for(lambda: _marked(out) >= 4, 120, "four blocks marked done")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    # orphaned workers lose the server and exit by themselves
    _wait_for(lambda: not _worker_pids(out), 60, "the orphaned workers to exit")
    done = _lines(out)
    r = _run(_blockwise_args(trained, tiny_packed, out))
    assert r.returncode == 0, r.stdout + r.stderr
    blocks, completed, skipped, *_ = _counts(r.stdout)
    assert skipped >= 4 and skipped <= done and completed == blocks - skipped
    _assert_identical(_load(out), _load(clean_out[0]))


@pytest.mark.slow
def test_sigtermed_driver_says_so_and_its_rerun_completes_identically(
    clean_out, trained, tiny_packed, tmp_path
):
    out, log = tmp_path / "pred", tmp_path / "driver.log"
    proc = _start(_blockwise_args(trained, tiny_packed, out), log, "sleep=0.3")
    try:
        _wait_for(lambda: _marked(out) >= 2, 120, "two blocks marked done")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    last = log.read_text().strip().splitlines()[-1]
    assert last == (
        "interrupted: SIGTERM to predict_blockwise.py; finished work is kept; "
        "run the same command again to resume"
    ), log.read_text()[-3000:]
    _wait_for(lambda: not _worker_pids(out), 60, "the workers to exit")
    r = _run(_blockwise_args(trained, tiny_packed, out))
    assert r.returncode == 0, r.stdout + r.stderr
    blocks, completed, skipped, *_ = _counts(r.stdout)
    assert skipped >= 2 and completed == blocks - skipped
    _assert_identical(_load(out), _load(clean_out[0]))


@pytest.mark.slow
def test_failing_block_is_named_and_a_rerun_fixes_only_it(clean_out, trained, tiny_packed,
                                                          tmp_path):  # fmt: skip
    table = PackedDataset(tiny_packed).metadata
    first = table[(table["experiment"] == "HEPG2-02") & (table["plate"] == 1)].iloc[0]
    well = f"HEPG2-02/Plate1/{first['well']}"
    out = tmp_path / "pred"
    r = _run(_blockwise_args(trained, tiny_packed, out), fault=f"well={well}")
    assert r.returncode == 1, r.stdout + r.stderr
    blocks, completed, _, failed, not_run = _counts(r.stdout)
    assert (completed, failed, not_run) == (blocks - 1, 1, 0)
    match = re.search(r"FAILED block (\d+): HEPG2-02/Plate1 wells (\S+); worker log: (\S+)",
                      r.stdout)  # fmt: skip
    assert match and first["well"] in match.group(2).split(","), r.stdout
    assert (
        Path(match.group(3)).is_file() and "InjectedFaultError" in Path(match.group(3)).read_text()
    )
    assert f"InjectedFaultError: injected fault ({FAULT_ENV}) on well {well}" in r.stdout
    assert "Traceback (most recent call last)" in r.stdout
    assert "1 block(s) failed" in r.stderr
    got, want = _load(out), _load(clean_out[0])
    row, col = int(first["row"]), int(first["col"])
    assert np.isnan(got["HEPG2-02/Plate1"][0][row, col]).all()  # the failed block: not written
    assert np.array_equal(got["HEPG2-02/Plate2"][0], want["HEPG2-02/Plate2"][0], equal_nan=True)
    # fixed: the rerun processes that block only
    r = _run(_blockwise_args(trained, tiny_packed, out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert _counts(r.stdout) == (blocks, 1, blocks - 1, 0, 0)
    assert "FAILED" not in r.stdout
    _assert_identical(_load(out), want)


@pytest.mark.slow
def test_worker_crashing_at_start_fails_fast(trained, tiny_packed, tmp_path):
    out = tmp_path / "pred"
    start = time.monotonic()
    r = _run(_blockwise_args(trained, tiny_packed, out, "--max-restarts", "1"), fault="start",
             timeout=180)  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert time.monotonic() - start < 120
    blocks, completed, *_, not_run = _counts(r.stdout)
    assert completed == 0 and not_run == blocks
    assert "ABANDONED: worker restart cap exhausted" in r.stdout
    assert f"InjectedFaultError: injected start fault ({FAULT_ENV})" in r.stdout
    assert re.search(
        r"worker \d+ \(pid \d+\) exited with code 1; log: \S+worker_\d+\.log", r.stdout
    )
    assert len(list((out / "logs").glob("worker_*.log"))) == 3  # 2 workers + 1 restart, no more


@pytest.mark.slow
def test_bad_inputs_fail_before_any_worker_starts(trained, tiny_packed, tiny_raw, tmp_path):
    out = tmp_path / "pred"
    base = _common(trained, tiny_packed, out)[:6]  # --run, --data, --out
    with pytest.raises(
        UserError, match=r"no checkpoint of iteration 999 .*iterations here: 10, 20"
    ):
        blockwise_main([*base, "--iteration", "999"])
    with pytest.raises(UserError, match="no such checkpoint or run folder"):
        blockwise_main(["--run", str(tmp_path / "missing"), *base[2:]])
    with pytest.raises(UserError, match="--experiments NOPE-01: not in dataset"):
        blockwise_main([*base, "--experiments", "NOPE-01"])
    with pytest.raises(UserError, match="--experiments HEPG2-01: in split train, not test"):
        blockwise_main([*base, "--experiments", "HEPG2-01"])
    with pytest.raises(UserError, match="--cluster 'lsf': expected one of local, slurm"):
        blockwise_main([*base, "--cluster", "lsf"])
    with pytest.raises(UserError, match="partition: the local launcher takes none"):
        blockwise_main([*base, "--cluster-option", "partition=gpu"])
    with pytest.raises(UserError, match=r"--sif .*no such image file"):
        blockwise_main([*base, "--sif", str(tmp_path / "cell.sif")])
    # a dataset without a test split
    train_only = tmp_path / "train_only"
    train_only.mkdir()
    (train_only / "images.zarr").symlink_to(Path(tiny_packed).resolve() / "images.zarr")
    table = pd.read_parquet(Path(tiny_packed) / "metadata.parquet")
    table[table["split"] == "train"].to_parquet(train_only / "metadata.parquet", index=False)
    with pytest.raises(UserError, match=r"has no 'test' split \(its splits: train\)"):
        blockwise_main(["--run", str(trained), "--data", str(train_only), "--out", str(out)])
    # a 5-channel dataset for a 6-channel network: the script says so and exits 1
    raw5 = tmp_path / "raw5"
    shutil.copytree(tiny_raw, raw5, ignore=shutil.ignore_patterns("*_w6.png"))
    pack_dataset(raw5, tmp_path / "five", workers=1, progress=False)
    r = run_script(BLOCKWISE, "--run", trained, "--data", tmp_path / "five", "--out", out)
    assert r.returncode == 1
    assert "error:" in r.stderr and "the network takes 6 channels" in r.stderr
    assert "5 channels: w1, w2, w3, w4, w5" in r.stderr
    assert not out.exists()  # nothing written, no worker started


@pytest.mark.slow
def test_other_model_is_refused_unless_overwrite(trained, tiny_packed, tmp_path):
    out = tmp_path / "pred"
    args = [*_common(trained, tiny_packed, out)[:6], "--experiments", "HEPG2-02/Plate1",
            "--tta", "flips"]  # fmt: skip
    assert scan_main(args) == 0
    stale = out / "blockwise" / "tracking" / "x"
    stale.mkdir(parents=True)
    (out / "logs" / "worker_0.log").write_text("old")
    with pytest.raises(UserError, match=r"holds predictions of .* iteration 20 .*--overwrite"):
        scan_main([*args, "--iteration", "10"])
    assert scan_main([*args, "--iteration", "10", "--overwrite"]) == 0
    info = zarr.open_group(out / "predictions.zarr").attrs["cellblock_predictions"]
    assert info["iteration"] == 10
    assert not stale.exists() and not (out / "logs" / "worker_0.log").exists()
    with pytest.raises(UserError, match=r"\(TTA flips\); this is .* \(TTA none\)"):
        scan_main([*args, "--iteration", "10", "--tta", "none"])


def test_block_grid_covers_only_existing_wells():
    rows = [("A-1", 1, 1, 1), ("A-1", 1, 1, 2), ("A-1", 1, 2, 7), ("A-1", 2, 4, 1)]
    table = pd.DataFrame(
        [(e, p, r, c, s) for e, p, r, c in rows for s in (1, 2)],
        columns=["experiment", "plate", "row", "col", "site"],
    )
    grid = BlockGrid.from_table(table, block_wells=3)
    assert grid.plates == ("A-1/Plate1", "A-1/Plate2")
    assert grid.origin == (0, 1, 1) and grid.extent == (2, 4, 7) and grid.block == (1, 1, 3)
    assert grid.grid_shape == (2, 4, 3) and grid.n_sites == 8
    mask = grid.skip_mask()
    assert mask.sum() == 24 - 3  # blocks: plate 1 row 1 cols 1-3, row 2 cols 7; plate 2 row 4
    assert grid.wells_in((0, 1, 1), (1, 1, 3)) == ("A-1/Plate1", [(1, 1), (1, 2)])
    assert grid.sites_in((0, 1, 1), (1, 1, 3)) == 4
    assert grid.blocks()[2] == ((0, 1, 7), (1, 1, 1))  # cut by the bounding box
    assert BlockGrid.from_json(grid.to_json()) == grid
    other = BlockGrid.from_table(table.assign(experiment="B-1"), block_wells=3)
    assert other.fingerprint() != grid.fingerprint()  # markers never carry over
    assert block_shape(None, 22) == (1, 1, 22) and block_shape(50, 22) == (1, 2, 22)
    with pytest.raises(UserError, match="at least 1"):
        block_shape(0, 22)
    # the run summary of this grid: one block failed, one completed; keywords only
    result = TaskResult(total=24, failed=1, orphaned=0, abandoned=False, abandon_reason=None,
                        last_worker_error=None, failed_blocks=((5, (0, 2, 7), (1, 1, 1)),),
                        worker_failures=0, restarts=0)  # fmt: skip
    lines = [{"start": 10.0, "end": 12.0, "seconds": 2.0, "sites": 4}]
    args = dict(done_before=1, done_after=2, lines=lines, records={}, seconds=5.0,
                driver_cpu_s=1.0, started=9.0, workers=1, store=Path("s"),
                log_dir=Path("l"))  # fmt: skip
    summary = RunSummary.build(grid, result, **args)
    assert (summary.blocks, summary.completed, summary.failed, summary.not_run) == (3, 1, 1, 0)
    assert summary.first_block_s == 3.0 and summary.failures[0].wells == ("r2c7",)
    with pytest.raises(TypeError, match="positional"):
        RunSummary.build(grid, result, *args.values())


def test_local_launcher_pins_one_gpu_per_worker_and_reports_exits(tmp_path):
    script = (
        "import os, sys, time; print('gpu', os.environ['CUDA_VISIBLE_DEVICES'], "
        "os.environ['CELLBLOCK_WORKER_LOG']); time.sleep(1); sys.exit(int(sys.argv[1]))"
    )
    spec = WorkerSpec((sys.executable, "-c", script, "0"), str(tmp_path), ("3", "5"))
    launcher = launcher_class("local")(spec)
    assert isinstance(launcher, LocalLauncher) and launcher.default_host == "127.0.0.1"

    def context(worker_id: int):
        return daisy.Context(hostname="127.0.0.1", port=1, task_id="t", worker_id=worker_id)

    threads = [threading.Thread(target=launcher, kwargs={"context": context(i)}) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gpus = sorted((tmp_path / f"worker_{i}.log").read_text().split("gpu ")[1][0] for i in (0, 1))
    assert gpus == ["3", "5"]  # two workers at once: never the same GPU
    # a later worker (a restart has a new id) takes a GPU that is free again
    launcher(context=context(7))
    assert "gpu 3 " in (tmp_path / "worker_7.log").read_text()
    failing = LocalLauncher(WorkerSpec((sys.executable, "-c", script, "3"), str(tmp_path), ("3",)))
    with pytest.raises(
        WorkerExitError, match=r"worker 9 \(pid \d+\) exited with code 3; log: "
    ) as e:
        failing(context=context(9))
    assert "--- last lines of worker_9.log ---" in str(e.value) and "gpu 3" in str(e.value)


def test_container_wrapper_and_fault_parsing(tmp_path):
    image = tmp_path / "cell.sif"
    image.write_text("")
    binds = ("/data", "/code", "/data/sub", "/data")
    wrap = ContainerWrapper(str(image), binds, runtime="/usr/bin/apptainer")
    worker = ["-m", "cellblock.blockwise.worker", "--plan", "p.json"]
    assert wrap([sys.executable, *worker]) == [
        "/usr/bin/apptainer", "exec", "--nv", "-B", "/data,/code", str(image), "python", *worker,
    ]  # fmt: skip
    with pytest.raises(UserError, match="cannot bind /a:b"):
        ContainerWrapper(str(image), ("/a:b",), runtime="apptainer")
    fault = Fault.from_env({FAULT_ENV: "start, well=E-1/Plate1/B02,sleep=0.5"})
    assert fault == Fault(True, frozenset({"E-1/Plate1/B02"}), 0.5)
    assert Fault.from_env({}) == Fault()
    with pytest.raises(UserError, match="unknown directive 'boom'"):
        Fault.from_env({FAULT_ENV: "boom"})
