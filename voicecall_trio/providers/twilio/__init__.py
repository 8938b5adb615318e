"""The Twilio carrier, one module per job.

Pure (no trio, no httpx): ``signature`` (HMAC-SHA1 as twilio-python computes it),
``signed_url`` (which URL Twilio signed, behind a tunnel or proxy), ``webhooks``
(a request's body and query -> a ``TwilioWebhook`` with its events), ``urls`` (our callback
URL grammar: ``callId``, ``type``, ``turn``, ``said``), ``twiml`` (the documents we answer),
``rest`` (REST requests as values) and ``flow`` (the conversation: which TwiML answers which
webhook, and which turn token is current). The async ``shell`` (``TwilioProvider``) verifies,
finds the call record, delivers the flow's events and renders its reply.

Nothing is imported here, so ``import voicecall_trio.providers.twilio.signature`` stays cheap.
"""
