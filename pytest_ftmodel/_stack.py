"""Per-session defaults that nested pytest sessions (pytester) push and pop without clobbering."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class SessionStack(Generic[T]):
    """The value of the innermost running pytest session, else the default given at creation."""

    def __init__(self, default: T) -> None:
        self._values: list[T] = [default]

    def current(self) -> T:
        return self._values[-1]

    def push(self, value: T) -> T:
        self._values.append(value)
        return value

    def pop(self) -> None:
        if len(self._values) > 1:
            self._values.pop()
