"""The control socket's I/O: the daemon's server and the CLI's client.

Theory of operation
-------------------
The one place where the control protocol (``ofproto.control_proto``: JSON
lines) meets a socket, on both ends.

Server.  ``ControlServer.bind`` makes an ``AF_UNIX``/``SOCK_STREAM``
socket at the configured path, mode 0600 (root only when the daemon runs as
root), refusing to start if another daemon answers there and replacing a
stale socket file otherwise.  ``serve(stop)`` accepts until ``stop`` is set;
each connection gets its own thread that reads request lines and writes
reply lines.  No connection thread touches the bridge: each request is
``ControlCore.handle`` submitted to the datapath thread (``submit`` is
``Runner.call_soon``) and the thread waits for its future (bounded by
``call_timeout``).  ``monitor`` is a long poll: it asks the datapath thread
for ``packet_ins(since)``, sends what came, and when nothing did, sleeps
on a condition that ``Bridge.packet_in_listeners`` (called on the datapath
thread for each new packet-in) notifies -- with a generation counter, so a
packet-in that lands between the read and the sleep is not slept through.
It ends after ``count`` packet-ins, at ``timeout``, when the client hangs
up, or when the server stops; the last line is the final reply.
``close`` stops accepting, shuts every connection down and unlinks the
socket.

Client.  ``ControlClient(path)`` connects (a missing socket or a refused
connection is one ``ControlError`` naming the path and asking whether the
daemon runs); ``request`` sends one request and returns the result or
raises ``RemoteError`` with the daemon's one-line message; ``stream``
yields the streamed objects of ``monitor`` and then keeps the final result.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import structlog

from ofproto.control import ControlCore, packet_in_json
from ofproto.control_proto import (MAX_LINE, ControlError, ProtocolError, Request, arg,
                                   decode_reply, decode_request, encode, encode_request,
                                   error_reply, ok, result_of)

log = structlog.get_logger("ofproto.control_io")

T = TypeVar("T")
Submit = Callable[[Callable[[], object]], "Future[object]"]

_WAIT_SLICE = 0.25  # seconds a monitor sleeps before checking its client and the clock


class ControlServer:
    """JSON-lines control socket in front of a ``ControlCore``."""

    def __init__(self, path: str, core: ControlCore, submit: Submit, *,
                 call_timeout: float = 30.0) -> None:
        self.path = path
        self.core = core
        self.submit = submit
        self.call_timeout = call_timeout
        self.sock: socket.socket | None = None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._gen = 0
        self.log = log.bind(socket=path)
        self.call(lambda: core.bridge.packet_in_listeners.append(self._on_packet_in))

    # -- the datapath thread ------------------------------------------------------------

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the datapath thread and return its result."""
        fut = self.submit(fn)
        try:
            return fut.result(self.call_timeout)  # type: ignore[return-value]
        except FutureTimeout:
            raise ControlError("the datapath thread did not answer in time",
                               seconds=self.call_timeout) from None

    def _on_packet_in(self, _pin: object) -> None:  # on the datapath thread
        with self._cond:
            self._gen += 1
            self._cond.notify_all()

    # -- listening --------------------------------------------------------------------

    def bind(self) -> None:
        parent = os.path.dirname(self.path) or "."
        try:
            os.makedirs(parent, mode=0o755, exist_ok=True)
            if os.path.lexists(self.path):
                if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    raise ControlError("control socket path exists and is not a socket",
                                       socket=self.path)
                if _answers(self.path):
                    raise ControlError("another daemon is serving this control socket",
                                       socket=self.path)
                os.unlink(self.path)  # stale: left by a daemon that died
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            old = os.umask(0o177)
            try:
                sock.bind(self.path)
            finally:
                os.umask(old)
            os.chmod(self.path, 0o600)
            sock.listen(16)
            sock.settimeout(_WAIT_SLICE)
        except OSError as e:
            raise ControlError(f"cannot serve the control socket: {e.strerror or e}",
                               socket=self.path) from None
        self.sock = sock
        self.log.info("control socket listening")

    def serve(self, stop: threading.Event | None = None) -> None:
        """Accept connections until ``stop`` (or ``close``)."""
        assert self.sock is not None, "bind() first"
        while not self._stop.is_set() and not (stop is not None and stop.is_set()):
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    break
                raise
            conn.settimeout(None)
            t = threading.Thread(target=self._serve_conn, args=(conn,), daemon=True,
                                 name="flowpath-control")
            with self._lock:
                self._conns.add(conn)
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def close(self) -> None:
        """Stop accepting, hang up every connection, remove the socket file."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self.sock is not None:
            self.sock.close()
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:  # reading side only: a monitor can still send its final reply
            try:
                c.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        for t in threads:
            t.join(2.0)

    # -- one connection -------------------------------------------------------------

    def _serve_conn(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                line = rfile.readline(MAX_LINE + 1)
                if not line:
                    break
                if len(line) > MAX_LINE:
                    conn.sendall(encode(error_reply(ProtocolError(
                        "request line too long; closing", limit=MAX_LINE))))
                    break
                if not line.strip():
                    continue
                try:
                    req = decode_request(line)
                except ProtocolError as e:
                    self.log.info("malformed request", error=str(e))
                    conn.sendall(encode(error_reply(e)))
                    continue
                if req.cmd == "monitor":
                    reply = self._monitor(conn, req)
                    if reply is None:
                        break  # the client hung up
                else:
                    try:
                        reply = self.call(lambda: self.core.handle(req))
                    except ControlError as e:
                        reply = error_reply(e)
                conn.sendall(encode(reply))
        except OSError:
            pass  # the client went away mid-reply
        finally:
            rfile.close()
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _monitor(self, conn: socket.socket, req: Request) -> dict[str, Any] | None:
        try:
            count = arg(req, "count", int)
            timeout = arg(req, "timeout", (int, float))
            since = arg(req, "since", int)
            if since is None:
                _, since = self.call(lambda: self.core.packet_ins(1 << 62))
        except ControlError as e:
            return error_reply(e)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        sent, reason = 0, "shutdown"
        with self._lock:
            self.core.monitors += 1
        try:
            while not self._stop.is_set():
                with self._cond:
                    gen = self._gen
                first = since
                try:
                    pins, _ = self.call(lambda: self.core.packet_ins(first))
                except ControlError as e:
                    return error_reply(e)
                for p in pins:
                    if count is not None and sent >= count:
                        break
                    conn.sendall(encode({"packet_in": packet_in_json(p)}))
                    since, sent = p.seq, sent + 1
                if count is not None and sent >= count:
                    reason = "count"
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    reason = "timeout"
                    break
                if not self._stop.is_set() and _hung_up(conn):
                    return None
                wait = _WAIT_SLICE if deadline is None else min(_WAIT_SLICE, deadline - now)
                with self._cond:
                    if self._gen == gen and not self._stop.is_set():
                        self._cond.wait(wait)
        finally:
            with self._lock:
                self.core.monitors -= 1
        return ok({"delivered": sent, "reason": reason, "last_seq": since})


def _hung_up(conn: socket.socket) -> bool:
    r, _, _ = select.select([conn], [], [], 0)
    if not r:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class ControlClient:
    """One connection to a daemon's control socket."""

    def __init__(self, path: str, *, timeout: float | None = 120.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            hint = "is the daemon running? (flowpath daemon run --config FILE)"
            if e.errno in (errno.EACCES, errno.EPERM):
                hint = "the control socket is root only"
            raise ControlError(f"cannot connect to {path}: {e.strerror or e}; {hint}"
                               ) from None
        self.sock.settimeout(timeout)
        self._rfile = self.sock.makefile("rb")
        self.final: Any = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._rfile.close()
        self.sock.close()

    def _send(self, cmd: str, args: dict[str, Any]) -> None:
        try:
            self.sock.sendall(encode_request(Request(cmd, args)))
        except OSError as e:
            raise ControlError(f"lost the daemon at {self.path}: {e.strerror or e}") from None

    def _line(self) -> dict[str, Any]:
        try:
            line = self._rfile.readline(MAX_LINE + 1)
        except TimeoutError:
            raise ControlError("the daemon did not answer in time", socket=self.path) from None
        except OSError as e:
            raise ControlError(f"lost the daemon at {self.path}: {e.strerror or e}") from None
        if not line:
            raise ControlError("the daemon closed the connection", socket=self.path)
        return decode_reply(line)

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one request; its result (or ``RemoteError``)."""
        self._send(cmd, {k: v for k, v in args.items() if v is not None})
        return result_of(self._line())

    def stream(self, cmd: str, key: str, **args: Any) -> Iterator[dict[str, Any]]:
        """Send a streaming request; yield each ``{key: obj}``'s obj, keep the final result."""
        self._send(cmd, {k: v for k, v in args.items() if v is not None})
        while True:
            msg = self._line()
            if key in msg:
                yield msg[key]
                continue
            self.final = result_of(msg)
            return
