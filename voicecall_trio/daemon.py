"""The root nursery: the only module that knows the whole task tree.

Start order (each child reports ready through ``task_status.started()``)::

    root
    ├── journal writer            after replaying calls.jsonl
    └── calls scope
        ├── provider.run          (the mock's simulated callees)
        ├── supervisor.run        reconciles replayed calls, then owns one task per call
        └── front
            ├── signal watcher    SIGTERM / SIGINT -> graceful stop (installed before
            │                     anything answers, so an early SIGTERM is graceful too)
            ├── reloader          SIGHUP -> re-read the config file (reloader.py)
            ├── JSON-RPC server   on the Unix socket bound first, as the single-instance lock
            ├── HTTP front        front.py: webhooks answered in place; media-stream
            │                     upgrades to media/route.py; other requests
            │                     (/healthz, h2, chunked) handed to Hypercorn and Quart
            ├── tunnel            tunnel/: ngrok or Tailscale, once the port is bound; its
            │                     URL is the provider's before ready (publicUrl: none)
            ├── model check       model_lifecycle.py: one warning per model near shutdown
            ├── signal watcher    SIGTERM / SIGINT -> graceful stop
            └── systemd watchdog  when WATCHDOG_USEC is set (systemd.py)

Stopping runs the other way: media streams are closed with 1001, calls are ended (up to
``shutdownGraceSeconds``), then the HTTP server drains and the socket is unlinked, then the
journal writer flushes and exits.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import resource
import secrets
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
import trio

from . import __version__, systemd
from .agent.builtin import make_builtin
from .agent.chat import model_name, shown_url
from .config import VoiceCallConfig
from .errors import DaemonStartError, SocketInUse
from .health import health_report
from .journal import Journal
from .providers import Provider
from .reloader import Reloader
from .replay import replay_file
from .rpc.methods import build_methods
from .rpc.server import RpcServer
from .rpc.unix import open_unix_listener
from .supervisor import Supervisor
from .tunnel.supervisor import TunnelSupervisor

if TYPE_CHECKING:
    from .media.route import MediaRoute

log = logging.getLogger("voicecall.daemon")

# Collector thresholds once start-up is frozen (Python's default is (700, 10, 10)). A full
# collection walks every live tracked object the calls have made: measured 9 ms for 250k and
# 79 ms for 1M (50-145 ms in the media benchmark at 200 calls, about once a second: that
# pause was its p99 latency). Objects freed by reference counting never count towards a
# collection, so what triggers one is survivors and cycles. A young generation of 10k costs
# 0.6-0.8 ms a pass (0.05 ms at 700, 4-5 ms at 50k), with the same total GC time; 20 young
# passes per middle one and 100 middle ones per full one put full passes 20M net allocations
# apart (minutes at 200 calls, where the default's 70k came every second), and at most a few
# MB of cyclic garbage waits in the young generations meanwhile.
GC_THRESHOLDS = (10_000, 20, 100)


@dataclass
class DaemonHandle:
    """What a test or the CLI can see of a running daemon."""

    config: VoiceCallConfig
    socket_path: Path
    supervisor: Supervisor
    provider: Provider
    journal: Journal
    http_binds: list[str] = field(default_factory=list)
    media_route: MediaRoute | None = None  # the media WebSocket route, when streams are served
    stop_event: trio.Event = field(default_factory=trio.Event)
    ready: bool = False  # every part started (what READY=1 tells systemd)
    config_path: Path | None = None  # the file SIGHUP re-reads
    reloader: Reloader | None = None  # while signals are handled
    tunnel: TunnelSupervisor | None = None  # the tunnel in force (None: publicUrl or none)
    chat_http: httpx.AsyncClient | None = None  # the built-in replies' client (a reload
    #                                             rebuilds the responder on it)
    # echoed to doctor's reachability probe (health.PROBE_HEADER); shown on the socket only
    probe_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def stop(self) -> None:
        self.stop_event.set()


def make_provider(config: VoiceCallConfig, http: httpx.AsyncClient) -> Provider:
    from .providers import make_provider as make

    return make(config, http)


def lock_store(store: Path) -> IO[bytes]:
    """An exclusive flock on ``<store>/.lock``: one daemon per store, whatever the socket."""
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    mode = store.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("store %s is accessible to other users (mode %o): it holds phone numbers "
                    "and transcripts; chmod 700 is recommended", store, mode)
    fd = os.open(store / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    handle = os.fdopen(fd, "r+b")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DaemonStartError(
            f"another voicecall daemon is already using the store {store}"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle


async def run_daemon(
    config: VoiceCallConfig,
    *,
    socket_path: Path | None = None,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    http_client: httpx.AsyncClient | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[DaemonHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the daemon until cancelled or signalled; report its handle once it is ready.

    ``socket_path`` (``voicecall serve --socket``) wins over the config's socket
    (``VOICECALL_SOCKET``, ``control.socketPath``, ``<store>/voicecall.sock``).
    ``config_path`` is the file ``config`` came from: SIGHUP re-reads it.
    """
    env = dict(os.environ if environ is None else environ)
    if socket_path is None:
        socket_path = config.socket_path(env)
    if config.skip_signature_verification:
        log.warning("skipSignatureVerification is on: webhooks are NOT verified "
                    "(local testing only; never expose this daemon)")
    streaming_problem = config.streaming_warning()
    if streaming_problem:
        log.warning("%s", streaming_problem)
    store_lock = lock_store(config.store_dir)
    try:
        try:
            listener = open_unix_listener(socket_path)
        except SocketInUse as exc:
            raise DaemonStartError(f"{exc}; stop it first (voicecall status shows it)") from None
        except OSError as exc:
            raise DaemonStartError(
                f"cannot open the control socket {socket_path}: {exc.strerror or exc}"
            ) from None
        try:
            await _run_bound(config, env, socket_path, listener, http_client, handle_signals,
                             task_status, config_path)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()
                try:
                    socket_path.unlink()
                except FileNotFoundError:
                    pass
    finally:
        store_lock.close()


