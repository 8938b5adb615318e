"""``voicecall init``: write a commented TOML config for one carrier, then run ``doctor`` on it.

The set-up for a real carrier is ``voicecall init`` then ``voicecall serve``. Values come from
flags; on a terminal, what is missing is asked for (secrets with ``getpass``, never echoed);
without a terminal, missing values are a usage error (exit 2) naming the flags. A value the
environment already supplies (``TWILIO_AUTH_TOKEN`` ...) is not copied into the file: it is
left as a comment saying where it comes from.

The file holds secrets, so it is created 0600 (``os.open``, whatever the umask), in a
directory created 0700; an existing file is kept unless ``--force`` (exit 1). The text is
validated by the config loader before it is written and read back after, so what ``init``
writes is what ``serve`` accepts. ``doctor`` runs last, for information: its verdict does not
change ``init``'s exit code (the daemon is usually not running yet, so its checks fail).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..errors import Failed, UsageError
from .config_template import ALL_FIELDS, FROM, REQUIRED, Field, render_config
from .outcome import EXIT_OK

Provider = Literal["twilio", "telnyx", "mock"]
Tunnel = Literal["none", "ngrok", "tailscale-funnel", "tailscale-serve"]
PROVIDERS = ("twilio", "telnyx", "mock")
PROMPT_TRIES = 3


def ask_line(prompt: str) -> str:
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not line:
        raise UsageError("no answer (end of input)")
    return line.strip()


def ask_secret(prompt: str) -> str:
    import getpass

    return getpass.getpass(prompt, stream=sys.stderr).strip()


@dataclass
class Asker:
    """How missing values are obtained (injected by tests)."""

    interactive: bool
    line: Callable[[str], str] = ask_line
    secret: Callable[[str], str] = ask_secret

    def ask(self, field: Field) -> str:
        read = self.secret if field.secret else self.line
        for _ in range(PROMPT_TRIES):
            try:
                answer = read(f"{field.label}{' (not shown)' if field.secret else ''}: ")
            except (EOFError, KeyboardInterrupt):
                raise UsageError(f"no value for {field.flag}; nothing written") from None
            if answer:
                return answer
        raise UsageError(f"no value for {field.flag}")


def public_url_of(value: str | None) -> str | None:
    """``--public-url`` checked: an absolute http(s) URL, or None."""
    if not value:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--public-url {value!r}: must be an http(s) URL, like "
                         "https://voice.example.com")
    return value


def ask_public_url(asker: Asker) -> str | None:
    """On a terminal, the public URL (optional: an empty answer leaves it unset)."""
    try:
        answer = asker.line("Public URL carriers reach this machine at (empty: none yet, or "
                            "use --tunnel): ")
    except (EOFError, KeyboardInterrupt):
        raise UsageError("no answer for --public-url; nothing written") from None
    return public_url_of(answer)


def collect(provider: str, given: Mapping[str, str | None], environ: Mapping[str, str],
            asker: Asker) -> tuple[dict[str, str], dict[str, str]]:
    """(key path -> value, key path -> env var) for ``provider``'s required fields: flags
    first, then the environment, then (on a terminal) the user."""
    values: dict[str, str] = {}
    from_env: dict[str, str] = {}
    missing: list[Field] = []
    for field in REQUIRED[provider]:
        value = given.get(field.name)
        if value:
            values[field.key] = value
        elif field.env and environ.get(field.env):
            from_env[field.key] = field.env
        else:
            missing.append(field)
    if missing and not asker.interactive:
        flags = ", ".join(f.flag for f in missing)
        raise UsageError(f"provider {provider} needs {flags} (no terminal to ask on)")
    for field in missing:
        values[field.key] = asker.ask(field)
    if provider == "mock" and given.get("from_number"):
        values[FROM.key] = str(given["from_number"])
    return values, from_env


def default_path(environ: Mapping[str, str]) -> str:
    base = os.path.expanduser(environ.get("XDG_CONFIG_HOME") or "~/.config")
    return os.path.join(base, "voicecall", "config.toml")


def check(text: str, environ: Mapping[str, str]) -> None:
    """Load ``text`` as ``serve`` would; a bad value is a usage error naming its flag."""
    import tomllib

    from ..config import build_config
    from ..errors import ConfigError

    try:
        build_config(tomllib.loads(text), environ)
    except ConfigError as exc:
        message = exc.message
        for field in ALL_FIELDS.values():
            if message.startswith(field.key + ":"):
                message = f"{field.flag} ({message})"
                break
        else:
            if message.startswith("publicUrl:"):
                message = f"--public-url ({message})"
        raise UsageError(message) from None


def write_private(path: str, text: str, *, force: bool) -> None:
    """Write ``text`` to ``path`` with mode 0600; never replace a file unless ``force``."""
    try:
        _write_private(path, text, force=force)
    except OSError as exc:
        raise Failed(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_private(path: str, text: str, *, force: bool) -> None:
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700)
        os.chmod(parent, 0o700)  # whatever the umask
    data = text.encode("utf-8")
    if not force:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise Failed(f"{path} exists; pass --force to replace it") from None
        target = path
    else:
        target = f"{path}.{os.getpid()}.tmp"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if target != path:
        try:
            os.replace(target, path)
        except OSError:
            os.unlink(target)
            raise


def run_doctor(path: str) -> None:
    """``voicecall doctor --config path``, for information only."""
    try:
        from .doctor import doctor
    except ImportError as exc:
        print(f"note: doctor is not available ({exc}); skipped", file=sys.stderr)
        return
    print(f"\nvoicecall doctor --config {path} (for information: init's exit code does not "
          "depend on it; start the daemon with `voicecall serve` for the daemon checks):")
    sys.stdout.flush()
    try:
        doctor(config=path)
    except Exception as exc:  # its failure is a report, not init's failure
        print(f"note: doctor could not finish: {exc}", file=sys.stderr)


def init(*, provider: Provider | None = None, from_number: str | None = None,
         account_sid: str | None = None, auth_token: str | None = None,
         api_key: str | None = None, connection_id: str | None = None,
         public_key: str | None = None, public_url: str | None = None,
         tunnel: Tunnel | None = None, config: str | None = None, force: bool = False,
         skip_doctor: bool = False) -> int:
    """Write a commented config for a carrier (asks for what is missing), then run doctor.

    Parameters
    ----------
    provider
        twilio, telnyx or mock.
    from_number
        The caller id of outbound calls (E.164).
    account_sid
        Twilio Account SID.
    auth_token
        Twilio Auth Token (asked without echo on a terminal; prefer that to the flag).
    api_key
        Telnyx API key (asked without echo on a terminal).
    connection_id
        Telnyx connection id.
    public_key
        Telnyx public key.
    public_url
        The public URL carriers reach the webhook at (if you run your own tunnel/proxy).
    tunnel
        A tunnel the daemon starts: ngrok, tailscale-funnel, tailscale-serve or none.
    config
        Where to write (default ~/.config/voicecall/config.toml).
    force
        Replace an existing file.
    skip_doctor
        Do not run doctor afterwards.
    """
    env = os.environ
    asker = Asker(interactive=sys.stdin.isatty())
    chosen: str | None = provider
    if chosen is None:
        if not asker.interactive:
            raise UsageError("--provider is required (twilio, telnyx or mock)")
        try:
            chosen = asker.line("Carrier (twilio, telnyx or mock): ").lower()
        except (EOFError, KeyboardInterrupt):
            raise UsageError("no value for --provider; nothing written") from None
        if chosen not in PROVIDERS:
            raise UsageError(f"--provider: {chosen!r} is not twilio, telnyx or mock")
    path = os.path.abspath(os.path.expanduser(config)) if config else default_path(env)
    if not path.endswith(".toml"):
        raise UsageError(f"--config {path}: init writes TOML; the name must end in .toml")
    if os.path.isdir(path):
        raise Failed(f"{path} is a directory")
    if os.path.lexists(path) and not force:
        raise Failed(f"{path} exists; pass --force to replace it")
    given = {"from_number": from_number, "account_sid": account_sid, "auth_token": auth_token,
             "api_key": api_key, "connection_id": connection_id, "public_key": public_key}
    values, from_env = collect(chosen, given, env, asker)
    public_url = public_url_of(public_url)
    if (chosen != "mock" and public_url is None and (tunnel or "none") == "none"
            and asker.interactive):
        public_url = ask_public_url(asker)
    text = render_config(chosen, values, from_env, public_url=public_url, tunnel=tunnel)
    check(text, env)
    write_private(path, text, force=force)
    from ..config import load_config

    load_config(path, env)  # what serve will read
    print(f"wrote {path} (mode 600)")
    if chosen != "mock" and not public_url and (tunnel or "none") == "none":
        print("note: no publicUrl and no tunnel: carriers cannot reach the webhook until you "
              "set one (docs/operations.md, Exposure)", file=sys.stderr)
    if env.get("VOICECALL_CONFIG") and os.path.abspath(env["VOICECALL_CONFIG"]) != path:
        print(f"note: VOICECALL_CONFIG points at {env['VOICECALL_CONFIG']}; the daemon reads "
              "that file, not this one", file=sys.stderr)
    default = path == default_path(env)
    print("next: voicecall serve" + ("" if default else f" --config {path}"))
    if not skip_doctor:
        run_doctor(path)
    return EXIT_OK


__all__ = ["Asker", "collect", "init", "write_private"]
