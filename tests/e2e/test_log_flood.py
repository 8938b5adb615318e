"""A flood of forged webhooks through the real port logs a bounded number of lines."""

from __future__ import annotations

import logging

import pytest


async def test_a_forged_webhook_flood_logs_a_bounded_number_of_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    import httpx

    from voicecall_trio.testing import running_daemon

    async with running_daemon({"provider": "twilio", "fromNumber": "+15550001234",
                               "twilio": {"accountSid": "AC" + "1" * 32,
                                          "authToken": "flood-test-token-0123"},
                               "publicUrl": "https://voice.example.com/voice/webhook"}) as d:
        with caplog.at_level(logging.INFO):
            async with httpx.AsyncClient() as http:
                for _ in range(200):
                    await http.post(d.webhook_url, data={"CallSid": "CA1"},
                                    headers={"X-Twilio-Signature": "Zm9yZ2Vk"})
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refused) <= 20
