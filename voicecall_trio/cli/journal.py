"""``tail``, which reads ``calls.jsonl`` directly, so it works while the daemon is down (with
a follower for ``--follow``); ``latency``, which does the same, is ``cli/latency.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .connect import journal_path
from .outcome import EXIT_OK
from .render import journal_line

if TYPE_CHECKING:  # pathlib costs the CLI's start-up 4 ms; only tail needs it, when it runs
    from pathlib import Path

# how often ``tail --follow`` looks at the file: a person is reading, not a program
FOLLOW_INTERVAL_S = 0.5


class JournalFollower:
    """New complete lines of a journal since the last look; survives rotation.

    Starts at the file's current end. ``poll`` never waits: the caller decides how often to
    look. A rotation (the file got shorter) starts again from the top of the new file; a
    partial last line waits for its newline.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.position = path.stat().st_size if path.exists() else 0

    def poll(self) -> list[bytes]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.position:  # rotated
            self.position = 0
        if size <= self.position:
            return []
        with open(self.path, "rb") as file:
            file.seek(self.position)
            chunk = file.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.position += len(complete)
        return [line for line in complete.splitlines() if line.strip()]


def tail(*, lines: int = 20, follow: bool = False, json: bool = False,
         config: str | None = None) -> int:
    """Print the last lines of calls.jsonl (works while the daemon is down).

    Parameters
    ----------
    lines
        How many lines to print first.
    follow
        Keep printing new lines as they are written (Ctrl-C stops).
    json
        Print the raw JSON lines.
    config
        Config file, used to find the store.
    """
    import time
    from pathlib import Path

    from ..errors import Failed
    from ..journal_tail import tail_lines

    path = Path(journal_path(config))
    try:
        last = tail_lines(path, lines)
    except OSError as exc:  # a directory in its place, no permission, an I/O error
        raise Failed(f"cannot read the journal {path}: {exc.strerror or exc}") from None
    for line in last:
        print(journal_line(line, json), flush=True)
    if not follow:
        return EXIT_OK
    follower = JournalFollower(path)
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL_S)
            for line in follower.poll():
                print(journal_line(line, json), flush=True)
    except KeyboardInterrupt:
        return EXIT_OK
