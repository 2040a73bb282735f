"""`async with` support and a use-after-close guard shared by the processors."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Lifecycle"]


class Lifecycle:
    """`async with` support and a guard against use after `aclose`."""

    _closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")

    async def aclose(self) -> None:
        self._closed = True

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