async def _run_bound(
    config: VoiceCallConfig,
    env: dict[str, str],
    socket_path: Path,
    listener: trio.SocketListener,
    http_client: httpx.AsyncClient | None,
    handle_signals: bool,
    task_status: trio.TaskStatus[DaemonHandle],
    config_path: Path | None = None,
) -> None:
    # every kept file (calls.jsonl.N .. .1, then calls.jsonl): the index it builds finds
    # ended calls and known carrier ids across restarts and rotations
    replayed = await trio.to_thread.run_sync(replay_file, config.journal_path,
                                             config.journal.keep_files)
    if replayed.bad_lines or replayed.bad_rotated:
        log.warning("journal %s: %s", config.journal_path, replayed.describe_bad())
    if replayed.lines:
        log.info("journal replayed: %d lines in %d file(s), %d live call(s), %d ended",
                 replayed.lines, replayed.files, len(replayed.live), replayed.ended)
    own_client = http_client is None
    http = http_client or httpx.AsyncClient(timeout=10.0)
    provider = make_provider(config, http)
    journal = Journal(config.journal_path, max_bytes=config.journal.max_bytes,
                      keep_files=config.journal.keep_files, index=replayed.index)
    supervisor = Supervisor(config, provider, journal, clock=time.time,
                            ids=lambda: str(uuid.uuid4()))
    journal.live_records = supervisor.live_records
    if config.streaming_active():
        from .voice import voice_factory

        supervisor.voice_factory = voice_factory(config, provider, http)
    # the reply client has its own connections: an injected carrier client may be in memory
    chat_http = httpx.AsyncClient(timeout=10.0)
    supervisor.builtin = make_builtin(config, chat_http)
    _log_replies(config, supervisor.builtin is not None)
    handle = DaemonHandle(config, socket_path, supervisor, provider, journal,
                          config_path=config_path, chat_http=chat_http)
    try:
        async with trio.open_nursery() as root:
            await root.start(journal.run)
            try:
                await _run_calls(config, env, handle, listener, handle_signals, replayed,
                                 task_status)
            finally:
                await journal.close()
    finally:
        with trio.CancelScope(shield=True):
            await chat_http.aclose()
            if own_client:
                await http.aclose()


