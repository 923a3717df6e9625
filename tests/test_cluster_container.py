"""containers/cell.def and containers/build.sh, without Apptainer.

The recipe's install step (its %post line calling scripts/install.sh) runs for real in a
fresh virtual environment, and its %test (the smoke test) then passes there; %files
names only files that exist; build.sh runs the build command a cluster would run, with
its options as a stand-in runtime receives them. The real builds and runs of the image
are tests/test_container_real.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cellblock import container
from cellblock.errors import UserError
from tests.conftest import ROOT

DEF = ROOT / "containers" / "cell.def"
BUILD = ROOT / "containers" / "build.sh"


def sections(text: str) -> dict[str, list[str]]:
    """``{"%post": [lines], ...}`` of a definition file (the header under ``""``)."""
    out: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        m = re.match(r"^(%\w+)\s*$", line)
        if m:
            current = m.group(1)
            out[current] = []
        else:
            out[current].append(line)
    return out


def body(lines: list[str]) -> list[str]:
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def arguments(parts: dict[str, list[str]]) -> dict[str, str]:
    """The build arguments of ``%arguments`` with their defaults."""
    return dict(ln.split("=", 1) for ln in body(parts.get("%arguments", [])))


def test_recipe_has_every_section_and_only_existing_files():
    parts = sections(DEF.read_text())
    for name in ("%labels", "%help", "%files", "%post", "%environment", "%runscript", "%test"):
        assert body(parts.get(name, [])), f"cell.def has no {name} section"
    header = dict(ln.split(":", 1) for ln in body(parts[""]))
    assert header["Bootstrap"].strip() == "docker"
    assert "python:3.11" in header["From"]  # the Python minor the stack is pinned and tested on
    defaults = arguments(parts)
    assert defaults == {"TORCH": "cuda", "BUILD_INPUTS": "containers/build-inputs",
                        "PIP_INDEX_URL": "", "PIP_EXTRA_INDEX_URL": ""}  # fmt: skip
    used = set(re.findall(r"\{\{ *(\w+) *\}\}", DEF.read_text()))
    assert used == set(defaults)  # every argument used, none without a default
    for line in body(parts["%files"]):
        line = re.sub(r"\{\{ *(\w+) *\}\}", lambda m: defaults[m.group(1)], line)
        source, dest = line.split()
        assert (ROOT / source).exists(), f"%files: {source} is not in the project"
        assert dest.startswith(("/opt/cellblock/", "/opt/build"))
    install = [ln for ln in body(parts["%post"]) if "scripts/install.sh" in ln]
    assert install == ["PYTHON=python3.11 /opt/cellblock/scripts/install.sh /opt/venv"]
    assert "cellblock.cluster.smoke" in " ".join(body(parts["%test"]))
    # --debootstrap's base: the same Debian release and Python as the docker image
    base = dict(ln.split(":", 1) for ln in body((ROOT / "containers/debootstrap.def").read_text()
                                                .splitlines()))  # fmt: skip
    assert base["Bootstrap"].strip() == "debootstrap" and base["OSVersion"].strip() == "bookworm"
    assert "python3.11" in base["Include"].split() and "bookworm" in header["From"]


FAKE = """#!/bin/sh
# apptainer build ... TARGET RECIPE: log the call and the recipe, write the target
echo "$PWD $*" > {log}
for a; do target=$recipe; recipe=$a; done
cp "$recipe" {log}.def
echo image > "$target"
"""


def _fake_runtime(tmp_path, name: str = "apptainer"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.txt"
    (bin_dir / name).write_text(FAKE.format(log=log))
    (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CELLBLOCK_APPTAINER"}
    return {**env, "PATH": f"{bin_dir}:/usr/bin:/bin"}, log


def test_build_script_runs_the_runtime_from_the_project_root(tmp_path):
    env, log = _fake_runtime(tmp_path)
    result = subprocess.run([BUILD, "--fakeroot", "--out", "images/cell.sif"], cwd=tmp_path,
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    # built under a temporary name, renamed into place
    assert log.read_text() == (
        f"{ROOT} build --fakeroot {tmp_path}/images/cell.sif.partial containers/cell.def\n"
    )
    assert (tmp_path / "images/cell.sif").read_text() == "image\n"
    assert not (tmp_path / "images/cell.sif.partial").exists()
    env["PATH"] = "/usr/bin:/bin"  # neither runtime
    missing = subprocess.run([BUILD], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "neither apptainer nor singularity" in missing.stderr
    assert "scripts/apptainer_local.sh install" in missing.stderr


def test_build_options_cpu_debootstrap_wheels_certificates(tmp_path):
    """--cpu, --debootstrap, --find-links, --ca-certs, --zstd as the runtime receives them;
    $CELLBLOCK_APPTAINER names the runtime."""
    env, log = _fake_runtime(tmp_path, "my-apptainer")
    env["CELLBLOCK_APPTAINER"] = "my-apptainer"
    wheels, certs = tmp_path / "wheels", tmp_path / "certs"
    wheels.mkdir()
    (wheels / "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl").write_text("w")
    certs.mkdir()
    (certs / "proxy.crt").write_text("PEM")
    (tmp_path / "site.pem").write_text("PEM2")
    result = subprocess.run([BUILD, "--cpu", "--debootstrap", "--mirror", "http://mirror/debian",
                             "--find-links", wheels, "--ca-certs", certs, "--ca-certs",
                             tmp_path / "site.pem", "--zstd", "--out", tmp_path / "c.sif"],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    call = log.read_text().split()
    assert call[:2] == [str(ROOT), "build"]
    assert "--mksquashfs-args" in call and "zstd" in call
    stage = call[call.index("--build-arg") + 1].removeprefix("BUILD_INPUTS=")
    assert "TORCH=cpu" in call and not any("PIP_EXTRA_INDEX_URL" in a for a in call)
    assert call[-2] == f"{tmp_path}/c.sif.partial"
    assert call[-1] == str(Path(stage).parent / "cell.def")
    assert not Path(stage).exists()  # the staged inputs are removed after the build
    recipe = Path(f"{log}.def").read_text()
    assert recipe.startswith("Bootstrap: debootstrap\nOSVersion: bookworm\n")
    assert "MirrorURL: http://mirror/debian\n" in recipe and "Bootstrap: docker" not in recipe
    assert sections(recipe)["%post"] == sections(DEF.read_text())["%post"]
    # --cpu alone: PyTorch's CPU index as pip's extra index
    result = subprocess.run([BUILD, "--cpu", "--out", tmp_path / "d.sif"], env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu" in log.read_text().split()
    bad = subprocess.run([BUILD, "--ca-certs", tmp_path / "nowhere"], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "no such file or folder" in bad.stderr


def test_runtime_from_cellblock_apptainer(tmp_path, monkeypatch):
    """$CELLBLOCK_APPTAINER names the runtime every launcher uses (a name or a path)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "my-apptainer").write_text("#!/bin/sh\n")
    (bin_dir / "my-apptainer").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv(container.RUNTIME_ENV, "my-apptainer")
    assert container.find_runtime() == "my-apptainer"  # a name stays a name
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(container.RUNTIME_ENV, "bin/my-apptainer")
    runtime = str(bin_dir / "my-apptainer")  # a path is made absolute (jobs start elsewhere)
    assert container.wrap(["python"], "/x.sif")[:2] == [runtime, "exec"]
    monkeypatch.setenv(container.RUNTIME_ENV, "gone")
    with pytest.raises(UserError, match=r"\$CELLBLOCK_APPTAINER gone: no such command"):
        container.find_runtime()
    monkeypatch.delenv(container.RUNTIME_ENV)
    with pytest.raises(UserError, match=r"apptainer_local\.sh install"):
        container.find_runtime()


