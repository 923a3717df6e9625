"""cell.sif for real: built with Apptainer from containers/cell.def, the stages run in it.

The runtime is the host's apptainer/singularity or, where there is none (this build
machine), the local Apptainer of ``scripts/apptainer_local.sh install`` run through
``scripts/apptainer.sh``; every launcher gets it through ``$CELLBLOCK_APPTAINER``. The
image is the ``--cpu`` build (``--debootstrap``: no Docker Hub here; ``--zstd``: seconds
of compression instead of minutes), built once and kept in ``.apptainerlocal/test-images/``
(under ``$APPTAINERLOCAL_DIR`` when set) keyed by a hash of the recipe, the build options
and every file the recipe copies in, so a rerun with nothing changed reuses it (building
takes ~7-10 min here on 2 cores, reusing a few seconds).

Checked: ``apptainer test`` (the smoke test); the image's ``pip freeze`` is the native
one and constraints.txt's; ``--nv`` without a GPU warns and runs; a few training
iterations in the image and natively log identical losses; a 2-run grid with ``--sif``
on the local SLURM completes with checkpoints; an array task in the image, preempted
(USR2), checkpoints, is requeued from outside the image (``cellblock.cluster.requeue``)
and ends like its uninterrupted twin; ``predict_blockwise --sif`` with 2 workers in the
image writes the logits and embeddings of native prediction. Needs root (or a host
runtime).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cellblock.cluster import ClusterOptions, TrainTask, make_executor, outcomes, submit
from cellblock.cluster.grid import make_grid
from tests.conftest import ROOT, run_script
from tests.test_cluster_container import body, sections
from tests.test_cluster_slurm import (
    _equal,
    _flatten,
    _requeued_and_pending,
    final_states,
    read_log,
    wait_for,
)

pytestmark = pytest.mark.slow

DEF = ROOT / "containers" / "cell.def"
BUILD = ROOT / "containers" / "build.sh"
SETUP = ROOT / "02_train" / "synthetic" / "tiny"
BLOCKWISE = ROOT / "03_predict" / "predict_blockwise.py"
# next to the local Apptainer (scripts/apptainer_local.sh's state folder), git-ignored
IMAGES = Path(os.environ.get("APPTAINERLOCAL_DIR") or ROOT / ".apptainerlocal") / "test-images"
# tiny_packed: 32 px, 19 classes; 3 training experiments, HEPG2-01 held out
FAST = ["net.input_size=32", "data.val_experiments=[HEPG2-01]", "train.batch_size=8",
        "train.workers=0", "train.log_every=1", "train.checkpoint_every=3",
        "train.validate_every=3", "train.warmup_iters=2", "train.schedule_iters=12"]  # fmt: skip


# The preempted run: long enough that the signal, sent right after checkpoint 2, arrives
# while it is still training (~0.1-0.5 s per iteration here, in the image too).
PREEMPT_ITERATIONS = 30
PREEMPT_CKPT = "checkpoints/checkpoint_{:08d}.pt"


def _sets(items: list[str]) -> list[str]:
    return [a for s in items for a in ("--set", s)]


# --- the runtime and the image ---------------------------------------------------------


@pytest.fixture(scope="session")
def runtime() -> str:
    """The runtime command (host's, or scripts/apptainer.sh), set up if need be (~2 min)."""
    r = subprocess.run([ROOT / "scripts" / "apptainer_local.sh", "install"],
                       capture_output=True, text=True, timeout=1200)  # fmt: skip
    if r.returncode != 0 and os.geteuid() != 0:
        pytest.skip(f"no container runtime and not root: {r.stderr.strip()[-300:]}")
    assert r.returncode == 0, r.stderr[-3000:]
    match = re.fullmatch(r"export CELLBLOCK_APPTAINER=(\S+)\n", r.stdout)
    assert match, r.stdout
    return match.group(1)


def build_options() -> list[str]:
    """containers/build.sh's options for this machine (the README's command).

    pip's find-links folder (this machine's holds the CPU torch wheel) and the system's
    extra CA certificates (an HTTPS proxy's) go into the build, as a site passes its own.
    """
    options = ["--cpu", "--debootstrap", "--zstd"]
    links = os.environ.get("PIP_FIND_LINKS") or subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.find-links"],
        capture_output=True, text=True).stdout.strip()  # fmt: skip
    if links and Path(links.split()[0]).is_dir():
        options += ["--find-links", links.split()[0]]
    certs = Path("/usr/local/share/ca-certificates")
    if any(certs.glob("*.crt")):
        options += ["--ca-certs", str(certs)]
    return options


def _hash_tree(h, path: Path) -> None:
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    for p in files:
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(f"{p.relative_to(path)}\0".encode())
            h.update(p.read_bytes())


