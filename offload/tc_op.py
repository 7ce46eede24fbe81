"""One tc filter operation (add, replace, delete): the value ``TcNetlink.apply``
takes, and its netlink message -- type, flags and bytes (``tc_wire``; pyroute2's
message, ``message()``, where ``tc_wire`` does not reach)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELTFILTER, RTM_NEWTFILTER

from dpif.flow import slot_setters
from offload.tc_values import FilterRef, FlowerFilter, delete_msg, encode_filter
from offload.tc_wire import (
    FastEncodeUnsupported, encode_delete_bytes, encode_filter_bytes, with_header,
)

F_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
F_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
F_DELETE = NLM_F_REQUEST | NLM_F_ACK


@dataclass(frozen=True, slots=True, init=False)
class TcOp:
    """One filter operation for ``TcNetlink.apply``: op is add|replace|delete.
    ``body``: the filter's message after the netlink header, when the caller
    has it already (``tc_template``: equal to ``tc_wire.encode_filter_body``
    of the filter's value); ``filter`` may then be a ``FilterRef``."""

    op: str
    filter: FlowerFilter | FilterRef
    body: bytes | bytearray | None = field(default=None, compare=False, repr=False)

    def __init__(self, op: str, filter: FlowerFilter | FilterRef,  # noqa: A002 -- the field
                 body: bytes | bytearray | None = None) -> None:
        # one per flow of a batch: dpif.flow.slot_setters says why
        _op_op(self, op)
        _op_filter(self, filter)
        _op_body(self, body)

    def message(self) -> tuple[Any, int, int]:
        f = self.filter if isinstance(self.filter, FlowerFilter) else self.filter.value()
        if self.op == "delete":
            return (delete_msg(f.ifindex, f.chain, f.prio, f.handle, f.protocol, f.parent),
                    *self.header())
        return (encode_filter(f), *self.header())

    def header(self) -> tuple[int, int]:
        """(netlink message type, flags) of this operation."""
        if self.op == "delete":
            return RTM_DELTFILTER, F_DELETE
        return RTM_NEWTFILTER, {"add": F_CREATE, "replace": F_REPLACE}[self.op]

    def wire(self, seq: int, pid: int, ack: bool = True) -> bytes:
        """The bytes of ``message()`` with this sequence number and pid (without
        NLM_F_ACK unless ``ack``), built by ``tc_wire``; FastEncodeUnsupported
        when it does not cover them."""
        f = self.filter
        msg_type, flags = self.header()
        if not ack:
            flags &= ~NLM_F_ACK
        if self.op == "delete":
            if not (f.prio and f.handle):  # delete_msg's refusal, via the fallback
                raise FastEncodeUnsupported("flushing delete")
            return encode_delete_bytes(f.ifindex, f.chain, f.prio, f.handle, f.protocol,
                                       f.parent, msg_type, flags, seq, pid)
        if self.body is not None:
            return with_header(self.body, msg_type, flags, seq, pid)
        return encode_filter_bytes(f if isinstance(f, FlowerFilter) else f.value(),
                                   msg_type, flags, seq, pid)


_op_op, _op_filter, _op_body = slot_setters(TcOp)
