"""The realtime transcription pump (``stt/pump.py``) against ``FakeRealtimeSTT``.

In memory on the autojump clock (the fake's ``connector``) wherever time matters: back-off,
timeouts, the hold while connecting. One test runs on a real loopback socket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from voicecall_trio.stt import pump
from voicecall_trio.stt.pump import RealtimeTranscriber
from voicecall_trio.stt.realtime import (
    Final,
    Interim,
    SpeechStarted,
    SpeechStopped,
    SttEvent,
    SttFailure,
    session_update,
)
from voicecall_trio.testing.realtime_stt import FAKE_API_KEY, FakeRealtimeSTT

FRAME = 160  # 20 ms of 8 kHz mu-law
VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors"
Connector = Callable[[str, dict[str, str]], AbstractAsyncContextManager[WebSocketConnection]]


def audio(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that differ from any shifted copy of themselves (order errors show)."""
    return bytes((i * 37 + (i >> 8) * 11 + seed) % 256 for i in range(n))


class Rig:
    """A transcriber on the fake, with what it reported."""

    def __init__(self, stt: FakeRealtimeSTT, connect: Connector | None = None,
                 **kwargs: Any) -> None:
        self.events: list[SttEvent] = []
        self.lost = 0
        self.stt = stt
        kwargs.setdefault("api_key", FAKE_API_KEY)
        self.t = RealtimeTranscriber(
            url=stt.url, model="gpt-4o-transcribe", vad_threshold=0.5,
            silence_duration_ms=800, on_event=self._event, on_lost=self._lost,
            connect=connect if connect is not None else stt.connector, **kwargs)
        self._changed = trio.Event()

    def _event(self, event: SttEvent) -> None:
        self.events.append(event)
        self._changed.set()
        self._changed = trio.Event()

    def _lost(self) -> None:
        self.lost += 1

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds, checked after each event the pump reports."""
        while not predicate():
            await self._changed.wait()

    def feed(self, data: bytes) -> None:
        for i in range(0, len(data), FRAME):
            self.t.send_audio(data[i:i + FRAME])

    async def feed_paced(self, data: bytes) -> None:
        for i in range(0, len(data), FRAME):
            self.t.send_audio(data[i:i + FRAME])
            await trio.sleep(0.02)

    def finals(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, Final)]


def slow(connect: Connector, delay: float) -> Connector:
    @asynccontextmanager
    async def connector(url: str, headers: dict[str, str]) -> AsyncIterator[WebSocketConnection]:
        await trio.sleep(delay)
        async with connect(url, headers) as ws:
            yield ws
    return connector


def timed(connect: Connector, times: list[float]) -> Connector:
    def connector(url: str, headers: dict[str, str]
                  ) -> AbstractAsyncContextManager[WebSocketConnection]:
        times.append(trio.current_time())
        return connect(url, headers)
    return connector


async def test_audio_from_the_first_frame_arrives_identical_incl_what_came_while_connecting(
        autojump_clock: trio.testing.MockClock) -> None:
    data = audio(3 * 8000)
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt, slow(stt.connector, 1.0))
        rig.feed(data[:1600])  # before run starts
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            assert rig.t.phase == "connecting"
            await rig.feed_paced(data[1600:])
            await stt.wait_for(lambda: bool(stt.sessions) and
                               len(stt.sessions[0].audio) == len(data))
            nursery.cancel_scope.cancel()
    (session,) = stt.sessions
    assert bytes(session.audio) == data
    assert session.updates == [json.loads(session_update("gpt-4o-transcribe", 0.5, 800))]
    assert session.headers["authorization"] == f"Bearer {FAKE_API_KEY}"
    assert session.query == {"intent": "transcription"}
    assert session.path == "/v1/realtime"
    assert rig.t.sessions_opened == 1 and rig.t.bytes_dropped == 0
    # what was held for the second it took to connect went out in one append
    assert session.appends < len(data) // FRAME - 40
    assert rig.t.phase == "closed"


async def test_the_vectors_call_audio_on_a_real_loopback_socket() -> None:
    data = (VECTORS / "hello_table_for_two_8k.ulaw").read_bytes()  # 163 frames, 3.26 s
    assert len(data) == 163 * FRAME
    with trio.fail_after(20):
        async with FakeRealtimeSTT([("Hello, I would like to book a table for two.", 300,
                                     2500)]) as stt:
            rig = Rig(stt, connect=pump.open_realtime)
            rig.feed(data[:800])
            async with trio.open_nursery() as nursery:
                await nursery.start(rig.t.run)
                rig.feed(data[800:])
                await stt.wait_for(lambda: bool(stt.sessions) and
                                   len(stt.sessions[0].audio) == len(data))
                await rig.wait_for(lambda: bool(rig.finals()))
                nursery.cancel_scope.cancel()
    assert bytes(stt.sessions[0].audio) == data
    assert stt.sessions[0].headers["authorization"] == f"Bearer {FAKE_API_KEY}"
    assert stt.sessions[0].query == {"intent": "transcription"}
    assert rig.finals() == ["Hello, I would like to book a table for two."]


async def test_pending_audio_goes_as_one_append_of_at_most_32_kib(
        autojump_clock: trio.testing.MockClock) -> None:
    data = audio(6 * 8000)  # 48000 bytes held
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt)
        rig.feed(data)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_for(lambda: bool(stt.sessions) and
                               len(stt.sessions[0].audio) == len(data))
            nursery.cancel_scope.cancel()
    assert bytes(stt.sessions[0].audio) == data
    assert stt.sessions[0].appends == rig.t.appends_sent == 2
    assert rig.t.bytes_sent == len(data)


async def test_batch_s_gathers_paced_frames(autojump_clock: trio.testing.MockClock) -> None:
    data = audio(2 * 8000)  # 100 frames, 2 s
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt, batch_s=0.1)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_sessions(1)
            await rig.feed_paced(data)
            await stt.wait_for(lambda: len(stt.sessions[0].audio) == len(data))
            nursery.cancel_scope.cancel()
    assert bytes(stt.sessions[0].audio) == data
    assert 18 <= stt.sessions[0].appends <= 22  # about one append per 100 ms


async def test_the_first_hold_is_bounded_to_the_last_10_s(
        autojump_clock: trio.testing.MockClock) -> None:
    data = audio(15 * 8000)
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt)
        rig.feed(data)
        assert rig.t.pending == pump.FIRST_HOLD_BYTES
        assert rig.t.bytes_dropped == len(data) - pump.FIRST_HOLD_BYTES
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_for(lambda: bool(stt.sessions) and
                               len(stt.sessions[0].audio) == pump.FIRST_HOLD_BYTES)
            nursery.cancel_scope.cancel()
    assert bytes(stt.sessions[0].audio) == data[-pump.FIRST_HOLD_BYTES:]


async def test_interims_and_finals_arrive_in_order(
        autojump_clock: trio.testing.MockClock) -> None:
    script = [("Hello, I would like to book a table.", 500, 1500),
              ("For two people, at eight.", 2500, 1000)]
    async with FakeRealtimeSTT(script) as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await rig.feed_paced(audio(4 * 8000))
            await rig.wait_for(lambda: len(rig.finals()) == 2)
            nursery.cancel_scope.cancel()
    kinds = [type(e).__name__ for e in rig.events]
    assert kinds == ["SpeechStarted", "SpeechStopped", "Interim", "Interim", "Interim",
                     "Final"] * 2
    assert rig.events[0] == SpeechStarted("item_1", 500)
    assert rig.events[1] == SpeechStopped("item_1", 2000)
    assert rig.events[3] == Interim("item_1", "Hello, I would like to book ")
    assert rig.finals() == [u[0] for u in script]


async def test_an_error_event_is_reported_and_the_session_carries_on(
        autojump_clock: trio.testing.MockClock) -> None:
    async with FakeRealtimeSTT([("After the error.", 500, 500)]) as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_sessions(1)
            await stt.send_error("Something went wrong.", code="server_error")
            await rig.feed_paced(audio(8000 + 800))
            await rig.wait_for(lambda: bool(rig.finals()))
            nursery.cancel_scope.cancel()
    assert rig.events[0] == SttFailure(
        "server error: server_error server_error: Something went wrong.")
    assert rig.finals() == ["After the error."]
    assert rig.t.sessions_opened == 1


async def test_a_drop_reconnects_and_sends_the_last_2_s_of_the_gap_first(
        autojump_clock: trio.testing.MockClock) -> None:
    first, gap, after = audio(8000, 1), audio(3 * 8000, 2), audio(4000, 3)
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            rig.feed(first)
            await stt.wait_for(lambda: bool(stt.sessions) and
                               len(stt.sessions[0].audio) == len(first))
            await trio.sleep(pump.STABLE_S)  # a session that lasted
            stt.refuse_next(3)  # a gap of 0.2 + 0.2 + 0.4 + 0.8 s
            stt.drop()
            await stt.wait_for(lambda: len(stt.connections) >= 2)
            assert rig.t.phase == "gap"
            rig.feed(gap)
            second = await stt.wait_sessions(2)
            rig.feed(after)
            await stt.wait_for(lambda: len(second.audio) == pump.GAP_HOLD_BYTES + len(after))
            nursery.cancel_scope.cancel()
    assert [c.status for c in stt.connections] == [101, 503, 503, 503, 101]
    assert bytes(stt.sessions[0].audio) == first
    assert bytes(second.audio) == gap[-pump.GAP_HOLD_BYTES:] + after
    assert second.updates == stt.sessions[0].updates  # a new session, set up the same way
    assert rig.t.sessions_opened == 2 and rig.lost == 0
    assert rig.t.bytes_dropped == len(gap) - pump.GAP_HOLD_BYTES


async def test_an_utterance_cut_by_a_drop_is_heard_on_the_next_session(
        autojump_clock: trio.testing.MockClock) -> None:
    async with FakeRealtimeSTT([("Cut short.", 200, 1000)]) as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            rig.feed(audio(8 * 500))
            await rig.wait_for(lambda: bool(rig.events))
            stt.drop()
            await stt.wait_sessions(2)
            rig.feed(audio(8 * 1500))
            await rig.wait_for(lambda: bool(rig.finals()))
            nursery.cancel_scope.cancel()
    assert rig.finals() == ["Cut short."]


async def test_five_refusals_in_a_row_give_up_once_with_backoff(
        autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []
    async with FakeRealtimeSTT() as stt:
        stt.refuse_next(10)
        rig = Rig(stt, timed(stt.connector, times))
        rig.feed(audio(1600))
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
        # run returned by itself: it gave up
    assert rig.lost == 1
    assert [round(t - start, 3) for t in times] == [0.0, 0.2, 0.6, 1.4, 3.0]
    assert rig.t.phase == "lost" and rig.t.sessions_opened == 0
    rig.feed(audio(1600))
    assert rig.t.pending == 0 and rig.t.bytes_dropped == 3200


async def test_a_refused_key_is_said_in_the_log_and_not_retried_forever(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-wrong-secret-0123456789"
    caplog.set_level(logging.INFO, logger="voicecall.stt")
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt, api_key=secret)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
    assert rig.lost == 1
    assert [c.status for c in stt.connections] == [401] * 5
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "refused the API key" in text and "OPENAI_API_KEY" in text
    assert secret not in text and "sk-wrong" not in text


async def test_sessions_that_last_reset_the_count_but_flapping_gives_up(
        autojump_clock: trio.testing.MockClock) -> None:
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            for n in range(1, 8):  # seven drops of sessions that lasted: never lost
                await stt.wait_sessions(n)
                await trio.sleep(pump.STABLE_S)
                stt.drop()
            await stt.wait_sessions(8)
            for n in range(9, 13):  # sessions that die at once count as failures
                stt.drop()
                await stt.wait_sessions(n)
            assert rig.lost == 0
            stt.drop()
        assert rig.lost == 1
    assert rig.t.sessions_opened == 12


class _StuckSocket:
    """Accepts session.update, then never finishes sending anything."""

    def __init__(self) -> None:
        self.sent = 0

    async def send_message(self, message: str) -> None:
        self.sent += 1
        if self.sent > 1:
            await trio.sleep_forever()

    async def get_message(self) -> str:
        await trio.sleep_forever()
        raise AssertionError

    async def ping(self) -> None:
        pass


async def test_a_stalled_send_ends_the_session(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []

    @asynccontextmanager
    async def stuck(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
        times.append(trio.current_time())
        yield _StuckSocket()

    async with FakeRealtimeSTT(listen=False) as stt:
        rig = Rig(stt, stuck, max_retries=2)
        rig.feed(audio(800))
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
    assert rig.lost == 1
    assert [round(t - start, 3) for t in times] == [0.0, pump.SEND_STALL_S + 0.2]
    assert rig.t.sessions_opened == 2


async def test_connecting_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []

    @asynccontextmanager
    async def hangs(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
        times.append(trio.current_time())
        await trio.sleep_forever()
        yield None

    async with FakeRealtimeSTT(listen=False) as stt:
        rig = Rig(stt, hangs)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
    assert rig.lost == 1
    assert [round(t - start, 3) for t in times] == [0.0, 10.2, 20.6, 31.4, 43.0]


async def test_a_dead_session_is_found_by_its_missing_pong(
        autojump_clock: trio.testing.MockClock) -> None:
    class _Deaf(_StuckSocket):
        async def send_message(self, message: str) -> None:
            pass

        async def ping(self) -> None:
            await trio.sleep_forever()

    times: list[float] = []

    @asynccontextmanager
    async def deaf(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
        times.append(trio.current_time())
        yield _Deaf()

    async with FakeRealtimeSTT(listen=False) as stt:
        rig = Rig(stt, deaf, max_retries=1)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
    assert rig.lost == 1
    assert trio.current_time() - times[0] == pytest.approx(
        pump.PING_EVERY_S + pump.PONG_TIMEOUT_S)


async def test_hostile_server_messages_are_skipped_and_logged_once(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.stt")
    async with FakeRealtimeSTT([("Still here.", 100, 200)]) as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_sessions(1)
            for raw in ["not json", '{"type":"input_audio_buffer.committed"}', "[]",
                        '{"type":"error","error":7}', b"\x00\xff binary", "{" * 10000,
                        '{"type":"some.future.event"}']:
                await stt.send_raw(raw)
            rig.feed(audio(8 * 400))
            await rig.wait_for(lambda: bool(rig.finals()))
            nursery.cancel_scope.cancel()
    assert rig.finals() == ["Still here."]
    assert rig.t.sessions_opened == 1
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1


async def test_an_oversized_server_message_ends_only_that_session(
        autojump_clock: trio.testing.MockClock) -> None:
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_sessions(1)
            await stt.send_raw("x" * (pump.MAX_SERVER_MESSAGE + 10))
            await stt.wait_sessions(2)
            nursery.cancel_scope.cancel()
    assert rig.t.sessions_opened == 2 and rig.lost == 0


async def test_cancelling_run_stops_it_and_later_audio_is_dropped(
        autojump_clock: trio.testing.MockClock) -> None:
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt, slow(stt.connector, 5.0))
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            rig.feed(audio(800))
            await trio.sleep(1.0)
            nursery.cancel_scope.cancel()
    assert rig.t.phase == "closed" and rig.t.pending == 0
    rig.feed(audio(160))
    assert rig.t.pending == 0
    assert rig.lost == 0


async def test_the_fake_refuses_a_missing_key_or_intent_and_wants_session_update_first(
        autojump_clock: trio.testing.MockClock) -> None:
    async with FakeRealtimeSTT(listen=False) as stt:
        base = stt.url
        for url, headers, status in [
            (base + "?intent=transcription", {}, 401),
            (base + "?intent=transcription", {"Authorization": "Bearer nope"}, 401),
            (base, {"Authorization": f"Bearer {FAKE_API_KEY}"}, 400),
        ]:
            with pytest.raises(ConnectionRejected) as rejected:
                async with stt.connector(url, headers):
                    pass
            assert rejected.value.status_code == status
        async with stt.connector(base + "?intent=transcription",
                                 {"Authorization": f"Bearer {FAKE_API_KEY}"}) as ws:
            assert json.loads(await ws.get_message())["type"] == "session.created"
            await ws.send_message('{"type":"input_audio_buffer.append","audio":""}')
            assert json.loads(await ws.get_message())["type"] == "error"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None and closed.value.reason.code == 1008
    assert [c.status for c in stt.connections] == [401, 401, 400, 101]


async def test_a_refusal_on_a_real_socket_is_retried() -> None:
    data = audio(1600)
    with trio.fail_after(20):
        async with FakeRealtimeSTT() as stt:
            stt.refuse_next(1, status=503)
            rig = Rig(stt, connect=pump.open_realtime)
            rig.feed(data)
            async with trio.open_nursery() as nursery:
                await nursery.start(rig.t.run)
                await stt.wait_for(lambda: len(stt.sessions) == 1 and
                                   len(stt.sessions[0].audio) == len(data))
                nursery.cancel_scope.cancel()
    assert [c.status for c in stt.connections] == [503, 101]
    assert bytes(stt.sessions[0].audio) == data


async def test_the_beta_shape_has_its_header_and_update(
        autojump_clock: trio.testing.MockClock) -> None:
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt, beta=True, language="en")
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            session = await stt.wait_sessions(1)
            nursery.cancel_scope.cancel()
    assert session.headers["openai-beta"] == "realtime=v1"
    assert session.updates == [json.loads(session_update(
        "gpt-4o-transcribe", 0.5, 800, language="en", beta=True))]


async def test_a_raising_on_event_ends_the_session_with_a_traceback_in_the_log(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.stt")

    async with FakeRealtimeSTT([("Boom.", 100, 100)]) as stt:
        rig = Rig(stt)

        def explode(event: SttEvent) -> None:
            raise RuntimeError("a bug in the caller")

        rig.t._on_event = explode
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            rig.feed(audio(8 * 300))
            await stt.wait_sessions(2)
            nursery.cancel_scope.cancel()
    assert any(r.exc_info and "unexpectedly" in r.getMessage() for r in caplog.records)


async def test_the_first_hold_survives_failed_first_attempts(
        autojump_clock: trio.testing.MockClock) -> None:
    data = audio(5 * 8000)
    async with FakeRealtimeSTT() as stt:
        stt.refuse_next(2)
        rig = Rig(stt)
        rig.feed(data[:8000])
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_for(lambda: len(stt.connections) >= 2)
            rig.feed(data[8000:])  # 5 s in all before any session: nothing is lost
            await stt.wait_for(lambda: bool(stt.sessions) and
                               len(stt.sessions[0].audio) == len(data))
            nursery.cancel_scope.cancel()
    assert bytes(stt.sessions[0].audio) == data and rig.t.bytes_dropped == 0


async def test_a_turn_that_never_completes_is_skipped_and_logged(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.stt")
    async with FakeRealtimeSTT(listen=False) as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_sessions(1)
            prev = None
            for n in range(5):
                await stt.send_event({"type": "input_audio_buffer.committed",
                                      "item_id": f"t{n}", "previous_item_id": prev})
                prev = f"t{n}"
            for n in range(1, 5):
                await stt.send_event({
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": f"t{n}", "transcript": f"turn {n}"})
            await rig.wait_for(lambda: len(rig.finals()) == 4)
            nursery.cancel_scope.cancel()
    assert rig.finals() == ["turn 1", "turn 2", "turn 3", "turn 4"]
    assert sum("never transcribed" in r.getMessage() for r in caplog.records) == 1


async def test_a_server_close_is_followed_by_a_new_session(
        autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="voicecall.stt")
    async with FakeRealtimeSTT() as stt:
        rig = Rig(stt)
        async with trio.open_nursery() as nursery:
            await nursery.start(rig.t.run)
            await stt.wait_sessions(1)
            await stt.close_current(1011, "internal error")
            await stt.wait_sessions(2)
            nursery.cancel_scope.cancel()
    assert rig.t.sessions_opened == 2
    assert any("closed the session (1011)" in r.getMessage() for r in caplog.records)
