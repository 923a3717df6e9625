"""`make demo` and `make test` install what they need, in either order, on a fresh machine.

The demo's step 8 renders a plate in headless Debian chromium, so `make demo` installs
the browser first (`scripts/apt_install.sh browser`), and that step is idempotent: a
second run installs nothing. The apt script is driven here with stand-ins for
``dpkg-query``, ``apt-get`` and ``sudo`` that record their calls, and for real on this
machine where the packages are installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.conftest import ROOT

APT_INSTALL = ROOT / "scripts" / "apt_install.sh"
BROWSER = ("chromium", "chromium-driver")


def dry_run(target: str, tmp_path: Path) -> list[str]:
    """``make -n TARGET`` as on a machine without the venv: the commands, in order.

    Args:
        target: The make target.
        tmp_path: Where the (absent) venv would go.
    """
    assert shutil.which("make"), "make is not installed (the README's two commands need it)"
    venv = tmp_path / "fresh-venv"
    r = subprocess.run(["make", "-n", target, f"VENV={venv}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def position(lines: list[str], text: str) -> int:
    found = [i for i, line in enumerate(lines) if text in line]
    assert found, f"{text!r} not in:\n" + "\n".join(lines)
    return found[0]


def test_make_demo_installs_venv_and_browser_before_the_demo(tmp_path):
    lines = dry_run("demo", tmp_path)
    demo = position(lines, "scripts/demo.sh")
    assert position(lines, "scripts/install.sh") < demo
    assert position(lines, "scripts/apt_install.sh browser") < demo


def test_make_test_installs_the_system_packages_before_pytest(tmp_path):
    lines = dry_run("test", tmp_path)
    pytest_at = position(lines, "-m pytest")
    assert position(lines, "scripts/install.sh") < pytest_at
    assert position(lines, "scripts/apt_install.sh all") < pytest_at


def test_demo_script_checks_for_the_browser_before_step_1(tmp_path):
    text = (ROOT / "scripts" / "demo.sh").read_text()
    assert text.index("/usr/bin/chromium") < text.index("== 1/")


# ---------------------------------------------------------------- apt_install.sh


def fake_tools(folder: Path, installed: set[str], failing_installs: int = 0) -> Path:
    """Stand-ins for dpkg-query, apt-get and sudo; every call is appended to calls.log.

    Args:
        folder: Where to put them (``folder/bin``) and the log.
        installed: Packages dpkg-query reports as installed.
        failing_installs: How many ``apt-get install`` calls fail first (stale lists).
    """
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    log = folder / "calls.log"
    scripts = {
        # dpkg-query -W -f='${Status}' PKG
        "dpkg-query": f"""case " {" ".join(sorted(installed))} " in
  *" ${{@: -1}} "*) printf 'install ok installed' ;;
  *) exit 1 ;;
esac""",
        "apt-get": f"""echo "apt-get $*" >> {log}
failed=$(cat {folder}/failures 2>/dev/null | wc -l)
if [ "$1" = install ] && [ "$failed" -lt {failing_installs} ]; then
  echo x >> {folder}/failures; exit 100
fi""",
        "sudo": f'echo "sudo $*" >> {log}; exec "$@"',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/usr/bin/env bash\n{body}\n")
        path.chmod(0o755)
    return bin_dir


def apt_install(folder: Path, *groups: str, path: str | None = None) -> subprocess.CompletedProcess:
    """Run scripts/apt_install.sh GROUPS with ``path`` first on PATH and a private stamp.

    Args:
        folder: Holds the update stamp.
        groups: Its arguments.
        path: A folder of stand-ins to put first on PATH.
    """
    env = {**os.environ, "CELLBLOCK_APT_STAMP": str(folder / "update-stamp")}
    if path:
        env["PATH"] = f"{path}:{env['PATH']}"
    return subprocess.run([str(APT_INSTALL), *groups], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def calls(folder: Path) -> list[str]:
    """The apt-get calls recorded in ``folder/calls.log`` (through sudo or not)."""
    log = folder / "calls.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line.startswith("apt-get")]


def test_apt_install_with_everything_present_installs_nothing(tmp_path):
    tools = fake_tools(tmp_path, installed=set(BROWSER))
    r = apt_install(tmp_path, "browser", path=tools)
    assert r.returncode == 0 and r.stdout == r.stderr == "", r.stderr
    assert calls(tmp_path) == []


def test_apt_install_installs_only_the_missing_and_updates_once(tmp_path):
    tools = fake_tools(tmp_path, installed={"chromium"})
    r = apt_install(tmp_path, "browser", path=tools)
    assert r.returncode == 0, r.stderr
    assert "installing chromium-driver" in r.stderr
    install = "apt-get install -y -qq --no-install-recommends chromium-driver"
    assert calls(tmp_path) == ["apt-get update -qq", install]
    apt_install(tmp_path, "browser", path=tools)  # the lists are fresh now: no second update
    assert calls(tmp_path) == ["apt-get update -qq", install, install]


def test_apt_install_updates_again_when_the_lists_are_stale(tmp_path):
    tools = fake_tools(tmp_path, installed=set(), failing_installs=1)
    (tmp_path / "update-stamp").touch()  # updated long ago
    r = apt_install(tmp_path, "browser", path=tools)
    assert r.returncode == 0, r.stderr
    install = "apt-get install -y -qq --no-install-recommends chromium chromium-driver"
    assert calls(tmp_path) == [install, "apt-get update -qq", install]


def test_apt_install_refuses_an_unknown_group(tmp_path):
    r = apt_install(tmp_path, "browsers")
    assert r.returncode == 2 and "unknown group 'browsers'" in r.stderr


def _installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                       text=True)  # fmt: skip
    return r.returncode == 0 and "install ok installed" in r.stdout


def test_apt_install_browser_on_this_machine_is_idempotent(tmp_path):
    # `make test` installs them first (make system); a plain pytest on a fresh machine
    # fails here with the command to run, rather than skipping the check
    assert shutil.which("dpkg-query"), "scripts/apt_install.sh needs Debian's dpkg"
    assert all(map(_installed, BROWSER)), "chromium is not installed yet: run `make browser`"
    # Real dpkg-query; apt-get and sudo are stand-ins that record (and fail) any call.
    tools = fake_tools(tmp_path, installed=set())
    (tools / "dpkg-query").unlink()
    start = time.monotonic()
    for _ in range(2):
        r = apt_install(tmp_path, "browser", path=tools)
        assert r.returncode == 0 and r.stderr == "", r.stderr
    assert time.monotonic() - start < 10
    assert calls(tmp_path) == [], "installed packages were installed again"
