"""prefect.yaml, read for `campaign-pipeline serve` and `prefect setup`: one source of truth.

Only the shapes this project's prefect.yaml uses are accepted (cron schedules with a time zone,
a concurrency limit with a collision strategy, one work pool); anything else is an error that
names the deployment and the field, rather than a deployment that silently differs from what
`prefect deploy` would create. No Prefect import here, so the CLI stays quick to start.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.settings import PROJECT_ROOT

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


class PrefectYamlError(ValueError):
    """prefect.yaml is missing, unreadable, or uses a shape this project does not support."""


@dataclass(frozen=True)
class CronSpec:
    """One cron schedule, always with an explicit time zone."""

    cron: str
    timezone: str
    active: bool = True
    slug: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentSpec:
    """One entry of `deployments:`."""

    name: str
    flow_name: str
    entrypoint: str
    description: str
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    schedules: tuple[CronSpec, ...]
    concurrency_limit: int
    collision_strategy: str
    work_pool: str

    @property
    def path(self) -> str:
        """The flow's file, relative to the checkout."""
        return self.entrypoint.rpartition(":")[0]

    @property
    def function(self) -> str:
        """The flow function's name in that file."""
        return self.entrypoint.rpartition(":")[2]

    @property
    def module(self) -> str:
        """The flow's module: `flows/x.py` -> `flows.x`."""
        return self.path.removesuffix(".py").replace("/", ".")

    @property
    def full_name(self) -> str:
        """`flow/deployment`, as `prefect deployment run` and `run_deployment` want it."""
        return f"{self.flow_name}/{self.name}"


def _field(entry: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind):
        raise PrefectYamlError(f"{where}: `{key}` must be a {kind.__name__}, not {value!r}")
    return value


def _schedule(raw: Any, where: str) -> CronSpec:
    if not isinstance(raw, dict) or set(raw) - {"cron", "timezone", "active", "slug", "parameters"}:
        raise PrefectYamlError(
            f"{where}: a schedule has `cron`, `timezone` and optionally `active`, `slug`,"
            f" `parameters`; got {raw!r}"
        )
    return CronSpec(
        cron=_field(raw, "cron", str, where),
        timezone=_field(raw, "timezone", str, where),
        active=raw.get("active", True),
        slug=raw.get("slug"),
        parameters=dict(raw.get("parameters") or {}),
    )


def _deployment(entry: Any, index: int) -> DeploymentSpec:
    if not isinstance(entry, dict):
        raise PrefectYamlError(f"deployments[{index}] must be a mapping")
    where = f"deployment {entry.get('name') or index!r}"
    limit = _field(entry, "concurrency_limit", dict, where)
    pool = _field(entry, "work_pool", dict, where)
    schedules = _field(entry, "schedules", list, where)
    entrypoint = _field(entry, "entrypoint", str, where)
    path, _, function = entrypoint.rpartition(":")
    if not path.endswith(".py") or not function.isidentifier():
        raise PrefectYamlError(f"{where}: entrypoint must be path/to/file.py:function")
    return DeploymentSpec(
        name=_field(entry, "name", str, where),
        flow_name=_field(entry, "flow_name", str, where),
        entrypoint=entrypoint,
        description=" ".join(str(entry.get("description") or "").split()),
        tags=tuple(_field(entry, "tags", list, where)),
        parameters=dict(entry.get("parameters") or {}),
        schedules=tuple(_schedule(raw, where) for raw in schedules),
        concurrency_limit=_field(limit, "limit", int, f"{where}, concurrency_limit"),
        collision_strategy=_field(limit, "collision_strategy", str, f"{where}, concurrency_limit"),
        work_pool=_field(pool, "name", str, f"{where}, work_pool"),
    )


def read_deployments(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    """Every deployment of prefect.yaml, in file order."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PrefectYamlError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise PrefectYamlError(f"{path}: not valid YAML: {exc}") from None
    entries = document.get("deployments") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise PrefectYamlError(f"{path}: no `deployments:` list")
    specs = [_deployment(entry, index) for index, entry in enumerate(entries)]
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise PrefectYamlError(f"{path}: deployment names repeat: {names}")
    return specs


def work_pool_name(specs: list[DeploymentSpec]) -> str:
    """The one work pool every deployment runs on."""
    pools = sorted({spec.work_pool for spec in specs})
    if len(pools) != 1:
        raise PrefectYamlError(f"the deployments use {len(pools)} work pools ({pools}); expected 1")
    return pools[0]
