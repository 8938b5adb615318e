"""Reply text as it streams in -> sentences to speak, each cleaned of what a voice can't say.

``SentenceSplitter.feed(delta)`` returns the sentences completed so far, so the first one can
be spoken while the model is still writing the rest. A sentence ends at ``.``, ``!``, ``?``
or ``…`` (with closing quotes or brackets) followed by white space, or at a line break; not
after a common abbreviation ("Dr.", "e.g."), a lone initial or a list number ("2."). A run
with no end is cut at a comma or a space once it passes ``max_chars``, so speech never waits
on a model that forgot its full stops. ``flush()`` gives what is left at the end.

``clean_spoken(text)`` removes what a model may still write despite the prompt: markdown
(emphasis, headings, code, links, tables), list markers, emoji, and URLs (read as their host
name). It is pure and runs per sentence.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

MAX_SENTENCE_CHARS = 300  # a sentence longer than this is cut at a comma or space
MIN_CUT_CHARS = 40  # ...but never into a piece shorter than this
ENDINGS = ".!?\u2026\u3002\uff01\uff1f"  # ... and the ideographic/fullwidth marks
CLOSERS = "\"')]}\u00bb\u201d\u2019"  # quotes and brackets that may follow
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie",
    "no", "nr", "approx", "dept", "est", "min", "max", "mt", "ft", "inc", "ltd", "co",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "mon", "tue", "wed", "thu", "fri", "sat", "sun", "a.m", "p.m", "u.s", "u.k",
})


class SentenceSplitter:
    """Incremental sentence boundaries over streamed text."""

    def __init__(self, max_chars: int = MAX_SENTENCE_CHARS) -> None:
        self.max_chars = max_chars
        self._buffer = ""
        self._scan = 0  # where to look for the next boundary

    def feed(self, delta: str) -> list[str]:
        self._buffer += delta
        out: list[str] = []
        while True:
            cut = self._boundary()
            if cut is None:
                break
            piece, self._buffer = self._buffer[:cut], self._buffer[cut:]
            self._scan = 0
            if piece.strip():
                out.append(piece.strip())
        return out

    def flush(self) -> str | None:
        rest, self._buffer, self._scan = self._buffer.strip(), "", 0
        return rest or None

    def _boundary(self) -> int | None:
        text = self._buffer
        i = self._scan
        n = len(text)
        while i < n:
            ch = text[i]
            if ch == "\n":
                return i + 1
            if ch in ENDINGS:
                j = i + 1
                while j < n and (text[j] in ENDINGS or text[j] in CLOSERS):
                    j += 1
                if j >= n:
                    self._scan = i  # need the next character to decide
                    return self._long_cut()
                if text[j].isspace() and not _no_end(text[:i + 1], ch):
                    return j
                i = j
                continue
            i += 1
        self._scan = n
        return self._long_cut()

    def _long_cut(self) -> int | None:
        text = self._buffer
        if len(text) <= self.max_chars:
            return None
        window = text[:self.max_chars]
        for mark in (", ", "; ", ": ", " - ", " "):
            at = window.rfind(mark)
            if at >= MIN_CUT_CHARS:
                return at + len(mark)
        return self.max_chars


def _no_end(before: str, mark: str) -> bool:
    """A ``.`` that does not end a sentence: an abbreviation, an initial, a list number."""
    if mark != ".":
        return False
    word = before[:-1].rsplit(None, 1)[-1] if before[:-1].split() else ""
    word = word.lstrip("(\"'[").lower()
    if not word:
        return False
    if word in ABBREVIATIONS:
        return True
    if len(word) == 1 and word.isalpha():
        return True  # "J. Smith"
    stripped = before[:-1].strip()
    return word.isdigit() and (stripped == word or stripped.endswith("\n" + word))


# -- cleaning ---------------------------------------------------------------------------------
_FENCE = re.compile(r"```[^\n]*")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\((?:[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\"']+", re.IGNORECASE)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_QUOTE = re.compile(r"^\s{0,3}>\s?", re.MULTILINE)
_BULLET = re.compile(r"^\s*(?:[-*+•‣◦]|\d{1,3}[.)])\s+", re.MULTILINE)
_TABLE_RULE = re.compile(r"^\s*\|?(?:\s*:?-{3,}:?\s*\|)+\s*(?::?-{3,}:?)?\s*$", re.MULTILINE)
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*{1,3}|_{2,3}|~~)(?=\S)(.+?)(?<=\S)\1")
_UNDERSCORE = re.compile(r"(?<![\w])_(?=\S)(.+?)(?<=\S)_(?![\w])")
_STRAY = re.compile(r"[*`#|~]+|(?<!\w)_+|_+(?!\w)")
_SPACES = re.compile(r"[ \t\u00a0]+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


def clean_spoken(text: str) -> str:
    """``text`` as it should be spoken: no markup, no emoji, URLs as host names."""
    text = _FENCE.sub(" ", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _URL.sub(_host, text)
    text = _TABLE_RULE.sub("", text)
    text = _RULE.sub(" ", text)
    text = _HEADING.sub("", text)
    text = _QUOTE.sub("", text)
    text = _BULLET.sub("", text)
    for _ in range(2):  # nested emphasis: ***bold italic*** or **_x_**
        text = _EMPHASIS.sub(r"\2", text)
        text = _UNDERSCORE.sub(r"\1", text)
    text = _STRAY.sub(" ", text)
    text = "".join(" " if _unspeakable(ch) else ch for ch in text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    text = " ".join(_ended(line) for line in lines[:-1] if line)
    text = f"{text} {lines[-1] if lines else ''}"
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text).strip()


def _ended(line: str) -> str:
    """A line that ends without punctuation (a list item) gets a full stop: a pause."""
    return line if line[-1] in ENDINGS + ",;:" + CLOSERS else line + "."


def _host(match: re.Match[str]) -> str:
    url = match.group(0).rstrip(".,;:!?")
    tail = match.group(0)[len(url):]
    try:
        host = urlsplit(url if "://" in url else "http://" + url).hostname or ""
    except ValueError:
        host = ""
    if host.startswith("www."):
        host = host[4:]
    return (host or "a link") + tail


def _unspeakable(ch: str) -> bool:
    """Emoji, pictographs and the invisible joiners and selectors between them."""
    code = ord(ch)
    if code < 0x2000:
        return unicodedata.category(ch) in ("Cc", "Co", "Cn") and ch not in "\n\t"
    if code in (0x200D, 0x20E3) or 0xFE00 <= code <= 0xFE0F or 0xE0020 <= code <= 0xE007F:
        return True
    if 0x1F000 <= code <= 0x1FAFF or 0x2600 <= code <= 0x27BF or 0x2B00 <= code <= 0x2BFF:
        return True
    return unicodedata.category(ch) in ("So", "Cs", "Co", "Cn")


__all__ = ["MAX_SENTENCE_CHARS", "SentenceSplitter", "clean_spoken"]
