"""The benchmarks still import, and every name they patch or find in the product code exists.

A rename in tasks/, db/ or core/ used to break a benchmark silently (its probe skipped what it
could not find, or failed only in a 10-minute run); here it fails the suite, and
benchmarks/dependencies.py is the one place to fix.
"""

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import benchmarks
from benchmarks import dependencies as deps
from benchmarks.generation_profile import INCLUSIVE

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    module.name for module in pkgutil.walk_packages(benchmarks.__path__, prefix="benchmarks.")
)


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_module_imports(name):
    importlib.import_module(name)


def test_every_hook_exists_and_is_callable():
    hooks = [
        deps.GENERATION_CLAIM,
        deps.GENERATION_RECORD,
        deps.GENERATION_HOLD,
        deps.GENERATION_TRANSACTION,
        deps.GENERATION_PER_LEAD,
        deps.GENERATION_CACHE,
        deps.GENERATION_CLIENT,
        deps.HAND_OVER_QUERY,
        deps.LANE_RUN,
        *(hook for hook, _, _ in deps.DELIVERY_TIMED),
    ]
    for hook in hooks:
        assert callable(hook.original()), hook


def test_statement_fragments_the_delivery_probe_looks_for_are_in_the_sql():
    for statement, fragment in deps.SQL_FRAGMENTS:
        assert fragment in str(statement)


def test_the_smtp_server_keeps_the_private_counter_the_benchmark_reads():
    server_class, attributes = deps.SMTP_SERVER_ATTRIBUTES
    server = server_class()
    for attribute in attributes:
        assert hasattr(server, attribute), attribute


def test_profiled_functions_are_named_as_py_spy_names_them():
    project = [marker for marker, _ in deps.PROFILED]
    assert "prepare (core/generation/generate.py" in project
    for marker in project:
        name, _, path = marker.partition(" (")
        assert (ROOT / path).is_file(), marker
        assert f"def {name.rpartition('.')[2]}(" in (ROOT / path).read_text(), marker
    assert len({label for _, label in INCLUSIVE}) == len(INCLUSIVE)


def test_the_naive_baseline_child_never_imports_prefect():
    code = (
        "import sys, benchmarks.baseline, benchmarks.baseline_naive;"
        " sys.exit('prefect' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_bare_loop_over_the_logins_lays_out_its_lanes_as_the_flow_does():
    from benchmarks.delivery_children import login_lanes

    lanes = login_lanes(100, 20, 20)  # one lane per mailbox, as many as connections
    assert [mailbox for mailbox, _ in lanes] == list(range(20))
    assert lanes[3][1] == list(range(3, 100, 20))
    split = login_lanes(10, 1, 4)  # spare connections split a mailbox (split_ungapped)
    assert [mailbox for mailbox, _ in split] == [0, 0, 0, 0]
    assert sorted(i for _, sends in split for i in sends) == list(range(10))
