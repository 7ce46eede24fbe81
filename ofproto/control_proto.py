"""The control protocol: JSON lines, one request -> one reply (pure framing).

Theory of operation
-------------------
A connection to the daemon's control socket carries UTF-8 JSON objects, one
per line (``\\n``-terminated).  The client writes a request::

    {"cmd": "dump-flows", "args": {...}}

and reads one reply line::

    {"ok": true, "result": ...}
    {"ok": false, "error": {"type": "ParseError", "message": "one line"}}

then may send the next request on the same connection.  ``monitor`` is the
one streaming command: the daemon answers with any number of
``{"packet_in": {...}}`` lines and then the final reply line.

A malformed line (not JSON, not an object, no ``cmd``, an unknown command,
``args`` not an object) gets an error reply of type ``ProtocolError``; the
connection (and the daemon) keep serving.  A line longer than
``MAX_LINE`` is answered with an error and the connection is closed, since
the framing can no longer be trusted.

This module only turns bytes into values and back; the socket I/O is in
``ofproto.control_io``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from dpif.errors import FlowpathError

MAX_LINE = 64 * 1024 * 1024  # an add-flows of a large rule file still fits

COMMANDS = ("add-flows", "mod-flows", "del-flows", "dump-flows", "dp-dump-flows", "status",
            "monitor")


class ControlError(FlowpathError):
    """The control socket: the daemon is unreachable, or spoke out of protocol."""


class ProtocolError(ControlError):
    """A request or reply that breaks the JSON-lines protocol."""


class RemoteError(ControlError):
    """The daemon refused a request; ``message`` is its one-line error."""

    def __init__(self, message: str, kind: str = "FlowpathError") -> None:
        self.kind = kind
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Request:
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)


def encode(obj: Any) -> bytes:
    """One protocol line."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=False).encode() + b"\n"


def encode_request(req: Request) -> bytes:
    return encode({"cmd": req.cmd, "args": req.args})


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error_reply(err: BaseException) -> dict[str, Any]:
    kind = type(err).__name__ if isinstance(err, FlowpathError) else "InternalError"
    text = " ".join(str(err).split()) or kind
    return {"ok": False, "error": {"type": kind, "message": text}}


def decode_request(line: bytes) -> Request:
    """Parse one request line; ``ProtocolError`` says what is wrong with it."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("request is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise ProtocolError(f"request is not JSON: {e.msg}", pos=e.pos) from None
    if not isinstance(obj, dict):
        raise ProtocolError("request is not a JSON object")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError("request has no \"cmd\" string")
    if cmd not in COMMANDS:
        raise ProtocolError("unknown command", cmd=cmd, known=",".join(COMMANDS))
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("\"args\" is not a JSON object", cmd=cmd)
    return Request(cmd, args)


def decode_reply(line: bytes) -> dict[str, Any]:
    """Parse one reply line (client side)."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"daemon sent a malformed reply: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("daemon sent a reply that is not a JSON object")
    return obj


def result_of(reply: dict[str, Any]) -> Any:
    """The result of a final reply, or ``RemoteError`` with the daemon's message."""
    if reply.get("ok") is True:
        return reply.get("result")
    err = reply.get("error") or {}
    raise RemoteError(str(err.get("message", "daemon reported an error")),
                      str(err.get("type", "FlowpathError")))


def arg(req: Request, name: str, typ: type | tuple[type, ...], default: Any = None, *,
        required: bool = False) -> Any:
    """A typed request argument (``ProtocolError`` naming it if wrong)."""
    if name not in req.args or req.args[name] is None:
        if required:
            raise ProtocolError("missing argument", cmd=req.cmd, arg=name)
        return default
    v = req.args[name]
    if isinstance(v, bool) and typ is int:
        raise ProtocolError("argument has the wrong type", cmd=req.cmd, arg=name)
    if not isinstance(v, typ):
        raise ProtocolError("argument has the wrong type", cmd=req.cmd, arg=name)
    return v
