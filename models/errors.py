"""The learning core's errors: one root, so a caller can catch everything the core refuses in one place."""

from __future__ import annotations

from typing import Any


def rebuilt(cls: type[BaseException], args: tuple, state: dict[str, Any]) -> BaseException:
    """An error as it was pickled, without running its ``__init__`` (whose arguments are not its ``args``)."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class CoreError(Exception):
    """Root of the errors the learning core raises for input it refuses. Each crosses a process boundary
    (pickle) as it is: a shard in another process refuses what the single process refuses, with the same
    message and fields."""

    def __reduce__(self) -> tuple[Any, ...]:
        return rebuilt, (type(self), self.args, self.__dict__)


class InvalidConfig(CoreError, ValueError):
    """A stream configuration that breaks a rule; the message names the field and the value, ``field`` the
    field (None for a rule about the whole config)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidState(CoreError, ValueError):
    """A state dict or weights that do not fit the stream (names, shapes, dtype, values, version)."""


class InvalidObservation(CoreError, ValueError):
    """An observation that does not fit its stream; ``index`` is its position in the batch."""

    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(f"observation {index}: {field}: {message}")
        self.index, self.field, self.message = index, field, message


class StreamNotFound(CoreError, KeyError):
    def __init__(self, stream_id: str) -> None:
        super().__init__(stream_id)
        self.stream_id = stream_id

    def __str__(self) -> str:
        return f"stream {self.stream_id!r} not found"


class StreamExists(CoreError, ValueError):
    def __init__(self, stream_id: str) -> None:
        super().__init__(f"stream {stream_id!r} already exists")
        self.stream_id = stream_id
