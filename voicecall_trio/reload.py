"""What a SIGHUP may change on a live daemon: old config + new config -> the config to run
with, the key paths applied, and the key paths that need a restart. Pure.

Rule: a key is applied live only if everything that reads it reads it again for each new
call or each new reply (``LIVE``); anything else (credentials, ports, paths, the carrier, the
store, streaming, tunnels, the journal, and every key added later until it is listed here)
keeps its old value, and its key path is reported so the operator knows a restart is due.
Listing a key here is a promise about its readers, so add one only with a test.

Calls in progress are not changed either way: their timers and greeting were fixed when they
started (``call.py`` reads the limits once per call); settings that are read per reply or per
utterance (``response*``, ``tts.*``) apply from the next one.

Key paths are the file's camelCase keys (``tts.voice``, ``maxConcurrentCalls``); values are
never reported, since many of them are secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from .config import VoiceCallConfig, validate

# key paths (fnmatch patterns) whose new value is applied on reload
LIVE: tuple[str, ...] = (
    "inboundPolicy",        # policy.inbound_refusal, per offer
    "allowFrom",            # idem
    "inboundGreeting",      # policy.inbound_metadata, per accepted call
    "toNumber",             # policy.outbound_request, per initiate
    "response*",            # the reply path, per reply
    "tts.voice",            # per utterance (Twilio <Say>, Telnyx speak, stream TTS)
    "tts.model",
    "tts.instructions",
    "tts.elevenlabs.voiceId",
    "tts.elevenlabs.modelId",
    "maxConcurrentCalls",   # the supervisor, per admission
    "maxDurationSeconds",   # call.py, once per new call
    "ringTimeoutMs",        # idem
    "transcriptTimeoutMs",  # per `continue`
    "outbound.defaultMode",  # per initiate
    "outbound.notifyHangupDelaySec",  # call.py, once per new call
)


@dataclass(frozen=True)
class ReloadPlan:
    config: VoiceCallConfig  # run with this from now on: old values, plus the live changes
    applied: tuple[str, ...]  # key paths whose new value is now in force
    needs_restart: tuple[str, ...]  # key paths that changed but keep their old value

    @property
    def changed(self) -> bool:
        return bool(self.applied)


def is_live(path: str) -> bool:
    """Whether the key at ``path`` may change on a running daemon."""
    return any(fnmatchcase(path, pattern) for pattern in LIVE)


def changed_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Key paths whose values differ between two config documents (builtins). Objects are
    compared key by key; anything else (lists included) as one value."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else key
            if key not in old or key not in new:
                out.append(path)
            else:
                out.extend(changed_paths(old[key], new[key], path))
        return out
    return [] if old == new else [prefix or "(top level)"]


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        document = document.setdefault(part, {})
    document[leaf] = value


def _get(document: Any, path: str) -> Any:
    for part in path.split("."):
        document = document[part]
    return document


def plan_reload(old: VoiceCallConfig, new: VoiceCallConfig) -> ReloadPlan:
    """Merge the live changes of ``new`` into ``old``; report the rest."""
    before, after = msgspec.to_builtins(old), msgspec.to_builtins(new)
    paths = changed_paths(before, after)
    applied = tuple(p for p in paths if is_live(p))
    restart = tuple(p for p in paths if not is_live(p))
    if not applied:
        return ReloadPlan(old, (), restart)
    merged = msgspec.to_builtins(old)
    for path in applied:
        _set(merged, path, _get(after, path))
    config = msgspec.convert(merged, VoiceCallConfig)
    validate(config)  # each value was valid in `new`; the mix must be too
    return ReloadPlan(config, applied, restart)


__all__ = ["LIVE", "ReloadPlan", "changed_paths", "is_live", "plan_reload"]
