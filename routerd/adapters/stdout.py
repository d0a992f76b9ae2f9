"""The stdout sink: one JSON line per published state (the default with no config)."""

from __future__ import annotations

import sys
from typing import TextIO

from routerd.adapters.delivery import Delivery
from routerd.core.wire import PrefixState


class StdoutSink:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.delivery = Delivery("stdout")

    async def start(self) -> None:
        return None

    def publish(self, msg: PrefixState) -> None:
        try:
            self.stream.write(msg.to_json().decode() + "\n")
            self.stream.flush()
        except OSError as e:
            self.delivery.failed(f"cannot write to stdout: {e.strerror or e}")
            raise
        self.delivery.succeeded()

    def queued(self) -> int:
        return 0

    async def stop(self) -> None:
        return None
