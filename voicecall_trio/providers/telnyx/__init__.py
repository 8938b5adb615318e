"""The Telnyx carrier (Call Control v2), one module per job.

Pure (no trio, no httpx): ``signature`` (Ed25519 over ``timestamp|body``, the replay window),
``webhooks`` (an envelope -> a ``TelnyxWebhook`` with its events, our ``client_state``) and
``rest`` (REST requests as values, each with a deterministic ``command_id``). The async
``shell`` (``TelnyxProvider``) verifies, finds the call record, delivers the events and sends
the answer/reject/speak commands.

Nothing is imported here, so ``import voicecall_trio.providers.telnyx.signature`` stays cheap.
"""
