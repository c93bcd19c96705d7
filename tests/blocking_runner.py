"""The command line in a process of its own that stops once a chunk is written, to be signalled there.

Tests that kill or terminate a scoring run need it to be at a known step when the signal
comes, not wherever a fast run happens to be. ``python blocking_runner.py READY N ARGS...``
runs ``clinical-mtl ARGS...`` and stops just after the N-th chunk handed to an
``AtomicTableWriter`` is written (the output's and the rejects' writes counted together:
the output's first is 1): there it creates the file READY and sleeps. If no signal ends it,
it exits with status :data:`NEVER_STOPPED` without finishing the run. Tests run it with
:func:`blocked_cli`; importing this module patches nothing.
"""

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

NEVER_STOPPED = 3
SLEEP_SECONDS = 120


def main(argv: list[str]) -> int:
    from clinical_mtl.cli import main as cli
    from clinical_mtl.data import writing

    ready, after_writes, *args = argv
    write = writing.AtomicTableWriter.write
    writes = 0

    def write_then_stop(self, rows):
        nonlocal writes
        write(self, rows)
        writes += 1
        if writes == int(after_writes):
            Path(ready).touch()
            time.sleep(SLEEP_SECONDS)  # a signal ends it here (SIGTERM unwinds through the run's cleanup)
            os._exit(NEVER_STOPPED)

    writing.AtomicTableWriter.write = write_then_stop
    return cli(args)


@contextmanager
def blocked_cli(args: list, ready: Path, after_writes: int = 1, timeout: float = 120):
    """Run ``clinical-mtl args`` in a new process; yield it once it has stopped after ``after_writes`` writes.

    Its output (stdout and stderr together, as text) is piped; it is killed
    on leaving if still running.

    Raises
    ------
    AssertionError
        With the process's output, if it ends or ``timeout`` passes before it stops.
    """
    process = subprocess.Popen([sys.executable, __file__, str(ready), str(after_writes), *map(str, args)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if not ready.exists():
            process.kill()
            raise AssertionError(f"the run did not stop after {after_writes} write(s):\n"
                                 f"{process.communicate()[0][-3000:]}")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