def _log_replies(config: VoiceCallConfig, builtin: bool) -> None:
    """Say once who answers callers when no gateway agent is registered (never the key)."""
    if builtin:
        log.info("built-in replies: %s at %s (a registered agent takes precedence)",
                 model_name(config.response_model), shown_url(config.response_base_url))
    else:
        log.info("no built-in replies (responseBaseUrl is OpenAI's and no key is set): "
                 "callers are answered only by a registered agent")


async def _run_calls(
    config: VoiceCallConfig,
    env: dict[str, str],
    handle: DaemonHandle,
    listener: trio.SocketListener,
    handle_signals: bool,
    replayed: Any,
    task_status: trio.TaskStatus[DaemonHandle],
) -> None:
    supervisor = handle.supervisor
    provider = handle.provider
    started = time.monotonic()
    async with trio.open_nursery() as calls_scope:
        await calls_scope.start(provider.run, supervisor)
        await calls_scope.start(supervisor.run, replayed)
        simulate = getattr(provider, "simulate_inbound", None)

        def health() -> dict[str, Any]:  # GET /healthz
            return health_report(supervisor, started=started, public_url=provider.public_url,
                                 listen=handle.http_binds)

        def rpc_health() -> dict[str, Any]:  # daemon.health: also whether all parts started
            return {**health_report(supervisor, started=started,
                                    public_url=provider.public_url, listen=handle.http_binds,
                                    ready=handle.ready), "probeToken": handle.probe_token}

        methods = build_methods(supervisor, health=rpc_health, simulate_inbound=simulate)
        rpc = RpcServer(methods)
        http_stop = trio.Event()
        http_done = trio.Event()
        handle.media_route = media_route = make_media_route(config, provider, supervisor)
        async with trio.open_nursery() as front:
            if handle_signals:  # before anything answers: a SIGTERM from then on is graceful
                await front.start(_watch_signals, handle.stop_event)
                handle.reloader = Reloader(handle, handle.config_path, env)
                await front.start(handle.reloader.watch)
            await front.start(rpc.serve, handle.socket_path, listener)
            handle.http_binds = await front.start(partial(
                _serve_http, config, provider, supervisor, health, http_stop, http_done,
                media_route, probe_token=handle.probe_token))
            # the tunnel forwards to the bound port; its URL is in force before ready
            from .model_lifecycle import warn_about_models
            from .tunnel.task import start_tunnel

            handle.tunnel = await start_tunnel(front, config, provider.set_public_url,
                                               handle.http_binds, env, stop=handle.stop_event)
            interval = systemd.watchdog_interval_s(env)
            if interval:
                front.start_soon(systemd.watchdog, interval, env)
            log.info("voicecall %s ready: provider %s, socket %s, http %s", __version__,
                     provider.name, handle.socket_path, ", ".join(handle.http_binds))
            handle.ready = True
            # Start-up objects (modules, config, app) live as long as the process: keep them
            # out of the collector's full passes, which otherwise stall every request in turn.
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            systemd.notify("READY=1", env)
            task_status.started(handle)
            front.start_soon(warn_about_models, config, env)  # never delays or fails start-up
            await handle.stop_event.wait()
            log.info("stopping: ending %d live call(s)", supervisor.active_count)
            systemd.notify("STOPPING=1", env)
            if media_route is not None:  # streams close with 1001 before their calls end
                await media_route.close_all(1001)
            await supervisor.shutdown(config.shutdown_grace_seconds)
            http_stop.set()
            with trio.move_on_after(1.5):
                await http_done.wait()  # Hypercorn drains on its trigger
            front.cancel_scope.cancel()
        calls_scope.cancel_scope.cancel()
    log.info("stopped")


