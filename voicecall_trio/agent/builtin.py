"""The built-in responder: a call's transcript in, the reply's sentences out as they stream.

``make_builtin`` decides whether built-in replies are configured at all: a key is set
(``config.response_key()``), or ``responseBaseUrl`` is not OpenAI's (a local server may need
none). ``BuiltinResponder.reply`` builds the messages (``prompt.py``), streams the completion
(``client.py``) within ``responseTimeoutMs``, splits the text into sentences as it arrives and
hands each, cleaned for speech, to ``on_sentence`` at once; the waterfall gets ``firstToken``,
``firstSentence`` and the token usage. Speaking is the caller's job (``replies.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import httpx
import trio

from ..config import VoiceCallConfig
from ..model import CallRecord
from .chat import ChatEvent, TextDelta, ToolCallDelta, is_openai, model_name
from .client import ChatClient, ChatReply
from .prompt import build_messages
from .sentences import SentenceSplitter, clean_spoken
from .waterfall import Waterfall


def local_now() -> datetime:
    return datetime.now().astimezone()


class BuiltinResponder:
    def __init__(self, client: ChatClient, *, system_prompt: str | None, timeout_ms: int,
                 now: Callable[[], datetime] = local_now) -> None:
        self.client = client
        self.system_prompt = system_prompt
        self.timeout_ms = timeout_ms
        self.now = now

    def messages(self, record: CallRecord) -> list[dict[str, str]]:
        return build_messages(self.system_prompt, record, self.now())

    async def reply(self, record: CallRecord, *, on_sentence: Callable[[str], None],
                    waterfall: Waterfall | None = None) -> ChatReply:
        """Stream the reply to ``record``'s transcript; raises ``ChatError`` on failure
        (sentences already handed over stay handed over)."""
        splitter = SentenceSplitter()
        first_sentence = True

        def sentence(text: str) -> None:
            nonlocal first_sentence
            spoken = clean_spoken(text)
            if not spoken:
                return
            if first_sentence and waterfall is not None:
                waterfall.mark("firstSentence", at=trio.current_time())
            first_sentence = False
            on_sentence(spoken)

        def on_event(event: ChatEvent) -> None:
            if isinstance(event, TextDelta | ToolCallDelta) and waterfall is not None:
                waterfall.mark("firstToken", at=trio.current_time())
            if isinstance(event, TextDelta):
                for piece in splitter.feed(event.text):
                    sentence(piece)

        deadline = trio.current_time() + self.timeout_ms / 1000
        result = await self.client.complete(self.messages(record), deadline=deadline,
                                            on_event=on_event)
        rest = splitter.flush()
        if rest:
            sentence(rest)
        if result.usage and waterfall is not None:
            waterfall.usage(result.usage)
        return result


def make_builtin(config: VoiceCallConfig, http: httpx.AsyncClient,
                 now: Callable[[], datetime] = local_now) -> BuiltinResponder | None:
    """The built-in responder, or None when it is not configured (OpenAI without a key)."""
    key = config.response_key()
    if not key and is_openai(config.response_base_url):
        return None
    client = ChatClient(http, base_url=config.response_base_url, api_key=key,
                        model=model_name(config.response_model))
    return BuiltinResponder(client, system_prompt=config.response_system_prompt,
                            timeout_ms=config.response_timeout_ms, now=now)


__all__ = ["BuiltinResponder", "local_now", "make_builtin"]
