"""tc netlink I/O: the one place where flowpath talks tc to the kernel.

Theory of operation
-------------------
``TcNetlink`` owns one rtnetlink socket (pyroute2 ``IPRoute(ext_ack=True)``,
optionally inside a named netns).  It sends messages built by
``tc_values`` from ``tc_nla`` declarations and decodes replies with the same
classes: the socket's marshal is told that RTM_{NEW,DEL,GET}TFILTER are
``tcmsg_flower`` (per instance, pyroute2's global tables stay untouched).

* Qdisc: ``ensure_ingress`` creates an ingress qdisc only when the device
  has neither ingress nor clsact, and remembers that it did;
  ``release_ingress`` deletes only a qdisc this instance created.
* Filters: ``add`` (create exclusive), ``replace`` (create or replace),
  ``delete`` (always kind + chain + prio + handle + protocol: the kernel reads
  a delete without prio as "flush the chain", without handle as "delete the
  whole priority"; ``tc_values`` refuses to build those), ``dump`` (all
  chains of a device, with counters), each decoded into ``FilterDump``.
* Batching: ``apply`` concatenates up to ``batch_size`` requests into one
  sendmsg, then collects the acks in order.  The kernel handles each message
  of the datagram on its own and acks each one, so one refusal does not stop
  the rest; every request gets its own outcome (None or OffloadError).  The
  chunk bound keeps one datagram under SO_SNDBUF and the burst of acks
  (errors echo the request) under SO_RCVBUF.
* Encoding: filter add/replace/delete bytes come from ``tc_wire`` (the same
  bytes as pyroute2's generic encoder, ~40x faster); whatever it does not
  cover (``FastEncodeUnsupported``, e.g. an ``UnknownAction``) goes through
  pyroute2's encoder as before.  Either way the request is a pyroute2
  ``NetlinkRequest`` (sequence number, pid, reply queue, cleanup); the raw
  one only skips ``msg.encode()``.
* Errors: pyroute2's NetlinkError is mapped once, here, to OffloadError with
  the kernel's extack text and errno, naming device, chain, prio, handle and
  the operation.

Uses pyroute2 0.9.7 internals (``NetlinkRequest``, ``_run_with_cleanup``)
for the batch: the version is pinned in pyproject.toml.
"""

from __future__ import annotations

import errno as errno_mod
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nlsocket import NetlinkRequest
from pyroute2.netlink.rtnl import RTM_DELTFILTER, RTM_GETTFILTER, RTM_NEWTFILTER

from dpif.errors import DeviceError, OffloadError
from offload import tc_nla as N
from offload.tc_values import FilterDump, FlowerFilter, decode_filter, delete_msg, encode_filter
from offload.tc_wire import FastEncodeUnsupported, encode_delete_bytes, encode_filter_bytes

log = structlog.get_logger(__name__)

F_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
F_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
F_DELETE = NLM_F_REQUEST | NLM_F_ACK


@dataclass(frozen=True)
class TcOp:
    """One filter operation for ``TcNetlink.apply``: op is add|replace|delete."""

    op: str
    filter: FlowerFilter

    def message(self) -> tuple[Any, int, int]:
        f = self.filter
        if self.op == "delete":
            return (delete_msg(f.ifindex, f.chain, f.prio, f.handle, f.protocol, f.parent),
                    RTM_DELTFILTER, F_DELETE)
        flags = {"add": F_CREATE, "replace": F_REPLACE}[self.op]
        return encode_filter(f), RTM_NEWTFILTER, flags

    def header(self) -> tuple[int, int]:
        """(netlink message type, flags) of this operation."""
        if self.op == "delete":
            return RTM_DELTFILTER, F_DELETE
        return RTM_NEWTFILTER, {"add": F_CREATE, "replace": F_REPLACE}[self.op]

    def wire(self, seq: int, pid: int) -> bytes:
        """The bytes of ``message()`` with this sequence number and pid, built
        by ``tc_wire``; FastEncodeUnsupported when it does not cover them."""
        f = self.filter
        msg_type, flags = self.header()
        if self.op == "delete":
            if not (f.prio and f.handle):  # delete_msg's refusal, via the fallback
                raise FastEncodeUnsupported("flushing delete")
            return encode_delete_bytes(f.ifindex, f.chain, f.prio, f.handle, f.protocol,
                                       f.parent, msg_type, flags, seq, pid)
        return encode_filter_bytes(f, msg_type, flags, seq, pid)


