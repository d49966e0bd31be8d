"""The pull step of prefect.yaml: every run starts in the checkout this project runs from.

A worker runs each flow run in a process that first executes the deployment's pull steps.
Prefect's own `set_working_directory` needs a directory, and neither usual choice fits well:

- `{{ $PWD }}` is rendered by `prefect deploy` (environment placeholders are filled in wherever
  Prefect templates, the pull section included), so the deployment stores the absolute path of
  the deploying shell's PWD variable: right when deploying by hand from the repo root, wrong
  when PWD and the real directory differ (`make -C`, a script's subprocess), and stale once the
  checkout moves or when CI deploys from a checkout elsewhere.
- A relative directory resolves against the run's workspace, which for a process worker is a
  fresh temporary directory.

This step needs no recorded path: it enters the checkout the worker's Python imports this
package from, which the editable install (`./dev`, `pip install -e .`) points at, wherever the
checkout lives and whichever directory the worker was started in. The entrypoints of
prefect.yaml, the `.env` file and `prefect.toml` (the result storage) then resolve as for the
CLI. A worker whose Python lacks the project fails the run with an ImportError naming
`deployments`, the same environment the flows need anyway.
"""

import os

from core.settings import PROJECT_ROOT


def enter_checkout() -> dict[str, str]:
    """Change into the checkout; returns its path as `directory`, like set_working_directory."""
    if not (PROJECT_ROOT / "prefect.yaml").is_file():
        raise RuntimeError(
            f"campaign-pipeline is imported from {PROJECT_ROOT}, which is not a checkout (no"
            " prefect.yaml): install the project editable (`./dev` or `pip install -e .`) into"
            " the Python environment that runs the worker"
        )
    os.chdir(PROJECT_ROOT)
    return {"directory": str(PROJECT_ROOT)}
