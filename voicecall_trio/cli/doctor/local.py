"""The doctor's checks that need no network: config, daemon, socket, public URL, keys.

Each returns a ``Check`` (and what the later checks need from it). Read-only: nothing here
changes a file or the daemon. Details never contain a secret.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ... import feature_keys
from ...tunnel.plan import plan_for
from .report import Check, fail, ok, skip

if TYPE_CHECKING:
    from ...config import VoiceCallConfig

HEALTH_TIMEOUT_S = 5.0
HTTPS_WARNING = "warning: carriers want https (Twilio and Telnyx refuse plain http in production)"


def check_config(path: str | None, environ: Mapping[str, str]
                 ) -> tuple[Check, VoiceCallConfig | None]:
    from ...config import load_config
    from ...errors import ConfigError

    try:
        config = load_config(path, environ)
    except ConfigError as exc:
        return fail("config", exc.message), None
    detail = f"valid: provider {config.provider}, store {config.store_dir}"
    if config.skip_signature_verification and config.provider != "mock":
        return fail("config", f"{detail}; but skipSignatureVerification is on: anyone can "
                              "forge webhooks (local testing only)"), config
    return ok("config", detail), config


def check_daemon(sock: str) -> tuple[Check, dict[str, Any] | None]:
    from ...errors import DaemonUnreachable, RpcError
    from ...rpc.client import SyncClient

    try:
        with SyncClient(sock) as client:
            health = client.call("daemon.health", timeout=HEALTH_TIMEOUT_S)
    except (DaemonUnreachable, RpcError) as exc:
        return fail("daemon", str(exc)), None
    except OSError as exc:  # a timeout: something holds the socket but does not answer
        return fail("daemon", f"{sock}: no answer to daemon.health ({exc or 'timed out'})"), None
    if not isinstance(health, dict):
        return fail("daemon", f"{sock}: daemon.health answered {health!r}"), None
    binds = health.get("listen")
    listen = ", ".join(str(b) for b in binds) if isinstance(binds, list) and binds else "?"
    state = "ready" if health.get("ready", True) else "still starting"
    return ok("daemon", f"{state}: version {health.get('version')} on {sock}, "
                        f"{health.get('activeCalls')} active call(s), http {listen}"), health


def check_socket(sock: str) -> Check:
    try:
        mode = os.stat(sock).st_mode & 0o777
    except OSError as exc:
        return skip("socket", f"{sock}: {exc.strerror or exc}")
    if mode != 0o600:
        return fail("socket", f"{sock} is mode {mode:o}, want 600 (anyone who can open it "
                              "can place calls)")
    return ok("socket", f"{sock} is mode 600")


def public_url_in_force(config: VoiceCallConfig, health: dict[str, Any] | None) -> str | None:
    """The daemon's URL when it runs (a tunnel reports it there), else ``publicUrl``."""
    if health is not None:
        url = health.get("publicUrl")
        return url if isinstance(url, str) and url else None
    return config.public_url


def check_public_url(config: VoiceCallConfig, health: dict[str, Any] | None
                     ) -> tuple[Check, str | None]:
    """Which URL is in force and where it came from (config, ngrok, tailscale)."""
    plan = plan_for(config)
    url = public_url_in_force(config, health)
    if url is None:
        if config.provider == "mock":
            return skip("publicUrl", "none: the mock carrier needs no public URL"), None
        if plan.kind in ("ngrok", "tailscale") and health is None:
            return skip("publicUrl", f"from {plan.kind} ({plan.key}): known once the daemon "
                                     "runs"), None
        return fail("publicUrl", "none: carriers cannot reach the webhook; set publicUrl, "
                                 "or tunnel.provider (ngrok, tailscale-funnel)"), None
    notes = [f"{url} (from {plan.kind})"]
    if plan.overridden:
        notes.append(f"publicUrl wins over {plan.overridden}")
    if config.public_url and url != config.public_url:
        notes.append(f"the config file says {config.public_url}: restart the daemon to use it")
    if plan.kind == "tailscale" and plan.mode == "serve":
        notes.append("warning: Tailscale Serve is tailnet-only, carriers cannot reach it")
    if not url.startswith("https://") and config.provider != "mock":
        notes.append(HTTPS_WARNING)
    return ok("publicUrl", "; ".join(notes)), url


def check_keys(config: VoiceCallConfig, environ: Mapping[str, str]) -> Check:
    """STT, TTS and reply keys for the features that are on (values never shown)."""
    needs = [n for n in feature_keys.key_needs(config, environ) if n.needed or n.present]
    if not needs:
        return skip("keys", "no feature that needs an API key is on (streaming off, "
                            "responseBaseUrl not OpenAI's)")
    missing = [n for n in needs if not n.present and n.feature != "replies"]
    parts = []
    for need in needs:
        if need.present:
            parts.append(f"{need.feature} key present")
        elif need.feature == "replies":  # a registered agent answers without one
            parts.append("no reply key: built-in replies need one (responseApiKey / "
                         "OPENAI_API_KEY); a registered agent answers without")
        else:
            parts.append(f"{need.feature} key MISSING")
    parts.append(replies_detail(config))
    warning = config.streaming_warning()
    if warning:  # what serve says at start, in the same words
        parts.append(warning)
    if missing:
        return fail("keys", "; ".join(parts) + " (set " + ", ".join(
            n.key_name for n in missing) + ")")
    return ok("keys", "; ".join(parts))


def replies_detail(config: VoiceCallConfig) -> str:
    """Who answers callers when no gateway agent is registered (never the key itself)."""
    from ...agent.chat import is_openai, model_name, shown_url

    host = shown_url(config.response_base_url)
    if config.response_key():
        return f"replies: built-in, {model_name(config.response_model)} at {host}"
    if not is_openai(config.response_base_url):
        return f"replies: built-in, {model_name(config.response_model)} at {host} (no key)"
    return "replies: only a registered agent answers (no built-in reply key)"
