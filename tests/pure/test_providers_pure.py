"""The carriers' sans-IO modules import no trio, httpx or web framework (DESIGN section 3).

One fresh interpreter (a subprocess, since this test process has trio loaded already) imports
every pure module of ``providers`` and reports which heavy packages came with them.
"""

from __future__ import annotations

import subprocess
import sys

PURE = [
    "voicecall_trio.providers",
    "voicecall_trio.providers.forms",
    "voicecall_trio.providers.rest_spec",
    "voicecall_trio.providers.twilio.signature",
    "voicecall_trio.providers.twilio.signed_url",
    "voicecall_trio.providers.twilio.webhooks",
    "voicecall_trio.providers.twilio.urls",
    "voicecall_trio.providers.twilio.twiml",
    "voicecall_trio.providers.twilio.rest",
    "voicecall_trio.providers.twilio.flow",
    "voicecall_trio.providers.telnyx.signature",
    "voicecall_trio.providers.telnyx.webhooks",
    "voicecall_trio.providers.telnyx.rest",
]
HEAVY = {"trio", "httpx", "quart", "quart_trio", "hypercorn", "trio_websocket"}


def test_the_pure_provider_modules_import_nothing_heavy() -> None:
    code = (
        f"import importlib, sys\n"
        f"for name in {PURE!r}: importlib.import_module(name)\n"
        f"print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == ""
