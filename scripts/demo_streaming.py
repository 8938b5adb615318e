"""``./scripts/demo --streaming``: one streamed Twilio call, entirely on the shipped simulators.

No network and no keys: ``FakeTwilio`` is the carrier (it follows ``<Connect><Stream>`` and
streams the callee saying "Hello, I would like to book a table for two"), ``FakeRealtimeSTT``
is OpenAI Realtime transcription (it "recognises" the scripted utterances below after so much
audio), ``FakeTTS`` is the speech API (every reply is the vectors' "Thanks, see you at
eight."). A real daemon (socket, HTTP port, journal) runs in this process on a throwaway
store; the demo drives it over JSON-RPC, as ``voicecall`` does, and prints what
``voicecall.subscribe`` reports while it happens: interim and final transcripts
(``call.speech`` with ``isFinal`` false / true), the bot's lines, and the barge-in
(``call.interrupted`` with ``heardMs``) when the callee talks over the greeting.

Exits 0 only when it saw an interim and a final transcript, a barge-in, and a ``continue``
answered from the stream; 2 when this build lacks a piece of the streaming stack.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

ACCOUNT = "AC" + "d" * 32
TOKEN = "demo-twilio-auth-token"
FROM = "+15550001234"
CALLEE = "+15555550123"
PUBLIC = "https://voice.demo.invalid/voice/webhook"  # never resolved: the fake tunnels it
BOUND_S = 60.0
# (text, after this many ms of the session's audio, lasting ms): FakeRealtimeSTT's script.
# The first starts while the greeting plays (a barge-in); the second answers `continue`.
SCRIPT = [
    ("Hello, I would like to book a table for two.", 600, 2400),
    ("Yes, eight o'clock is perfect.", 9000, 1500),
]
GREETING = "Hello Sam, this is your assistant calling about dinner."
QUESTION = "Would you like the table at eight tonight?"
REPLY = "Of course, a table for two."  # what the fake model answers


def main() -> int:
    import trio

    try:
        return trio.run(_demo)
    except _Missing as missing:
        print(f"demo --streaming: {missing}", file=sys.stderr)
        return 2


class _Missing(Exception):
    """A piece of the streaming stack is not in this build (yet)."""


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


async def _demo() -> int:
    import trio

    from voicecall_trio.errors import ConfigError
    from voicecall_trio.testing import running_daemon
    from voicecall_trio.testing.fake_twilio import Callee, FakeTwilio, hello_ulaw

    try:  # written in parallel with this demo (issue #10): imported only here
        from voicecall_trio.testing.chat import FakeChatCompletions, Reply
        from voicecall_trio.testing.realtime_stt import FAKE_API_KEY, FakeRealtimeSTT
        from voicecall_trio.testing.tts import FakeTTS
    except ImportError as exc:
        raise _Missing(f"needs FakeRealtimeSTT and FakeTTS ({exc})") from None

    work = Path(tempfile.mkdtemp(prefix="vcstream"))
    watch = Watch()
    ok = False
    try:
        with trio.move_on_after(BOUND_S) as bound:
            async with AsyncExitStack() as stack:
                step("starting the simulators: FakeTwilio, FakeRealtimeSTT, FakeTTS")
                fake = await stack.enter_async_context(FakeTwilio(
                    account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                    default_callee=Callee(stream_audio=hello_ulaw())))
                stt = await _enter(stack, FakeRealtimeSTT(script=SCRIPT))
                tts = await _enter(stack, FakeTTS())
                chat = await _enter(stack, FakeChatCompletions(default=Reply(REPLY)))
                step("starting the daemon (Twilio, streaming on, barge-in on)")
                try:
                    daemon = await stack.enter_async_context(
                        running_daemon(_config(fake.url, stt.url, tts.base_url, chat.url,
                                               FAKE_API_KEY), store=work))
                except ConfigError as exc:  # a streaming key this build lacks
                    raise _Missing(f"the daemon would not take the config: {exc}") from None
                fake.tunnel(PUBLIC, daemon.base_url)  # Twilio reaches the daemon's public URL
                assert await daemon.rpc("voicecall.subscribe") == {"subscribed": True}
                ok = await _call(daemon, fake, watch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if bound.cancelled_caught:
        print(f"demo --streaming: not done within {BOUND_S:.0f} s", file=sys.stderr)
    ok = ok and all(watch.seen.values())
    if not ok:
        print("demo --streaming FAILED: saw " + ", ".join(
            f"{len(v)} {k}" for k, v in watch.seen.items()), file=sys.stderr)
        return 1
    print("\ndemo OK: a streamed call with live transcripts and a barge-in, on the simulators.")
    return 0


async def _enter(stack: AsyncExitStack, service: Any) -> Any:
    """Run a simulator for the demo's lifetime: ``async with`` it, or start its ``run``."""
    import trio

    if hasattr(service, "__aenter__"):
        return await stack.enter_async_context(service)
    nursery = await stack.enter_async_context(trio.open_nursery())
    stack.callback(nursery.cancel_scope.cancel)
    started = await nursery.start(service.run)
    return started if started is not None else service


