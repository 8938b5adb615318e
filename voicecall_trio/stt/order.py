"""Finals in committed order, with a bounded wait for a predecessor that never completes.

The Realtime server commits the caller's turns one after another (``input_audio_buffer.
committed`` names the turn before it in ``previous_item_id``), but transcribes them in parallel:
a short turn's ``completed`` can arrive before a long one's. A conversation must read the
turns in the order they were spoken, so a completed turn waits here until every turn committed
before it has been released.

The wait is bounded, because a server may never complete a turn (a lost event, a
transcription that failed without saying so): once ``skip_after`` later turns have completed,
the silent one is skipped and the queue moves on. If the skipped turn completes after all, it
is released at once, out of order, rather than lost: the caller's words matter more than
their order. Memory is bounded too: at most ``max_waiting`` turns wait (the oldest is skipped
beyond that), and the sets of skipped and released ids are trimmed to recent ones.

Pure: item ids and texts in, ``(item_id, text)`` pairs out, in the order to release them. A
failed turn is released with no text (``None``) and is not returned.
"""

from __future__ import annotations

SKIP_AFTER = 3  # later completed turns after which a silent predecessor is skipped
MAX_WAITING = 32  # committed turns not yet released, per session
MAX_REMEMBERED = 64  # released / skipped ids kept to recognise duplicates and late completions


class CommitOrder:
    """Releases completed turns in the order they were committed (one STT session)."""

    def __init__(self, *, skip_after: int = SKIP_AFTER, max_waiting: int = MAX_WAITING) -> None:
        self.skip_after = max(1, skip_after)
        self.max_waiting = max(1, max_waiting)
        self._waiting: list[str] = []  # committed, not released, in committed order
        self._done: dict[str, str | None] = {}  # waiting turns that completed (None: failed)
        self._skipped: dict[str, None] = {}  # an ordered set, oldest first
        self._released: dict[str, None] = {}
        self.skipped = 0  # how many turns were skipped, for the shell's log

    @property
    def waiting(self) -> int:
        """Turns committed and not yet released."""
        return len(self._waiting)

    def released(self, item_id: str) -> bool:
        """Whether ``item_id`` was released (or failed) already."""
        return item_id in self._released

    def committed(self, item_id: str, previous_item_id: str | None) -> list[tuple[str, str]]:
        """The server committed ``item_id`` after ``previous_item_id``."""
        if self._known(item_id):
            return []
        if previous_item_id is not None and previous_item_id in self._waiting:
            self._waiting.insert(self._waiting.index(previous_item_id) + 1, item_id)
        else:  # the first turn, or after one already released, skipped or never seen
            self._waiting.append(item_id)
        return self._release()

    def completed(self, item_id: str, text: str) -> list[tuple[str, str]]:
        """``item_id``'s transcription is ``text``; returns the turns now releasable."""
        return self._finish(item_id, text)

    def failed(self, item_id: str) -> list[tuple[str, str]]:
        """``item_id`` will never have a text; the turns behind it may go."""
        return self._finish(item_id, None)

    def reset(self) -> list[tuple[str, str]]:
        """A new session: release what already completed, in order; forget the rest."""
        out: list[tuple[str, str]] = []
        for item_id in self._waiting:
            if item_id in self._done:
                text = self._done[item_id]
                self._remember(self._released, item_id)
                if text is not None:
                    out.append((item_id, text))
        self._waiting.clear()
        self._done.clear()
        return out

    def _known(self, item_id: str) -> bool:
        return item_id in self._done or item_id in self._waiting or (
            item_id in self._released or item_id in self._skipped)

    def _finish(self, item_id: str, text: str | None) -> list[tuple[str, str]]:
        if item_id in self._released or item_id in self._done:
            return []  # a duplicate
        if item_id in self._skipped:  # it completed after all: late, but not lost
            del self._skipped[item_id]
            self._remember(self._released, item_id)
            return [] if text is None else [(item_id, text)]
        if item_id not in self._waiting:  # never saw it committed: it comes last
            self._waiting.append(item_id)
        self._done[item_id] = text
        return self._release()

    def _release(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        while self._waiting:
            head = self._waiting[0]
            if head in self._done:
                del self._waiting[0]
                text = self._done.pop(head)
                self._remember(self._released, head)
                if text is not None:
                    out.append((head, text))
            elif (len(self._waiting) > self.max_waiting
                  or sum(1 for i in self._waiting if i in self._done) >= self.skip_after):
                del self._waiting[0]
                self._remember(self._skipped, head)
                self.skipped += 1
            else:
                break
        return out

    @staticmethod
    def _remember(ids: dict[str, None], item_id: str) -> None:
        ids[item_id] = None
        if len(ids) > MAX_REMEMBERED:
            del ids[next(iter(ids))]
