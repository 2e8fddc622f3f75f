"""A containerd logging binary: stamps each line a task writes and appends it to a log file.

containerd's shim starts it for a task created with `--log-uri binary:///<python>?<this
file>=<log dir>` (the mechanism `faasd collect` uses): the task's stdout is fd 3, stderr
fd 4, and closing fd 5 tells the shim we are ready, after which the task starts. The shim
passes only CONTAINER_ID and CONTAINER_NAMESPACE in the environment. Each line becomes one
JSON object `{"time": RFC 3339, "stream": "stdout"|"stderr", "log": text}` in
`<log dir>/<CONTAINER_ID>.log`; past MAX_BYTES the file is rotated to `.log.1`.

Run as a script by the shim, so it imports nothing from the package. It must outlive its
task's output: if it died, the task would get EPIPE on its next write. So every write
error is swallowed and the pipes are drained until both reach end of file.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import sys
from datetime import UTC, datetime
from typing import TextIO

STDOUT_FD, STDERR_FD, READY_FD = 3, 4, 5
MAX_BYTES = 8 << 20
MAX_LINE = 64 << 10  # a longer line is cut into pieces of this size


class LogFile:
    """The append-only, size-rotated log file; writes never raise."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: TextIO | None = None
        self._open()

    def _open(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as we do
        except OSError:
            self.file = None

    def write(self, stream: str, text: str) -> None:
        if self.file is None:
            return
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record = json.dumps({"time": stamp, "stream": stream, "log": text}, ensure_ascii=False)
        try:
            self.file.write(record + "\n")
            self.file.flush()
            if self.file.tell() > MAX_BYTES:
                self.file.close()
                os.replace(self.path, self.path + ".1")
                self._open()
        except (OSError, ValueError):
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None


def pump(log: LogFile) -> None:
    """Copy both pipes into `log` line by line until each reaches end of file."""
    selector = selectors.DefaultSelector()
    pending: dict[int, bytes] = {}
    for fd, stream in ((STDOUT_FD, "stdout"), (STDERR_FD, "stderr")):
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ, stream)
        pending[fd] = b""
    while selector.get_map():
        for key, _ in selector.select():
            fd, stream = key.fd, str(key.data)
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            buffer = pending[fd] + data
            *lines, rest = buffer.split(b"\n")
            while len(rest) > MAX_LINE:
                lines.append(rest[:MAX_LINE])
                rest = rest[MAX_LINE:]
            if not data:
                if rest:
                    lines.append(rest)
                rest = b""
                selector.unregister(fd)
                os.close(fd)
            pending[fd] = rest
            for line in lines:
                log.write(stream, line.decode("utf-8", "replace"))


def main(argv: list[str]) -> int:
    log_dir = argv[0]
    container = os.environ.get("CONTAINER_ID", "unknown")
    log = LogFile(os.path.join(log_dir, f"{container}.log"))
    os.close(READY_FD)
    pump(log)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
