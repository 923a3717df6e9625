"""The README's commands name scripts, flags and make targets that exist.

Every command in a ``bash`` block or an inline code span that runs a project script is
parsed; the script must exist, and every ``--flag`` given to it must appear in its
``--help``. Flags after a lone ``--`` belong to the script a wrapper passes them to.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
SCRIPT = re.compile(r"^((?:0[1-4]_\w+|scripts|containers)/[\w<>/.-]+\.(?:py|sh))$")
# wrapper script -> the script that receives the arguments after its lone "--"
PASSES_ON = {"scripts/submit_predict.py": "03_predict/predict_blockwise.py"}
SEPARATORS = {"&&", "||", ";", "|", "do", "done", "then"}
PLACEHOLDER = {"02_train/<dataset>/<setup>/": "02_train/synthetic/tiny/"}


def _commands(text: str) -> list[str]:
    """Lines of ``bash`` blocks (continuations joined, comments dropped, ``$VAR`` of an
    assignment in the block expanded) and code spans."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        variables: dict[str, str] = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line)
            if m := re.fullmatch(r'(\w+)="([^"]*)"', line.strip()):
                variables[m.group(1)] = m.group(2)
            for name, value in variables.items():
                line = re.sub(rf"\${name}\b", value, line)
            commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += [span.replace("\\|", "|") for span in re.findall(r"`([^`\n]+)`", prose)]
    return commands


def _run_directly(text: str) -> set[str]:
    """Scripts a README command starts with (run as ``scripts/x.py``, not ``python ...``)."""
    starts = set()
    for command in _commands(text):
        for part in re.split(r"&&|\|\||;|\$\(|\bdo\b", command):
            words = part.split()
            if words and SCRIPT.match(words[0]):
                starts.add(words[0])
    return starts


def _flags_by_script(text: str) -> dict[str, set[str]]:
    """``{script path: flags given to it}`` over every README command."""
    found: dict[str, set[str]] = defaultdict(set)
    for command in _commands(text):
        script = None
        for raw in command.split():
            token = raw.strip("()[],;'\"")
            if raw in SEPARATORS or raw.endswith(";"):
                script = None
            if SCRIPT.match(token):
                for placeholder, real in PLACEHOLDER.items():
                    token = token.replace(placeholder, real)
                script = token
                found[script]
            elif script and raw == "--":
                script = PASSES_ON.get(script)
                if script:
                    found[script]
            elif script and token.startswith("--") and len(token) > 2:
                found[script].add(re.split(r"[=|]", token)[0])
    return dict(found)


FLAGS = _flags_by_script(README.read_text())


def test_the_parser_sees_the_readme_commands():
    """The README walks through every stage: the parse must find their scripts and flags."""
    assert len(FLAGS) >= 15, sorted(FLAGS)
    assert {"--run", "--workers", "--cluster-option"} <= FLAGS["03_predict/predict_blockwise.py"]
    assert "--init-from" in FLAGS["scripts/submit_train.py"]
    assert "--set" in FLAGS["02_train/synthetic/tiny/train.py"]
    assert {"--gpus", "--mem"} <= FLAGS["scripts/submit_train.py"]  # from $GPU


@pytest.mark.parametrize("script", sorted(FLAGS))
def test_readme_script_and_flags_exist(script):
    path = ROOT / script
    assert path.is_file(), f"README names {script}, which does not exist"
    if path.suffix != ".py":
        return
    r = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    # an option line of argparse's help: "  --flag ARG" or "  -f ARG, --flag ARG"
    options = re.findall(r"^  (-.*?)(?:  |$)", r.stdout, flags=re.M)
    defined = {f.split()[0] for line in options for f in line.split(", ")}
    unknown = sorted(FLAGS[script] - defined)
    assert not unknown, f"README gives {script} flags its --help lacks: {unknown}"


def test_scripts_run_directly_are_executable():
    direct = _run_directly(README.read_text())
    assert "scripts/submit_train.py" in direct
    for script in sorted(direct):
        if "<" not in script:
            assert os.access(ROOT / script, os.X_OK), f"README runs {script}, not executable"


def test_readme_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    commands = " ".join(_commands(README.read_text()))
    used = set(re.findall(r"\bmake ([a-z][\w-]*)", commands))
    assert used and used <= targets, sorted(used - targets)
