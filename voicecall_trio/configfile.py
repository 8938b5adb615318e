"""Finding and reading the config file, and the paths derived from it, on the stdlib only.

``config.py`` validates the whole document with msgspec; the CLI needs just the socket and
journal paths, and importing msgspec would cost it half its start-up budget. Both use these
functions, so the daemon and the CLI always agree on where things are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError

DEFAULT_STORE = "~/clawd/voice-calls"
CONFIG_SEARCH = ("config.toml", "config.json", "config.json5")


def default_config_path(environ: Mapping[str, str]) -> str | None:
    """``VOICECALL_CONFIG``, else the first of ``~/.config/voicecall/config.{toml,json,json5}``."""
    if environ.get("VOICECALL_CONFIG"):
        return os.path.expanduser(environ["VOICECALL_CONFIG"])
    base = os.path.join(
        os.path.expanduser(environ.get("XDG_CONFIG_HOME") or "~/.config"), "voicecall"
    )
    for name in CONFIG_SEARCH:
        candidate = os.path.join(base, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _json5_loads(text: str) -> Any:
    import json5

    return json5.loads(text)


def _toml_loads(text: str) -> Any:
    import tomllib

    return tomllib.loads(text)


def parse_document(text: str, suffix: str) -> Any:
    """JSON, JSON5 or TOML by suffix; an unknown suffix tries JSON, then JSON5, then TOML."""
    loaders: dict[str, Callable[[str], Any]] = {
        ".json": json.loads, ".json5": _json5_loads, ".toml": _toml_loads,
    }
    loader = loaders.get(suffix.lower())
    if loader is not None:
        try:
            return loader(text)
        except Exception as exc:
            raise ConfigError(f"cannot parse config ({suffix[1:]}): {exc}") from None
    for fallback in (json.loads, _json5_loads, _toml_loads):
        try:
            return fallback(text)
        except Exception:
            continue
    raise ConfigError("cannot parse config: not JSON, JSON5 or TOML")


MAX_CONFIG_BYTES = 4 * 1024 * 1024  # a config is a few KiB; /dev/zero is not a config


def read_document(path: str | os.PathLike[str]) -> Any:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is over {MAX_CONFIG_BYTES // (1024 * 1024)} MiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode read it
    return parse_document(text, os.path.splitext(os.fspath(path))[1])


def extract_section(doc: Any) -> tuple[dict[str, Any], str]:
    """Accept the bare plugin config or a whole assistant config; return (section, key prefix)."""
    if not isinstance(doc, dict):
        raise ConfigError("config must be an object at the top level")
    entry = doc.get("plugins", {})
    if isinstance(entry, dict) and "entries" in entry:
        prefix = "plugins.entries.voice-call"
        plugin = entry.get("entries", {}).get("voice-call")
        if plugin is None:
            raise ConfigError(f"{prefix}: missing (the file has no voice-call plugin entry)")
        if not isinstance(plugin, dict):
            raise ConfigError(f"{prefix}: must be an object")
        section = plugin.get("config", {})
        if not isinstance(section, dict):
            raise ConfigError(f"{prefix}.config: must be an object")
        section = dict(section)
        if "enabled" in plugin and "enabled" not in section:
            section["enabled"] = plugin["enabled"]
        return section, prefix + ".config"
    return doc, ""


def store_dir(store: str | None) -> str:
    return os.path.expanduser(store or DEFAULT_STORE)


def socket_path(store: str | None, configured: str | None, environ: Mapping[str, str]) -> str:
    """``VOICECALL_SOCKET``, else ``control.socketPath``, else ``<store>/voicecall.sock``."""
    if environ.get("VOICECALL_SOCKET"):
        return os.path.expanduser(environ["VOICECALL_SOCKET"])
    if configured:
        return os.path.expanduser(configured)
    return os.path.join(store_dir(store), "voicecall.sock")


def locate(config: str | None, environ: Mapping[str, str]) -> tuple[str, str]:
    """(socket path, journal path) as the daemon would derive them, without validating."""
    path = config or default_config_path(environ)
    section: dict[str, Any] = {}
    if path is not None:
        section, _ = extract_section(read_document(path))
    store = section.get("store") if isinstance(section.get("store"), str) else None
    control = section.get("control") if isinstance(section.get("control"), dict) else {}
    configured = control.get("socketPath") if isinstance(control, dict) else None
    sock = socket_path(store, configured if isinstance(configured, str) else None, environ)
    return sock, os.path.join(store_dir(store), "calls.jsonl")
