"""Run a benchmark server with a count switched on by SIGUSR1 and written out by SIGUSR2.

Run by ``benchmarks.bytecodes``::

    python -m benchmarks.traced_server bytecodes|garbage OUT MODULE [SERVER ARGUMENTS...]

``bytecodes``: cProfile with a clock that counts the bytecodes the interpreter executes
(``sys.settrace`` with ``f_trace_opcodes``), so that a function's "time" is its bytecodes: exact
and the same on a busy machine as on an idle one. ``garbage``: every object the cyclic garbage
collector frees in between, by type (``gc.DEBUG_SAVEALL``). OUT gets JSON.
"""

from __future__ import annotations

import cProfile
import gc
import json
import pstats
import runpy
import signal
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["main"]


class BytecodeCounter:
    """Counts bytecodes per Python function between :meth:`start` and :meth:`stop`."""

    def __init__(self) -> None:
        self.executed = 0
        self.profile = cProfile.Profile(timer=self.clock, timeunit=1.0)  # type: ignore[call-arg]

    def clock(self) -> int:
        """The profiler's clock: bytecodes executed so far."""
        return self.executed

    def trace_call(self, frame: FrameType, event: str, arg: Any) -> Any:
        """The global trace function: count every bytecode of every new frame."""
        frame.f_trace_opcodes = True
        return self.trace_opcode

    def trace_opcode(self, frame: FrameType, event: str, arg: Any) -> Any:
        """The local trace function."""
        if event == "opcode":
            self.executed += 1
        return self.trace_opcode

    def start(self) -> None:
        """Start counting (frames already running, such as the event loop's, are not traced)."""
        sys.settrace(self.trace_call)
        self.profile.enable()

    def stop(self, out: Path) -> None:
        """Stop, and write ``{function: [calls, own bytecodes, with callees]}``."""
        self.profile.disable()
        sys.settrace(None)
        stats = pstats.Stats(self.profile).stats  # type: ignore[attr-defined]
        table = {
            f"{filename}:{line}:{name}": [calls, own, cumulative]
            for (filename, line, name), (_, calls, own, cumulative, _) in stats.items()
        }
        out.write_text(json.dumps(table))


class GarbageCounter:
    """Counts, by type, the objects that only the cyclic garbage collector frees."""

    def start(self) -> None:
        """Collect what is there already, then keep whatever the collector finds from now on."""
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)

    def stop(self, out: Path) -> None:
        """Collect, and write ``{type name: count}``."""
        gc.collect()
        counts = Counter(type(found).__qualname__ for found in gc.garbage)
        gc.set_debug(0)
        gc.garbage.clear()
        out.write_text(json.dumps(dict(counts)))


def main() -> None:
    """Install the signal handlers, then run the server module as ``__main__``."""
    mode, out, module, *arguments = sys.argv[1:]
    counter = BytecodeCounter() if mode == "bytecodes" else GarbageCounter()
    signal.signal(signal.SIGUSR1, lambda signum, frame: counter.start())
    signal.signal(signal.SIGUSR2, lambda signum, frame: counter.stop(Path(out)))
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
