"""A Unix-socket listener for trio, which has none built in.

The socket file doubles as the single-instance lock: before binding we try to ``connect()``
to an existing file; if something answers, another daemon owns it and we refuse to start.
Only a refused connection (a stale file left by a crash) lets us unlink it. The socket is
bound under ``umask(0o177)`` so it is created 0600, in a directory made 0700.
"""

from __future__ import annotations

import errno
import os
import socket as stdlib_socket
import stat
from pathlib import Path

import trio

from ..errors import SocketInUse

MAX_PATH_BYTES = 107  # sun_path is 108 bytes including the terminating NUL


def probe(path: Path) -> bool:
    """True when a live process accepts connections on ``path``."""
    sock = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(os.fspath(path))
    except FileNotFoundError:
        return False
    except OSError as exc:
        # refused / not a socket: stale file; anything else (EAGAIN on a full backlog): alive
        return exc.errno not in (errno.ECONNREFUSED, errno.ENOTSOCK, errno.ENOENT)
    else:
        return True
    finally:
        sock.close()


def bind_unix_socket(path: Path, backlog: int = 128) -> stdlib_socket.socket:
    raw = os.fsencode(path)
    if len(raw) > MAX_PATH_BYTES:
        raise OSError(errno.ENAMETOOLONG,
                      f"socket path is {len(raw)} bytes; Unix sockets allow {MAX_PATH_BYTES}",
                      os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            # never delete something that is not a socket (a mistyped path could be a journal)
            raise FileExistsError(errno.EEXIST, "exists and is not a socket", os.fspath(path))
        if probe(path):
            raise SocketInUse(f"another voicecall daemon is already listening on {path}")
        path.unlink()
    sock = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    return sock


def open_unix_listener(path: Path, backlog: int = 128) -> trio.SocketListener:
    sock = bind_unix_socket(path, backlog)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))
