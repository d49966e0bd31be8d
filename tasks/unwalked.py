"""Task arguments Prefect should pass as they are, without walking them for futures."""

from typing import TypeVar, cast

from prefect.utilities.annotations import quote

T = TypeVar("T")


def unwalked(value: T) -> T:
    """`value` handed to a task untouched: walking a batch of leads for futures costs 1 ms a lead.

    Typed as the value itself, which is what the task receives, so the task's signature is
    checked at the call (a bare `quote` matches none of `Task.__call__`'s overloads).
    """
    return cast(T, quote(value))
