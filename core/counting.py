"""Counters that fold: a run's table lines, summed batch by batch into the run's artifact."""

from typing import Any, ClassVar, Self

from pydantic import BaseModel


class Tally(BaseModel):
    """A table line: the fields named in `counters` count, the other fields label the line."""

    counters: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        wrong = [
            name
            for name in cls.counters
            if name not in cls.model_fields or cls.model_fields[name].annotation is not int
        ]
        if wrong:
            raise TypeError(f"{cls.__name__}.counters names no int field: {', '.join(wrong)}")

    def add(self, other: Self) -> None:
        """Fold another batch's line into this one; labels stay as they are."""
        for name in self.counters:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def bump(self, counter: str, n: int = 1) -> None:
        """Add n to one counter (a column enum's member, checked against `counters`)."""
        if counter not in self.counters:
            raise KeyError(f"{type(self).__name__} has no counter {counter!r}")
        setattr(self, counter, getattr(self, counter) + n)

    def count_of(self, counter: str) -> int:
        """One counter's value."""
        if counter not in self.counters:
            raise KeyError(f"{type(self).__name__} has no counter {counter!r}")
        value: int = getattr(self, counter)
        return value
