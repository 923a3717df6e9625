"""containers/cell.def and containers/build.sh, without Apptainer (none is installable here).

The recipe's install step (its %post line calling scripts/install.sh) runs for real in a
fresh virtual environment, and its %test (the smoke test) then passes there; %files
names only files that exist; build.sh runs the build command a cluster would run.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

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


def test_recipe_has_every_section_and_only_existing_files():
    parts = sections(DEF.read_text())
    for name in ("%labels", "%help", "%files", "%post", "%environment", "%runscript", "%test"):
        assert body(parts.get(name, [])), f"cell.def has no {name} section"
    header = dict(ln.split(":", 1) for ln in body(parts[""]))
    assert header["Bootstrap"].strip() == "docker"
    assert "python:3.11" in header["From"]  # the Python minor the stack is pinned and tested on
    for line in body(parts["%files"]):
        source, dest = line.split()
        assert (ROOT / source).exists(), f"%files: {source} is not in the project"
        assert dest.startswith("/opt/cellblock/")
    install = [ln for ln in body(parts["%post"]) if "scripts/install.sh" in ln]
    assert install == ["PYTHON=python3.11 /opt/cellblock/scripts/install.sh /opt/venv"]
    assert "cellblock.cluster.smoke" in " ".join(body(parts["%test"]))


def test_build_script_runs_the_runtime_from_the_project_root(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    (bin_dir / "apptainer").write_text(f'#!/bin/sh\necho "$PWD $*" > {log}\n')
    (bin_dir / "apptainer").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run([BUILD, "--fakeroot", "--out", "images/cell.sif"], cwd=tmp_path,
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert log.read_text() == (
        f"{ROOT} build --fakeroot {tmp_path}/images/cell.sif containers/cell.def\n"
    )
    env["PATH"] = "/usr/bin:/bin"  # neither runtime
    missing = subprocess.run([BUILD], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "neither apptainer nor singularity" in missing.stderr


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
