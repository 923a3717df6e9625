"""The library's call shape: few positional arguments.

Read from the source with ``ast``, nothing is imported. In every module of
``cellblock/``, no function has more than ``MAX_POSITIONAL`` positional parameters
(``self`` and ``cls`` of methods not counted): beyond that, arguments are keyword-only
or travel in a request object.

Module and function lengths are not capped: a module holds one concept however long
that takes (cohesion over line counts; the caps split concepts to fit). What keeps the
house in order is the import graph (``test_import_graph.py``) and the light imports
(``test_light_imports.py``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "cellblock"
MAX_POSITIONAL = 6

# Not yet in shape, each with its reason; remove an entry when its function is mended.
KNOWN: set[str] = set()


def _positional(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> int:
    """Positional parameters of ``node``, less ``self``/``cls`` of a method."""
    names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
    if method and names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names)


def _functions(tree: ast.AST):
    """``(node, is_method)`` for every function of ``tree``, nested ones too."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_class = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield child, in_class
                stack.append((child, False))
            else:
                stack.append((child, isinstance(child, ast.ClassDef)))


def shape_problems(source: str, name: str) -> list[str]:
    """What breaks the rules in one module's ``source`` (``name`` prefixes each line).

    Args:
        source: The module's text.
        name: Its path, as it appears in the messages and in ``KNOWN``.
    """
    problems = []
    for node, method in _functions(ast.parse(source)):
        where = f"{name}:{node.name}"
        positional = _positional(node, method)
        if positional > MAX_POSITIONAL:
            problems.append(
                f"{where} (line {node.lineno}): {positional} positional parameters "
                f"(at most {MAX_POSITIONAL}: make the rest keyword-only)"
            )
    return problems


def _modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_the_library_is_in_shape():
    problems = []
    for path in _modules():
        name = path.relative_to(ROOT.parent).as_posix()
        found = shape_problems(path.read_text(), name)
        problems += [p for p in found if p.split(" ")[0].rstrip(":") not in KNOWN]
    assert not problems, "\n".join(problems)


def test_known_exceptions_still_exist():
    """An entry of ``KNOWN`` whose function is mended (or gone) must be removed."""
    stale = []
    for entry in sorted(KNOWN):
        file = entry.split(":")[0]
        found = shape_problems((ROOT.parent / file).read_text(), file)
        if not any(p.startswith(f"{entry} ") for p in found):
            stale.append(entry)
    assert not stale, f"in shape now, remove from KNOWN: {stale}"


def _function(name: str, lines: int, params: str = "", doc: str = "Short.", indent: str = ""):
    """Source of a function ``lines`` long, indented by ``indent``."""
    body = [f"def {name}({params}):", f'    """{doc}"""', *["    x = 1"] * (lines - 2)]
    return "".join(f"{indent}{line}\n" for line in body)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (_function("ok", 60, "a, b, c, d, e, f, *, g"), []),
        (_function("long", 400), []),  # length is not a rule
        (_function("many", 3, "a, b, c, d, e, f, g"), ["m.py:many (line 1): 7 positional"]),
        (_function("posonly", 3, "a, b, c, d, /, e, f, g=1"), ["m.py:posonly (line 1): 7 posi"]),
        ("class C:\n" + _function("method", 3, "self, a, b, c, d, e, f", indent="    "), []),
        (
            "class C:\n" + _function("method", 3, "self, a, b, c, d, e, f, g", indent="    "),
            ["m.py:method (line 2): 7 positional"],
        ),
        (
            _function("outer", 3) + _function("inner", 3, "a, b, c, d, e, f, g", indent="    "),
            ["m.py:inner (line 4): 7 positional"],
        ),
        ("x = 1\n" * 3001, []),
    ],
)
def test_the_checker_catches_what_it_should(source, expected):
    found = shape_problems(source, "m.py")
    assert len(found) == len(expected), found
    for problem, start in zip(found, expected, strict=True):
        assert problem.startswith(start), problem
