"""Acceptance (issue 12): no secret from the config appears in ``serve``'s output, in either log
format, during a whole Twilio call.

A real ``voicecall serve`` subprocess talks to ``FakeTwilio`` (running in this test's trio
loop): REST dial with Basic auth, signed status callbacks, TwiML fetches, Gather results, a REST
update per turn, and the hang-up. The auth token and the OpenAI key (in the config) are
distinctive, so a grep of the captured stderr finds them wherever they leak. A webhook with
a bad signature is sent too (its refusal is logged), and a correctly signed status callback whose
``ErrorMessage`` carries the secrets, an ``Authorization`` value, a stream token and a phone
number: the daemon logs carrier error text, so this proves the redaction is in force in the
``serve`` process itself, not only that nothing happened to leak. Blocking helpers (the daemon
process, its socket) run in threads so the fake keeps answering.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import VOICECALL, MakeDaemon, clean_env

from voicecall_trio.providers.twilio.signature import compute_signature
from voicecall_trio.testing.fake_twilio import Callee, FakeTwilio

ACCOUNT = "AC" + "9" * 32
TOKEN = "distinctive-auth-token-5f3a9c1e7b"
OPENAI = "sk-distinctive-openai-key-0a1b2c3d4e"
FROM = "+15550001234"
CALLEE = "+15555550123"
PUBLIC = "https://voice.example.com/voice/webhook"
WAIT_S = 20.0
STREAM_MAC = "Zm9yZ2VkLXN0cmVhbS1tYWMx"  # 24 URL-safe base64 characters, as flow.stream_token


@pytest.mark.parametrize(("log_format", "log_level"), [("text", "info"), ("json", "info"),
                                                       ("json", "debug")])
async def test_no_secret_in_serve_output_during_a_whole_call(
    make_daemon: MakeDaemon, monkeypatch: pytest.MonkeyPatch, log_format: str, log_level: str
) -> None:
    # the OpenAI key sits in the config: the tests' daemons never get OPENAI_API_KEY (it
    # would switch built-in replies on against the real API); tts.apiKey is not used here
    script = ["Hello, this is the callee.", "Nine works.", "Bye."]
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=TOKEN, phone_number=FROM,
                      voice_url=PUBLIC)
    async with fake:
        fake.callees[CALLEE] = Callee(script=script)
        d = make_daemon(start=False, provider="twilio", fromNumber=FROM, publicUrl=PUBLIC,
                        twilio={"accountSid": ACCOUNT, "authToken": TOKEN,
                                "apiBaseUrl": fake.url},
                        tts={"apiKey": OPENAI})
        await trio.to_thread.run_sync(
            lambda: d.start(extra_args=("--log-format", log_format, "--log-level", log_level)))
        health = await trio.to_thread.run_sync(d.health)
        with trio.fail_after(WAIT_S):  # the socket answers before the HTTP port is bound
            while not health.get("ready"):
                await trio.sleep(0.02)
                health = await trio.to_thread.run_sync(d.health)
        fake.tunnel(PUBLIC, health["listen"][0])

        def rpc(method: str, params: dict[str, Any]) -> Any:
            return d.rpc(method, params)

        with trio.fail_after(WAIT_S):
            started = await trio.to_thread.run_sync(
                rpc, "voicecall.initiate",
                {"to": CALLEE, "message": "Hi, about tomorrow.", "mode": "conversation"})
            call_id = started["callId"]
            await fake.wait_for(lambda: any(len(c.replies) >= 1 for c in fake.calls.values()))
            reply = await trio.to_thread.run_sync(
                rpc, "voicecall.continue", {"callId": call_id, "message": "Does nine work?"})
            assert reply["transcript"] == script[1]
            async with httpx.AsyncClient() as http:  # a forged webhook: refused, logged
                forged = await http.post(
                    health["listen"][0] + "/voice/webhook", data={"CallSid": "CA1"},
                    headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl",
                             "Authorization": f"Bearer {OPENAI}"})
                assert forged.status_code in (401, 403)
            assert await trio.to_thread.run_sync(
                rpc, "voicecall.end", {"callId": call_id}) == {"success": True}
            await fake.wait_for(lambda: all(c.done.is_set() for c in fake.calls.values()))
            (sid,) = fake.calls
            query = f"?callId={call_id}&type=status"
            params = {"AccountSid": ACCOUNT, "CallSid": sid, "CallStatus": "completed",
                      "From": FROM, "To": CALLEE, "Direction": "outbound-api",
                      "ErrorCode": "13227",
                      "ErrorMessage": f"token {TOKEN} key {OPENAI} Authorization: Basic "
                                      f"{TOKEN} stream {call_id}.{STREAM_MAC} to {CALLEE}"}
            async with httpx.AsyncClient() as http:
                echoed = await http.post(
                    health["listen"][0] + "/voice/webhook" + query, data=params,
                    headers={"X-Twilio-Signature": compute_signature(TOKEN, PUBLIC + query,
                                                                     params)})
                assert echoed.status_code == 200
        assert await trio.to_thread.run_sync(d.stop) == 0

    output = d.stderr_text()
    assert "ready" in output and call_id in output  # there was something to leak into
    basic = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
    assert "13227" in output and "[redacted]" in output  # the canary line was logged
    for secret in (TOKEN, OPENAI, basic, STREAM_MAC):
        assert secret not in output, f"{secret[:12]}... leaked in {log_format} output"
    if log_level == "info":
        assert CALLEE not in output and FROM not in output  # masked at INFO
    if log_format == "json":
        for line in output.splitlines():
            record = json.loads(line)
            assert {"ts", "level", "logger", "msg"} <= set(record), line


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_refused_start_is_one_line_in_the_chosen_format(
    tmp_path: Path, log_format: str
) -> None:
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"provider": "twilio", "fromNumber": FROM,
                                  "twilio": {"accountSid": ACCOUNT, "authToken": TOKEN},
                                  "maxConcurrentCalls": 0}))
    done = subprocess.run([VOICECALL, "serve", "--config", str(config), "--log-format",
                           log_format], capture_output=True, text=True, timeout=60,
                          env=clean_env(), stdin=subprocess.DEVNULL)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    if log_format == "json":
        record = json.loads(line)
        assert record["level"] == "ERROR" and "maxConcurrentCalls" in record["msg"]
    else:
        assert line.startswith("error: maxConcurrentCalls")
    assert TOKEN not in done.stderr