def _config(twilio_url: str, stt_url: str, tts_url: str, chat_url: str, key: str
            ) -> dict[str, Any]:
    return {
        "provider": "twilio",
        "fromNumber": FROM,
        "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN, "apiBaseUrl": twilio_url},
        "publicUrl": PUBLIC,
        "outbound": {"defaultMode": "conversation"},
        "transcriptTimeoutMs": 20000,
        "streaming": {"enabled": True, "openaiApiKey": key, "realtimeUrl": stt_url,
                      "bargeIn": True},
        "tts": {"provider": "openai", "baseUrl": tts_url, "apiKey": key},
        # the built-in replies answer from the shipped fake (the key above would otherwise
        # send them to OpenAI)
        "responseBaseUrl": chat_url,
        "shutdownGraceSeconds": 2,
    }


class Watch:
    """What ``voicecall.subscribe`` reported, printed as it comes; a demo step waits on it."""

    def __init__(self) -> None:
        import trio

        self.seen: dict[str, list[dict[str, Any]]] = {"interim": [], "final": [],
                                                       "interrupted": [], "bot": []}
        self._changed = trio.Event()

    async def until(self, predicate: Any) -> None:
        import trio

        while not predicate():
            await self._changed.wait()
            self._changed = trio.Event()

    async def run(self, daemon: Any) -> None:
        async for note in daemon.client.notifications:
            if note.method == "voicecall.event":
                self.show(dict(note.params or {}))
                self._changed.set()

    def show(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "call.speech":
            final = event.get("isFinal", True)
            self.seen["final" if final else "interim"].append(event)
            label = "caller" if final else "caller (interim)"
            print(f"    {label:>17}: {event.get('text', '')}", flush=True)
        elif kind == "call.speaking":
            self.seen["bot"].append(event)
            print(f"    {'bot':>17}: {event.get('text', '')}", flush=True)
        elif kind == "call.interrupted":
            self.seen["interrupted"].append(event)
            print(f"    {'** barge-in':>17}: the caller talked over the bot, who stopped "
                  f"after {event.get('heardMs')} ms heard", flush=True)
        elif kind in ("call.answered", "call.active", "call.spoken", "call.ended"):
            print(f"    {'':>17}  ({kind})", flush=True)


async def _call(daemon: Any, fake: Any, watch: Watch) -> bool:
    import trio

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch.run, daemon)
        step("placing a conversation call; the greeting is spoken over the media stream")
        placed = await daemon.rpc("voicecall.initiate", {"to": CALLEE, "message": GREETING,
                                                         "mode": "conversation"})
        call_id = placed["callId"]
        await watch.until(lambda: watch.seen["final"] and watch.seen["interrupted"])
        step("the built-in reply answers the caller by itself (FakeChatCompletions)")
        await watch.until(lambda: any(e.get("text") == REPLY for e in watch.seen["bot"]))
        step(f"continue: {QUESTION!r}")
        sid = next(iter(fake.calls))
        fake.play_audio(sid, _hello())  # the callee speaks again while the bot asks
        answer = await daemon.rpc("voicecall.continue", {"callId": call_id,
                                                         "message": QUESTION})
        print(f"    -> continue returned: {answer['transcript']!r}", flush=True)
        step("end: hanging up")
        await daemon.rpc("voicecall.end", {"callId": call_id})
        status = await daemon.rpc("voicecall.status", {"callId": call_id})
        call = status["call"]
        step(f"final state: {call['state']} ({call.get('endReason')})")
        for entry in call["transcript"]:
            cut = (f"  [interrupted, {entry.get('heardMs')} ms heard]"
                   if entry.get("interrupted") else "")
            print(f"    {entry['speaker']:>4}: {entry['text']}{cut}")
        media = fake.calls[sid].media
        if media:
            stream = media[-1]
            print(f"    stream {stream.stream_sid}: {stream.frames_sent} frames in, "
                  f"{len(stream.arrivals)} frames out, marks echoed {stream.echoed_names}, "
                  f"{len(stream.clears)} clear(s)")
        nursery.cancel_scope.cancel()
    return bool(answer.get("transcript")) and call["state"] == "hangup-bot"


def _hello() -> bytes:
    from voicecall_trio.testing.fake_twilio import hello_ulaw

    return hello_ulaw()


if __name__ == "__main__":
    sys.exit(main())