def image_key(options: list[str]) -> str:
    """What the image is made of: recipe, build script, options, every file copied in."""
    h = hashlib.sha256(" ".join(options).encode())
    _hash_tree(h, ROOT / "containers")
    for line in body(sections(DEF.read_text())["%files"]):
        source = line.split()[0]
        if "{{" not in source:
            h.update(f"{source}\0".encode())
            _hash_tree(h, ROOT / source)
    for i, option in enumerate(options[:-1]):
        value = Path(options[i + 1])
        if option == "--ca-certs":
            h.update(f"{value}\0".encode())
            _hash_tree(h, value)
        elif option == "--find-links":  # wheels: names and sizes (not GBs of bytes)
            for p in sorted(value.iterdir()):
                h.update(f"{p.name} {p.stat().st_size}\0".encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def sif(runtime) -> Path:
    """The --cpu image of the current recipe and code: reused when up to date, else built.

    One session builds at a time (a lock file); images of other keys are removed once
    an hour old (a concurrent session may still be using a recent one).
    """
    options = build_options()
    path = IMAGES / f"cell-cpu-{image_key(options)}.sif"
    IMAGES.mkdir(parents=True, exist_ok=True)
    with open(IMAGES / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return path
        for old in IMAGES.glob("cell-cpu-*.sif"):  # ~0.75 GB each
            if time.time() - old.stat().st_mtime > 3600:
                old.unlink(missing_ok=True)
        start = time.monotonic()
        r = subprocess.run([BUILD, *options, "--out", path], env=_env(runtime), cwd=ROOT,
                           capture_output=True, text=True, timeout=3600)  # fmt: skip
        assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
        assert "smoke test passed" in r.stdout + r.stderr  # the build ran %test
        print(f"built {path} in {time.monotonic() - start:.0f} s, "
              f"{path.stat().st_size / 2**20:.0f} MiB")  # fmt: skip
    return path


def _env(runtime: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CELLBLOCK_SIF"}
    return {**env, "CELLBLOCK_APPTAINER": runtime, "PYTHONUNBUFFERED": "1"}


def _container(runtime: str, *args, cwd: Path = ROOT, timeout: float = 600):
    return subprocess.run([runtime, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=_env(runtime), timeout=timeout)  # fmt: skip


# --- the image itself -----------------------------------------------------------------


def test_image_test_passes_and_it_holds_the_locked_stack(sif, runtime):
    r = _container(runtime, "test", sif)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "smoke test passed" in r.stdout and "torch 2.13.0+cpu" in r.stdout
    # The image's pip freeze is this (natively installed) environment's, every version in
    # it the one constraints.txt pins; torch and its CUDA packages are left to
    # requirements.txt's pin (as `make lock` writes constraints.txt), the "# no-deps:
    # NAME==VERSION" pins of requirements.txt are install.sh's, the project is aside.
    r = _container(runtime, "exec", sif, "pip", "freeze")
    assert r.returncode == 0, r.stderr
    native = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    frozen, here = (sorted(ln for ln in text.splitlines()
                           if ln and not ln.startswith(("#", "-e ", "cellblock")))
                    for text in (r.stdout, native))  # fmt: skip
    assert frozen == here, set(frozen) ^ set(here)
    locked = {ln for ln in (ROOT / "constraints.txt").read_text().splitlines()
              if ln and not ln.startswith("#")}  # fmt: skip
    nodeps = re.findall(r"^# no-deps: *(\S+)", (ROOT / "requirements.txt").read_text(), re.M)
    unlocked = set(frozen) - locked - set(nodeps)
    assert all(re.match(r"(torch|nvidia|triton)", ln, flags=re.I) for ln in unlocked), unlocked
    assert "torch==2.13.0+cpu" in unlocked
    if stale := locked - set(frozen):  # pins nothing installs any more (make lock drops them)
        warnings.warn(f"constraints.txt pins what no install has: {sorted(stale)}", stacklevel=1)
    where = _container(runtime, "run", sif, "-c", "import cellblock, torch; "
                       "print(cellblock.__file__, torch.version.cuda)")  # fmt: skip
    assert where.stdout.split() == ["/opt/cellblock/cellblock/__init__.py", "None"], where.stderr
    labels = json.loads(_container(runtime, "inspect", "--json", "--labels", sif).stdout)
    assert "cpu build" in json.dumps(labels)


def test_nv_without_a_gpu_warns_and_runs_on_cpu(sif, runtime):
    if Path("/dev/nvidia0").exists():
        pytest.skip("this machine has a GPU")
    r = _container(runtime, "exec", "--nv", sif, "python", "-c",
                   "import torch; print('cuda', torch.cuda.is_available())")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "cuda False"
    assert "--nv, but this machine has no NVIDIA GPU" in r.stderr


# --- the stages in the image ------------------------------------------------------------


def test_training_in_the_image_logs_the_native_losses(sif, runtime, tiny_packed, tmp_path):
    """train.py from the checkout (bound in as the working directory) in the image."""
    native, inside = tmp_path / "native", tmp_path / "inside"
    args = ["5", "--data", tiny_packed, *_sets(FAST)]
    r = run_script(SETUP / "train.py", *args, "--out", native, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _container(runtime, "exec", "--nv", "-B", f"{tiny_packed},{tmp_path}", sif, "python",
                   "02_train/synthetic/tiny/train.py", *args, "--out", inside)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    a, b = pd.read_csv(native / "log.csv"), pd.read_csv(inside / "log.csv")
    assert list(a["iteration"]) == list(b["iteration"]) == [1, 2, 3, 4, 5]
    assert list(a["loss"]) == list(b["loss"]) and list(a["lr"]) == list(b["lr"])
    va, vb = pd.read_csv(native / "val.csv"), pd.read_csv(inside / "val.csv")
    assert list(va["loss"]) == list(vb["loss"])
    assert json.loads((inside / "run.json").read_text())["dataset"] == str(tiny_packed)


def test_grid_on_slurm_runs_its_tasks_in_the_image(slurm_cluster, sif, runtime, tiny_packed,
                                                   tmp_path):  # fmt: skip
    out = tmp_path / "grid"
    sets = _sets(["train.batch_size=8", "net.input_size=32", "data.n_folds=2",
                  "train.checkpoint_every=2", "train.log_every=1", "train.workers=0"])  # fmt: skip
    r = subprocess.run([sys.executable, ROOT / "scripts" / "submit_train.py", "--setup", SETUP,
                        "--folds", "0-1", "--channel-sets", "all", "--cluster", "slurm",
                        "--data", tiny_packed, "--out", out, "--iterations", "4", "--time",
                        "30", "--sif", sif, "--wait", *sets],
                       capture_output=True, text=True, cwd=tmp_path, env=_env(runtime),
                       timeout=900)  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    manifest = json.loads((out / "grid.json").read_text())
    assert len(manifest["runs"]) == 2
    for run in manifest["runs"]:
        names = sorted(p.name for p in (out / run["run_dir"] / "checkpoints").glob("*.pt"))
        assert names == ["checkpoint_00000002.pt", "checkpoint_00000004.pt"], run
    folder = out / manifest["submissions"][0]["folder"]
    (script,) = folder.glob("*_submission.sh")
    assert f"{runtime} exec --nv -B " in script.read_text() and str(sif) in script.read_text()


def test_preempted_array_task_in_the_image_requeues_and_ends_like_an_uninterrupted_one(
    slurm_cluster, sif, runtime, tiny_packed, tmp_path, monkeypatch
):
    monkeypatch.setenv("CELLBLOCK_APPTAINER", runtime)
    monkeypatch.delenv("CELLBLOCK_SIF", raising=False)
    sets = {
        **{"train.batch_size": 8, "net.input_size": 32, "data.n_folds": 2},
        **{"train.checkpoint_every": 2, "train.log_every": 1, "train.workers": 0},
        "train.device": "cpu",  # bit-exact resumption is a CPU promise
    }
    names = ("reference", "signal")
    specs = []
    for name in names:
        grid = make_grid(
            SETUP,
            folds="0",
            channel_sets="1,2,3,4,5",
            data=tiny_packed,
            out=tmp_path / name,
            iterations=PREEMPT_ITERATIONS,
            overrides=sets,
        )
        specs.append(grid.spec(grid.runs()[0]))
    runs = {name: Path(spec.run_dir) for name, spec in zip(names, specs, strict=True)}
    options = ClusterOptions(time_min=60, sif=str(sif))
    executor = make_executor("slurm", tmp_path / "jobs", options, [tiny_packed, tmp_path, SETUP])
    jobs = dict(zip(names, submit(executor, [TrainTask(s) for s in specs]), strict=True))
    assert "_" in jobs["signal"].job_id  # an array task

    wait_for((runs["signal"] / PREEMPT_CKPT.format(2)).exists, 600, "the signal run's checkpoint 2")
    subprocess.run(["scancel", "--signal=USR2", jobs["signal"].job_id], check=True)
    # A requeued job stays PENDING only ~10 s (cred_expire): watch for it closely.
    seen: dict[str, bool] = {}

    def requeued() -> bool:
        if _requeued_and_pending(jobs["signal"].job_id):
            seen["result"] = jobs["signal"].paths.result_pickle.exists()
        return bool(seen)

    wait_for(requeued, 300, "the signalled task requeued and pending", interval=0.05)
    assert seen == {"result": False}  # the interrupted attempt left no result behind

    results = outcomes(list(jobs.values()))
    assert all(r.ok for r in results), results
    assert {r.value["iteration"] for r in results} == {PREEMPT_ITERATIONS}
    assert set(final_states([j.job_id for j in jobs.values()]).values()) == {"COMPLETED"}
    show = ["scontrol", "show", "job", jobs["signal"].job_id]
    info = subprocess.run(show, capture_output=True, text=True).stdout
    assert "Restarts=1" in info, info

    # The requeue was asked for in the image and done by the sbatch script outside it.
    err = jobs["signal"].paths.stderr.read_text()
    assert f"requeueing job {jobs['signal'].job_id} (asked for in the container)" in err, err
    assert "Traceback" not in err and "FileNotFoundError" not in err, err[-3000:]
    log = (runs["signal"] / "logs" / "train.log").read_text()
    stopped = re.search(
        rf"stop requested: checkpointed iteration (\d+) of {PREEMPT_ITERATIONS}", log
    )
    assert stopped and int(stopped.group(1)) >= 2, log[-2000:]
    assert f"resumed from {runs['signal'] / PREEMPT_CKPT.format(int(stopped.group(1)))}" in log

    def final(name: str) -> dict:
        path = runs[name] / PREEMPT_CKPT.format(PREEMPT_ITERATIONS)
        return torch.load(path, map_location="cpu", weights_only=True)

    reference, state = final("reference"), final("signal")
    for part in ("model", "optimizer"):
        flat_ref, flat = _flatten(reference[part]), _flatten(state[part])
        assert flat_ref.keys() == flat.keys()
        different = [k for k in flat_ref if not _equal(flat_ref[k], flat[k])]
        assert not different, f"{part} differs at {different[:5]}"
    for table in ("log.csv", "val.csv"):
        assert read_log(runs["signal"] / table) == read_log(runs["reference"] / table), table


@pytest.fixture(scope="module")
def trained(tiny_packed, tmp_path_factory) -> Path:
    from tests.test_inference import train_tiny_run

    return train_tiny_run(tiny_packed, tmp_path_factory.getbasetemp())


def test_blockwise_workers_in_the_image_predict_as_natively(sif, runtime, trained, tiny_packed,
                                                           tmp_path):  # fmt: skip
    import zarr

    # The runtime through a shim that records each container it starts.
    calls, shim = tmp_path / "calls.txt", tmp_path / "runtime.sh"
    shim.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexec {runtime} "$@"\n')
    shim.chmod(0o755)

    def predict(out: Path, *extra):
        return subprocess.run([sys.executable, BLOCKWISE, "--run", trained, "--data",
                               tiny_packed, "--out", out, "--split", "test", "--experiments",
                               "HEPG2-02,HUVEC-02/Plate1", "--tta", "flips", "--batch-size",
                               "8", "--block-wells", "4", "--workers", "2", *extra],
                              capture_output=True, text=True, env=_env(str(shim)),
                              timeout=600)  # fmt: skip

    def load(out: Path) -> dict[str, np.ndarray]:
        root = zarr.open_group(out / "predictions.zarr", mode="r")
        return {f"{e}/{p}/{a}": root[e][p][a][:] for e in root.group_keys()
                for p in root[e].group_keys() for a in ("logits", "embeddings")}  # fmt: skip

    r = predict(tmp_path / "native")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert not calls.exists()
    r = predict(tmp_path / "inside", "--sif", sif)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "0 failed, 0 not run" in r.stdout, r.stdout
    started = calls.read_text().splitlines()
    assert len(started) == 2, started  # one container per worker
    for line in started:
        # what the worker reads and writes is bound; the code is the image's own cellblock
        binds = f"{tiny_packed},{tmp_path / 'inside'},{trained},{ROOT / '02_train/synthetic/tiny'}"
        assert line.startswith(f"exec --nv -B {binds} ") and f" {sif} python " in line, line
        plan = tmp_path / "inside/blockwise/plan.json"
        assert line.endswith(f"python -m cellblock.blockwise.worker --plan {plan} --setup "
                             f"{ROOT / '02_train/synthetic/tiny'}"), line  # fmt: skip
    native, inside = load(tmp_path / "native"), load(tmp_path / "inside")
    assert native.keys() == inside.keys() and len(native) == 10  # 5 plates
    for key, want in native.items():
        assert not np.isnan(want).all(), key
        assert np.array_equal(inside[key], want, equal_nan=True), key
