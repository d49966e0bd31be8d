"""docs/reliability.md maps every reliability property to tests that exist.

The page's table rows are `| N | `tests/…/test_x.py::test_name` | what it shows |`; a
parametrized test is named by its function. Test names are read from the files with `ast`, so
nothing is imported or collected.
"""

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "reliability.md"
PROPERTIES = tuple(range(1, 19))
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`([^`]+)`\s*\|(.*)\|\s*$")


def rows() -> list[tuple[int, str, str]]:
    found = []
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            found.append((int(match[1]), match[2].strip(), match[3].strip()))
    return found


@cache
def defined_tests(path: str) -> frozenset[str]:
    """Every `def test_…` in a test file, at module level or in a class."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    )


def test_the_page_has_a_row_per_test_and_only_known_properties():
    found = rows()
    assert len(found) >= len(PROPERTIES)
    assert {number for number, _, _ in found} <= set(PROPERTIES)
    assert all(what for _, _, what in found), "every row says what its test shows"


def test_every_property_has_at_least_one_test():
    covered = {number for number, _, _ in rows()}
    assert [n for n in PROPERTIES if n not in covered] == []


def test_every_referenced_test_exists():
    missing = []
    for number, test_id in ((n, t) for n, t, _ in rows()):
        path, sep, name = test_id.partition("::")
        name = name.split("[", 1)[0]  # a parametrized id names its function
        if not sep or not path.startswith("tests/") or not path.endswith(".py"):
            missing.append((number, test_id, "not a file::test id"))
        elif not (ROOT / path).is_file():
            missing.append((number, test_id, "no such file"))
        elif name not in defined_tests(path):
            missing.append((number, test_id, "no such test"))
    assert missing == []