async def _serve_http(
    config: VoiceCallConfig,
    provider: Provider,
    supervisor: Supervisor,
    health: Callable[[], dict[str, Any]],
    stop: trio.Event,
    done: trio.Event,
    media_route: MediaRoute | None = None,
    *,
    probe_token: str | None = None,
    task_status: trio.TaskStatus[list[str]],
) -> None:
    from hypercorn.config import Config as HypercornConfig

    from . import front as front_module
    from .front import HttpFront
    from .front_limits import FD_RESERVE, connection_cap
    from .web import WebhookGate, create_app_for

    gate = WebhookGate(config, provider, supervisor, probe_token=probe_token)
    app = create_app_for(gate, health=health)
    hc = HypercornConfig()
    hc.accesslog = None
    hc.errorlog = logging.getLogger("voicecall.http")
    # idle keep-alive connections (carriers keep them) get this long to finish at stop
    hc.graceful_timeout = 1.0
    hc.keep_alive_timeout = front_module.KEEP_ALIVE_S
    host = config.serve.bind
    try:
        listeners = await trio.open_tcp_listeners(config.serve.port, host=host, backlog=1024)
    except OSError as exc:
        raise DaemonStartError(
            f"cannot listen on {host}:{config.serve.port} (serve.bind/serve.port): "
            f"{exc.strerror or exc}"
        ) from None
    cap = connection_cap(config.serve.max_connections, fd_soft_limit())
    if cap < config.serve.max_connections:
        log.warning("serve.maxConnections %d lowered to %d: the open-file limit (RLIMIT_NOFILE) "
                    "is %d and %d descriptors are kept for the control socket, the journal "
                    "and outgoing requests", config.serve.max_connections, cap,
                    fd_soft_limit(), FD_RESERVE)
    try:
        await HttpFront(app, hc, gate, max_connections=cap,
                        media_route=media_route).serve(listeners, stop, task_status=task_status)
    finally:
        done.set()


def make_media_route(config: VoiceCallConfig, provider: Provider,
                     supervisor: Supervisor) -> MediaRoute | None:
    """The media WebSocket route, when streaming is active, the carrier offers streams and
    the supervisor has the call side (``stream_sessions``); else None (no route: 404)."""
    from .media.route import MediaRoute, authenticator_of

    sessions = getattr(supervisor, "stream_sessions", None)
    authenticator = authenticator_of(provider)
    if not config.streaming_active() or authenticator is None or sessions is None:
        return None
    return MediaRoute(config, authenticator, sessions)


def fd_soft_limit() -> int:
    """The process's soft RLIMIT_NOFILE (a very large number when unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


E = TypeVar("E", bound=BaseException)


def find_leaf(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` inside (possibly nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_leaf(inner, kind)
            if found is not None:
                return found
    return None


async def _watch_signals(stop: trio.Event, *,
                         task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Keep the handlers installed for the whole stop: a second SIGTERM while calls are being
    hung up must not kill the process with the default action (no cleanup, socket left)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if stop.is_set():
                log.warning("received %s again: already stopping (calls are being ended)",
                            signal.Signals(signum).name)
                continue
            log.info("received %s", signal.Signals(signum).name)
            stop.set()


def serve_forever(config: VoiceCallConfig, on_ready: Callable[[DaemonHandle], None] | None = None,
                  *, socket_path: Path | None = None, config_path: Path | None = None) -> None:
    """The blocking entry point of ``voicecall serve`` (``socket_path``: its ``--socket``;
    ``config_path``: the file ``config`` was read from, for SIGHUP)."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            handle: DaemonHandle = await nursery.start(
                partial(run_daemon, config, socket_path=socket_path, config_path=config_path))
            if on_ready is not None:
                on_ready(handle)

    try:
        trio.run(main)
    except BaseException as exc:
        # nursery.start wraps start-up refusals in exception groups: surface the one message
        refusal = find_leaf(exc, DaemonStartError)
        if refusal is not None:
            raise refusal from None
        raise