@pytest.mark.slow
def test_recipe_install_step_runs_clean_in_a_fresh_venv(tmp_path):
    """cell.def's %post install line, then its %test, with /opt/* mapped to here (~2 min).

    pip's cache (and the local torch wheel) keep it quick; the stack is the one
    requirements.txt + constraints.txt pin, as in the image.
    """
    parts = sections(DEF.read_text())
    venv = tmp_path / "venv"

    def local(line: str) -> str:
        return line.replace("/opt/cellblock", str(ROOT)).replace("/opt/venv", str(venv))

    install = [local(ln) for ln in body(parts["%post"]) if "scripts/install.sh" in ln]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    result = subprocess.run(["bash", "-euc", "\n".join(install)], env=env, capture_output=True,
                            text=True, timeout=1200)  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert f"cellblock installed in {venv}" in result.stdout
    check = subprocess.run([venv / "bin" / "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    smoke = subprocess.run(["bash", "-euc", "\n".join(local(ln) for ln in body(parts["%test"]))],
                           env=env, capture_output=True, text=True, cwd=tmp_path,
                           timeout=600)  # fmt: skip
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert "smoke test passed" in smoke.stdout
    # The venv's cellblock is this checkout (editable), not a copy the tests never saw.
    where = subprocess.run([venv / "bin" / "python", "-c",
                            "import cellblock; print(cellblock.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert where.stdout.strip() == str(ROOT / "cellblock" / "__init__.py")
