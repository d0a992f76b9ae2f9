"""Wait on a condition with a deadline (never sleep a fixed time to "let it settle")."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], timeout: float = 10.0, what: str = "condition", step: float = 0.05
) -> T:
    """Return ``check()``'s first truthy value, or raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(step)


def wait_for_line(lines: list[str], fragment: str, timeout: float = 20.0, who: str = "the program") -> None:
    """Wait until one of ``lines`` (a process's log, filled by a reader thread) contains ``fragment``."""
    try:
        wait_until(lambda: any(fragment in line for line in lines), timeout, f"{who} logging {fragment!r}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}; its log ends:\n" + "\n".join(lines[-60:])) from None
