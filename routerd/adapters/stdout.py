"""The stdout sink: one JSON line per published state (the default with no config)."""

from __future__ import annotations

import sys
from typing import TextIO

from routerd.core.wire import PrefixState


class StdoutSink:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    async def start(self) -> None:
        return None

    def publish(self, msg: PrefixState) -> None:
        self.stream.write(msg.to_json().decode() + "\n")
        self.stream.flush()

    async def stop(self) -> None:
        return None