class _RawHeader(dict[str, Any]):
    """Stands in for the message object of a ``_RawRequest``: NetlinkRequest
    only writes header fields into it (and calls reset)."""

    def __init__(self) -> None:
        super().__init__(header={})

    def reset(self) -> None:
        pass


class _RawRequest(NetlinkRequest):
    """A NetlinkRequest whose bytes were built elsewhere (tc_wire): the same
    sequence number allocation, reply queue tag, response() and cleanup, but
    prepare() does not encode a message object."""

    def __init__(self, sock: Any, msg_type: int, flags: int) -> None:
        super().__init__(sock, _RawHeader(), msg_type=msg_type, msg_flags=flags)
        self.pid: int = self.msg["header"]["pid"]

    async def prepare(self) -> None:
        await self.sock.setup_endpoint()
        self.sock.msg_queue.ensure_tag(self.msg_seq)


class TcNetlink:
    """tc flower I/O on one network namespace (None: the current one)."""

    def __init__(self, netns: str | None = None, batch_size: int = 256) -> None:
        kwargs: dict[str, Any] = {"ext_ack": True}
        if netns is not None:
            kwargs["netns"] = netns
        try:
            self._ipr = IPRoute(**kwargs)
        except (OSError, NetlinkError) as exc:
            raise DeviceError("cannot open rtnetlink", netns=netns) from exc
        marshal = self._ipr.asyncore.marshal
        for msg_type in (RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER):
            marshal.msg_map[msg_type] = N.tcmsg_flower
        self.netns = netns
        self.batch_size = batch_size
        self.created_qdiscs: set[int] = set()
        self._names: dict[int, str] = {}
        self._log = log.bind(netns=netns)

    # --- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> TcNetlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- devices -------------------------------------------------------------------

    def ifindex(self, ifname: str) -> int:
        found = self._ipr.link_lookup(ifname=ifname)
        if not found:
            raise DeviceError("no such device", device=ifname, netns=self.netns)
        self._names[found[0]] = ifname
        return int(found[0])

    def ifname(self, ifindex: int) -> str:
        if ifindex not in self._names:
            try:
                link = self._ipr.get_links(ifindex)[0]
                self._names[ifindex] = link.get_attr("IFLA_IFNAME")
            except (NetlinkError, IndexError):
                return f"ifindex {ifindex}"
        return self._names[ifindex]

    # --- qdisc ---------------------------------------------------------------------

    def has_ingress(self, ifindex: int) -> bool:
        try:
            qdiscs = self._ipr.get_qdiscs(index=ifindex)
        except NetlinkError as exc:
            raise self._error(exc, "dump qdiscs", ifindex) from exc
        return any(q["index"] == ifindex and q.get_attr("TCA_KIND") in ("ingress", "clsact")
                   for q in qdiscs)

    def ensure_ingress(self, ifindex: int) -> bool:
        """Make sure ``ifindex`` has an ingress (or clsact) qdisc; True if we
        created it now."""
        if self.has_ingress(ifindex):
            return False
        try:
            self._ipr.tc("add", "ingress", index=ifindex)
        except NetlinkError as exc:
            if exc.code == errno_mod.EEXIST:  # somebody was quicker: not ours
                return False
            raise self._error(exc, "add ingress qdisc", ifindex) from exc
        self.created_qdiscs.add(ifindex)
        self._log.info("ingress qdisc created", device=self.ifname(ifindex))
        return True

    def release_ingress(self, ifindex: int) -> bool:
        """Delete the ingress qdisc if (and only if) this instance created it."""
        if ifindex not in self.created_qdiscs:
            return False
        try:
            self._ipr.tc("del", "ingress", index=ifindex)
        except NetlinkError as exc:
            if exc.code not in (errno_mod.ENOENT, errno_mod.EINVAL, errno_mod.ENODEV):
                raise self._error(exc, "delete ingress qdisc", ifindex) from exc
        self.created_qdiscs.discard(ifindex)
        return True

    # --- filters -------------------------------------------------------------------

    def add(self, f: FlowerFilter) -> None:
        """Create ``f``; fails (EEXIST) if that handle exists."""
        self._one(TcOp("add", f))

    def replace(self, f: FlowerFilter) -> None:
        """Create ``f`` or replace the filter with its (chain, prio, handle)."""
        self._one(TcOp("replace", f))

    def delete(self, f: FlowerFilter) -> None:
        """Delete exactly the filter named by ``f.ident`` (never a flush)."""
        self._one(TcOp("delete", f))

    def apply(self, ops: Iterable[TcOp]) -> list[OffloadError | None]:
        """Send many operations in batches; one outcome per operation, in order."""
        ops = list(ops)
        out: list[OffloadError | None] = []
        for start in range(0, len(ops), self.batch_size):
            chunk = ops[start:start + self.batch_size]
            for op, exc in zip(chunk, self._batch(chunk)):
                out.append(None if exc is None else
                           self._error(exc, op.op, op.filter.ifindex, op.filter))
        return out

    def install(self, filters: Iterable[FlowerFilter], replace: bool = False
                ) -> list[OffloadError | None]:
        """Batched add (or replace) of many filters."""
        return self.apply(TcOp("replace" if replace else "add", f) for f in filters)

    def dump(self, ifindex: int, chain: int | None = None) -> list[FilterDump]:
        """Every flower filter on the ingress of ``ifindex`` (all chains unless
        ``chain``), decoded, with counters.  Other classifiers are skipped."""
        msg = N.tcmsg_flower()
        msg["index"] = ifindex
        msg["parent"] = N.TC_H_INGRESS_PARENT
        msg["attrs"] = [] if chain is None else [["TCA_CHAIN", chain]]
        core = self._ipr.asyncore

        async def run() -> list[Any]:
            return [m async for m in await core.nlm_request(
                msg, RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP)]

        try:
            replies = self._ipr._run_with_cleanup(run)
        except NetlinkError as exc:
            raise self._error(exc, "dump filters", ifindex) from exc
        out = []
        for reply in replies:
            dumped = decode_filter(reply)
            if dumped is not None:
                out.append(dumped)
        return out

    def get(self, f: FlowerFilter) -> FilterDump | None:
        """The dumped state of the filter named by ``f.ident`` (None if absent)."""
        for dumped in self.dump(f.ifindex, f.chain):
            if dumped.filter.ident == f.ident:
                return dumped
        return None

    # --- internals -------------------------------------------------------------------

    def _one(self, op: TcOp) -> None:
        (result,) = self.apply([op])
        if result is not None:
            raise result
        self._log.debug("tc filter", op=op.op, device=self.ifname(op.filter.ifindex),
                        chain=op.filter.chain, prio=op.filter.prio, handle=op.filter.handle)

    def _batch(self, ops: Sequence[TcOp]) -> list[NetlinkError | None]:
        core = self._ipr.asyncore

        async def run() -> list[NetlinkError | None]:
            requests = []
            data = bytearray()
            for op in ops:
                request = _RawRequest(core, *op.header())
                try:
                    data += op.wire(request.msg_seq, request.pid)
                    await request.prepare()
                except FastEncodeUnsupported:  # pyroute2 encodes it, same sequence number
                    try:
                        msg, msg_type, flags = op.message()
                    except Exception:
                        request.addr_pool.free(request.msg_seq, ban=0xFF)
                        raise
                    request = NetlinkRequest(core, msg, msg_type=msg_type, msg_flags=flags,
                                             msg_seq=request.msg_seq)
                    await request.prepare()
                    data += request.msg.data
                requests.append(request)
            core.send(bytes(data))
            results: list[NetlinkError | None] = []
            for request in requests:
                try:
                    async for _ in request.response():
                        pass
                    results.append(None)
                except NetlinkError as exc:
                    results.append(exc)
            return results

        return self._ipr._run_with_cleanup(run)

    def _error(self, exc: NetlinkError, op: str, ifindex: int,
               f: FlowerFilter | None = None) -> OffloadError:
        text = exc.args[1] if len(exc.args) > 1 else None
        extack = text if isinstance(text, str) and text != _strerror(exc.code) else None
        return OffloadError(
            f"tc {op} failed: {_strerror(exc.code)}", extack=extack, errno=exc.code,
            device=self.ifname(ifindex), chain=f.chain if f else None,
            prio=f.prio if f else None, handle=f.handle if f else None, netns=self.netns)


def _strerror(code: int) -> str:
    return os.strerror(code)
