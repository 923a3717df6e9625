"""cellblock.cluster without a cluster: options, grids, container commands, golden sbatch files.

Generated sbatch scripts and container command lines are compared with files in
``tests/golden/`` after machine-specific paths are replaced by placeholders
(``<JOBS>``, ``<PYTHON>``, ``<SIF>``, ``<TMP>``). Regenerate them after an intended
change with ``CELLBLOCK_UPDATE_GOLDEN=1 pytest tests/test_cluster.py`` and review the diff.
The real-cluster tests (test_cluster_slurm.py) check that what SLURM receives equals
these renderings.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from cellblock import container
from cellblock.cluster import (
    ClusterOptions,
    make_executor,
    parse_channel_sets,
    parse_folds,
    sbatch_script,
)
from cellblock.cluster.grid import latest_iteration, make_grid
from cellblock.cluster.grid_axes import channels_name
from cellblock.cluster.grid_jobs import format_status, grid_status
from cellblock.cluster.jobs import outcomes, run_throttled
from cellblock.cluster.options import parse_mem_gb, parse_time_min
from cellblock.errors import UserError
from tests.conftest import ROOT, run_script

GOLDEN = ROOT / "tests" / "golden"
SETUP = ROOT / "02_train" / "synthetic" / "tiny"


def check_golden(name: str, text: str, replacements: dict[str, str]) -> None:
    """``text`` with paths replaced equals ``tests/golden/<name>`` (or rewrites it)."""
    for path, placeholder in sorted(replacements.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(path, placeholder)
    golden = GOLDEN / name
    if os.environ.get("CELLBLOCK_UPDATE_GOLDEN"):
        golden.write_text(text)
    assert golden.is_file(), f"{golden} missing: run with CELLBLOCK_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{name} differs from its golden file"


@pytest.fixture
def fake_runtimes(tmp_path, monkeypatch):
    """A PATH holding stand-ins named apptainer/singularity (made on request); a
    runtime the user chose ($CELLBLOCK_APPTAINER) would take precedence, so it is unset."""
    monkeypatch.delenv(container.RUNTIME_ENV, raising=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()

    def make(*names: str) -> Path:
        for name in names:
            exe = bin_dir / name
            exe.write_text("#!/bin/sh\nexit 0\n")
            exe.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
        return bin_dir

    return make


# --- options -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("1:30", 2), ("01:30:00", 90), ("2-00", 2880), ("1-02:03", 1563),
     ("0-00:00:30", 1), (45, 45)],
)  # fmt: skip
def test_time_limits_in_slurm_formats(text, minutes):
    assert parse_time_min(text) == minutes


@pytest.mark.parametrize("text", ["", "1h", "0", "1:2:3:4", "-5"])
def test_bad_time_limit_is_a_clear_error(text):
    with pytest.raises(UserError, match="--time"):
        parse_time_min(text)


def test_memory_units():
    assert parse_mem_gb("16G") == 16
    assert parse_mem_gb("16GB") == 16
    assert parse_mem_gb("512M") == 0.5
    assert parse_mem_gb("2") == 2
    with pytest.raises(UserError, match="--mem '16 apples'"):
        parse_mem_gb("16 apples")


def test_options_reject_impossible_values():
    with pytest.raises(UserError, match="cpus"):
        ClusterOptions(cpus=0)
    with pytest.raises(UserError, match="gpus"):
        ClusterOptions(gpus=-1)


# --- grid ----------------------------------------------------------------------------


def test_folds_and_channel_sets():
    assert parse_folds("0-4") == [0, 1, 2, 3, 4]
    assert parse_folds("0,2, 4") == [0, 2, 4]
    assert parse_folds("3") == [3]
    assert parse_channel_sets("all", 6) == [(1, 2, 3, 4, 5, 6)]
    loo = parse_channel_sets("leave-one-out", 6)
    assert len(loo) == 6 and loo[0] == (2, 3, 4, 5, 6) and loo[5] == (1, 2, 3, 4, 5)
    assert parse_channel_sets("1,2,3;4,5,6", 6) == [(1, 2, 3), (4, 5, 6)]
    assert channels_name((1, 2, 3)) == "ch1-2-3"


@pytest.mark.parametrize(
    ("folds", "message"), [("0-", "expected"), ("3-1", "empty"), ("0,0", "repeated")]
)
def test_bad_folds(folds, message):
    with pytest.raises(UserError, match=message):
        parse_folds(folds)


@pytest.mark.parametrize(
    ("sets", "message"),
    [("1,7", "channel 7 not in 1..6"), ("1,1", "repeated"), ("1,2;1,2", "a set is repeated"),
     ("a,b", "expected all"), ("1;", "empty")],
)  # fmt: skip
def test_bad_channel_sets(sets, message):
    with pytest.raises(UserError, match=message):
        parse_channel_sets(sets, 6)


def test_grid_runs_specs_and_manifest(tiny_packed, tmp_path):
    grid = make_grid(
        SETUP,
        folds="0-1",
        channel_sets="1,2,3,4,5;2,3,4,5,6",
        data=tiny_packed,
        out=tmp_path / "grid",
        iterations=6,
        overrides={"data.n_folds": 2, "train.lr": 0.01},
    )
    runs = grid.runs()
    assert [(r.channels, r.fold) for r in runs] == [
        ((1, 2, 3, 4, 5), 0), ((1, 2, 3, 4, 5), 1), ((2, 3, 4, 5, 6), 0), ((2, 3, 4, 5, 6), 1)
    ]  # fmt: skip
    assert runs[3].run_dir == tmp_path / "grid" / "ch2-3-4-5-6" / "fold_1"
    spec = grid.spec(runs[3])
    config = spec.resolved_config()
    assert config["data"]["fold"] == 1 and config["data"]["channels"] == [2, 3, 4, 5, 6]
    assert config["net"]["in_channels"] == 5 and config["data"]["val_experiments"] == []
    assert config["train"]["lr"] == 0.01 and spec.iterations == 6
    argv = spec.argv()
    assert argv[:3] == ["python", str(SETUP / "train.py"), "6"]
    assert "--set=data.channels=[2, 3, 4, 5, 6]" in argv
    # Status of a grid nobody submitted yet; a run with a checkpoint counts its iteration.
    from cellblock.cluster.grid import save_manifest

    save_manifest(grid)
    (runs[0].run_dir / "checkpoints").mkdir(parents=True)
    (runs[0].run_dir / "checkpoints" / "checkpoint_00000004.pt").write_bytes(b"")
    assert latest_iteration(runs[0].run_dir) == 4
    rows = grid_status(grid.out)
    assert [r.state for r in rows] == ["NOT SUBMITTED"] * 4
    assert rows[0].iteration == 4 and rows[1].iteration == 0
    table = format_status(rows)
    assert "4/6" in table and "0 of 4 runs at their target iteration" in table
    manifest = json.loads((grid.out / "grid.json").read_text())
    assert manifest["runs"][3]["run_dir"] == "ch2-3-4-5-6/fold_1"
    assert manifest["submissions"] == []


def _touch_checkpoint(run_dir: Path, iteration: int) -> None:
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / f"checkpoint_{iteration:08d}.pt").write_bytes(b"")


def test_grid_init_from_another_grid_run_or_checkpoint(tiny_packed, tmp_path):
    """Stage I -> II: which checkpoint starts which run, settled at submission (pure path
    logic; test_submit_train_on_the_local_executor trains through the same path)."""
    from cellblock.cluster.grid import save_manifest

    sets = {"data.n_folds": 3}
    two = "1,2,3,4,5;2,3,4,5,6"

    def grid(out: str, folds: str, channels: str, iterations: int = 6, data=tiny_packed, **kw):
        return make_grid(SETUP, folds=folds, channel_sets=channels, data=data,
                         out=tmp_path / out, iterations=iterations, overrides=sets,
                         **kw)  # fmt: skip

    stage1 = grid("s1", "0", two, iterations=4)
    save_manifest(stage1)
    for run in stage1.runs():
        _touch_checkpoint(run.run_dir, 2)
    with pytest.raises(UserError, match=r"fold_0: at iteration 2 of 4; let that grid finish"):
        grid("s2", "0", two, init_from=tmp_path / "s1")
    for run in stage1.runs():
        _touch_checkpoint(run.run_dir, 4)
    stage2 = grid("s2", "0-2", two, init_from=tmp_path / "s1")
    for run in stage2.runs():  # one fold in the source: every fold starts from it
        want = tmp_path / "s1" / channels_name(run.channels) / "fold_0" / "checkpoints"
        assert stage2.init_checkpoints[run.index] == str(want / "checkpoint_00000004.pt")
        argv = stage2.spec(run).argv()
        assert argv[argv.index("--init-from") + 1] == stage2.init_checkpoints[run.index]
    save_manifest(stage2)
    manifest = json.loads((tmp_path / "s2" / "grid.json").read_text())
    assert manifest["init_from"] == str(tmp_path / "s1")
    assert manifest["runs"][0]["init_checkpoint"] == stage2.init_checkpoints[0]
    # The source trains on: a started run keeps its checkpoint, a new one takes the latest.
    for run in stage1.runs():
        _touch_checkpoint(run.run_dir, 8)
    _touch_checkpoint(stage2.runs()[0].run_dir, 2)
    again = grid("s2", "0-2", two, data=None)
    assert again.init_from == tmp_path / "s1"  # a resubmission keeps its source
    assert again.init_checkpoints[0] == stage2.init_checkpoints[0]
    assert again.init_checkpoints[1].endswith("checkpoint_00000008.pt")
    with pytest.raises(UserError, match=r"already started from .*s1; use another --out"):
        grid("s2", "0-2", two, data=None, init_from=stage1.runs()[0].run_dir)
    # Several folds in the source: the same fold, and none for a fold it lacks.
    stage1b = grid("s1b", "0-1", "1,2,3,4,5", iterations=4)
    save_manifest(stage1b)
    for run in stage1b.runs():
        _touch_checkpoint(run.run_dir, 4)
    stage3 = grid("s3", "1", "1,2,3,4,5", init_from=tmp_path / "s1b")
    assert "/s1b/ch1-2-3-4-5/fold_1/" in stage3.init_checkpoints[0]
    with pytest.raises(UserError, match=r"ch1-2-3-4-5 fold 2 .*\(folds there: fold_0, fold_1\)"):
        grid("s4", "2", "1,2,3,4,5", init_from=tmp_path / "s1b")
    with pytest.raises(UserError, match=r"channels ch1-2-3-4-5-6 fold 0 .*\(folds there: none\)"):
        grid("s5", "0", "all", init_from=tmp_path / "s1")
    # A run folder starts every run, if its network fits (net_config.json of the run).
    run = stage1b.runs()[0].run_dir
    stage6 = grid("s6", "0-2", "1,2,3,4,5", init_from=run)
    starts = set(stage6.init_checkpoints.values())
    assert starts == {str(run / "checkpoints/checkpoint_00000004.pt")}
    made = {"backbone": "test_resnet", "in_channels": 5, "embedding_dim": 64, "pool": "avg"}
    (run / "net_config.json").write_text(json.dumps(made))
    grid("s6b", "0", "1,2,3,4,5", init_from=run)
    with pytest.raises(UserError, match=r"made with net\.in_channels=5, this grid's run needs 6"):
        grid("s6c", "0", "all", init_from=run)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    with pytest.raises(UserError, match=r"--init-from: .*empty_run: no checkpoints"):
        grid("s7", "0", "1,2,3,4,5", init_from=empty)
    # train.py --init-from a grid folder: the error says what to give instead
    from cellblock.training.checkpoint import resolve_checkpoint

    with pytest.raises(UserError, match=r"a grid of runs .* e\.g\. .*s1b/ch1-2-3-4-5/fold_0"):
        resolve_checkpoint(tmp_path / "s1b")


def test_grid_errors_name_the_input(tiny_packed, tmp_path):
    with pytest.raises(UserError, match=r"--setup nowhere: no config\.yaml"):
        make_grid("nowhere", folds="0", channel_sets="all", data=tiny_packed, out=tmp_path)
    with pytest.raises(UserError, match="--data is needed"):
        make_grid(SETUP, folds="0", channel_sets="all", data=None, out=tmp_path / "new")
    with pytest.raises(UserError, match="no such packed dataset"):
        make_grid(SETUP, folds="0", channel_sets="all", data=tmp_path / "missing", out=tmp_path)
    with pytest.raises(UserError, match=r"channel 7 not in 1\.\.6"):
        make_grid(SETUP, folds="0", channel_sets="7", data=tiny_packed, out=tmp_path)


# --- container ----------------------------------------------------------------------


def test_container_command_golden(fake_runtimes, tmp_path):
    fake_runtimes("apptainer", "singularity")
    sif = tmp_path / "cell.sif"
    sif.write_bytes(b"")
    data, runs = tmp_path / "data", tmp_path / "runs"
    argv = ["python", "02_train/synthetic/tiny/train.py", "100", "--data", str(data)]
    # runs/x is inside runs (dropped); data is given twice (kept once)
    cmd = container.wrap(argv, sif, [data, runs, runs / "x", data])
    assert cmd[0] == "apptainer"  # preferred when both are installed
    text = shlex.join(cmd) + "\n" + container.python_command(sif, [data, runs]) + "\n"
    check_golden("cluster_container_command.txt", text, {str(tmp_path): "<TMP>"})


def test_container_runtime_choice_and_errors(fake_runtimes, tmp_path, monkeypatch):
    fake_runtimes("singularity")
    assert container.find_runtime() == "singularity"
    assert container.wrap(["python"], "/x.sif")[:3] == ["singularity", "exec", "--nv"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="neither apptainer nor singularity"):
        container.find_runtime()
    with pytest.raises(UserError, match="cannot bind /a,b"):
        container.bind_list(["/a,b"])
    with pytest.raises(UserError, match="cannot bind /a:b"):
        container.bind_list(["/a:b"])


def test_sif_from_option_or_environment(tmp_path, monkeypatch):
    sif = tmp_path / "cell.sif"
    sif.write_bytes(b"")
    monkeypatch.delenv(container.SIF_ENV, raising=False)
    assert container.resolve_sif(None) is None
    assert container.resolve_sif(str(sif)) == sif
    monkeypatch.setenv(container.SIF_ENV, str(sif))
    assert container.resolve_sif(None) == sif
    assert container.resolve_sif("") is None  # --sif '' overrides the variable
    monkeypatch.setenv(container.SIF_ENV, str(tmp_path / "gone.sif"))
    with pytest.raises(UserError, match=r"CELLBLOCK_SIF .*gone\.sif: no such image"):
        container.resolve_sif(None)


# --- sbatch scripts -----------------------------------------------------------------


def _replacements(folder: Path, tmp_path: Path) -> dict[str, str]:
    return {str(folder): "<JOBS>", shlex.quote(sys.executable): "<PYTHON>",
            str(tmp_path): "<TMP>"}  # fmt: skip


def test_sbatch_array_script_golden(tmp_path, monkeypatch):
    monkeypatch.delenv(container.SIF_ENV, raising=False)
    folder = tmp_path / "grid" / "jobs" / "stamp"
    options = ClusterOptions(partition="gpu", account="lab", qos="high", time_min=720, gpus=1,
                             cpus=8, mem_gb=32, array_parallelism=6, job_name="tiny-grid",
                             extra={"constraint": "a100", "exclusive": ""})  # fmt: skip
    executor = make_executor("slurm", folder, options)
    script = sbatch_script(executor, n_tasks=30)
    assert "#SBATCH --array=0-29%6" in script
    check_golden("cluster_sbatch_array.sh", script, _replacements(folder, tmp_path))
    single = sbatch_script(make_executor("slurm", folder, ClusterOptions()), n_tasks=1)
    assert "--array" not in single
    check_golden("cluster_sbatch_single.sh", single, _replacements(folder, tmp_path))


def test_sbatch_script_in_container_golden(fake_runtimes, tmp_path, monkeypatch):
    fake_runtimes("apptainer")
    sif = tmp_path / "cell.sif"
    sif.write_bytes(b"")
    monkeypatch.setenv(container.SIF_ENV, str(sif))  # picked up without --sif
    folder = tmp_path / "runs" / "jobs" / "stamp"
    executor = make_executor("slurm", folder, ClusterOptions(gpus=1, time_min=60),
                             binds=[tmp_path / "data", tmp_path / "runs"])  # fmt: skip
    script = sbatch_script(executor, n_tasks=4)
    assert f"apptainer exec --nv -B {tmp_path}/data,{tmp_path}/runs {sif} python" in script
    check_golden("cluster_sbatch_container.sh", script, _replacements(folder, tmp_path))


def test_executor_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--cluster 'pbs'"):
        make_executor("pbs", tmp_path, ClusterOptions())
    sif = tmp_path / "cell.sif"
    sif.write_bytes(b"")
    with pytest.raises(UserError, match="--sif needs --cluster slurm or local"):
        make_executor("debug", tmp_path, ClusterOptions(sif=str(sif)))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no srun
    with pytest.raises(UserError, match="no SLURM on this machine"):
        make_executor("slurm", tmp_path, ClusterOptions())
    with pytest.raises(UserError, match="only for --cluster slurm"):
        sbatch_script(make_executor("local", tmp_path, ClusterOptions()))


# --- local and debug executors --------------------------------------------------------


def test_local_executor_throttles_and_reports_failures(tmp_path):
    import functools

    executor = make_executor("local", tmp_path / "jobs", ClusterOptions(time_min=5))
    calls = [functools.partial(pow, 2, 10), functools.partial(int, "x"), functools.partial(abs, -3)]
    jobs = run_throttled(executor, calls, parallelism=2)
    assert all(j.done() for j in jobs)
    results = outcomes(jobs)
    assert [r.ok for r in results] == [True, False, True]
    assert results[0].value == 1024 and results[2].value == 3
    assert "invalid literal for int()" in results[1].value


def test_debug_executor_runs_in_process(tmp_path):
    import functools

    executor = make_executor("debug", tmp_path / "jobs", ClusterOptions())
    jobs = run_throttled(executor, [functools.partial(pow, 3, 2)], parallelism=1)
    assert [o.value for o in outcomes(jobs)] == [9]


@pytest.mark.slow
def test_submit_train_on_the_local_executor(tiny_packed, tmp_path):
    out = tmp_path / "grid"
    args = ["--setup", SETUP, "--folds", "1", "--channel-sets", "1,2,3,4,5,6", "--cluster",
            "local", "--data", tiny_packed, "--out", out, "--iterations", "2",
            "--set", "data.n_folds=2", "--set", "train.batch_size=8", "--set",
            "net.input_size=32", "--set", "train.workers=0"]  # fmt: skip
    result = run_script(ROOT / "scripts" / "submit_train.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = out / "ch1-2-3-4-5-6" / "fold_1"
    assert latest_iteration(run_dir) == 2
    assert "COMPLETED" in result.stdout and "1 of 1 runs at their target" in result.stdout
    assert (run_dir / "logs" / "train.log").read_text().count("iteration 2 of 2") == 1
    again = run_script(ROOT / "scripts" / "submit_train.py", *args, cwd=tmp_path)
    assert again.returncode == 0 and "all 1 runs are at iteration 2" in again.stdout
    status = run_script(ROOT / "scripts" / "submit_train.py", "status", "--out", out)
    assert status.returncode == 0 and "2/2" in status.stdout and "COMPLETED" in status.stdout
    # stage II: a new grid whose runs start from this grid's weights
    stage2 = tmp_path / "stage2"
    args2 = [*args[: args.index("--out")], "--out", stage2, *args[args.index("--out") + 2 :]]
    args2[args2.index("--folds") + 1] = "0"
    result = run_script(ROOT / "scripts" / "submit_train.py", *args2, "--init-from", out,
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    log = (stage2 / "ch1-2-3-4-5-6" / "fold_0" / "logs" / "train.log").read_text()
    assert f"initialized from {run_dir / 'checkpoints' / 'checkpoint_00000002.pt'}" in log


def test_submit_train_errors_are_one_line(tiny_packed, tmp_path):
    script = ROOT / "scripts" / "submit_train.py"
    bad_key = run_script(script, "--setup", SETUP, "--data", tiny_packed, "--out", tmp_path,
                         "--cluster", "local", "--folds", "0", "--set", "train.lrr=1")  # fmt: skip
    assert bad_key.returncode == 1 and "train" in bad_key.stderr and "lrr" in bad_key.stderr
    assert "Traceback" not in bad_key.stderr
    assert not (tmp_path / "jobs").exists()  # nothing submitted
    no_grid = run_script(script, "status", "--out", tmp_path / "none")
    assert no_grid.returncode == 1 and "no such grid" in no_grid.stderr
