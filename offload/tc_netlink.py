"""tc netlink I/O: the one place where flowpath talks tc to the kernel.

Theory of operation
-------------------
``TcNetlink`` owns two rtnetlink sockets in one network namespace (None: the
current one).  Devices and qdiscs go through pyroute2 (``IPRoute(ext_ack=
True)``).  Filters -- the hot path -- go through a raw ``AF_NETLINK`` socket
of our own (opened on first use, in the netns, via pyroute2's
``netns.create_socket``), with bytes built by ``tc_wire`` and replies read by
``tc_decode``: no pyroute2 message objects on the way.

* Qdisc: ``ensure_ingress`` creates an ingress qdisc only when the device
  has neither ingress nor clsact, and remembers that it did;
  ``release_ingress`` deletes only a qdisc this instance created.
* Filters: ``add`` (create exclusive), ``replace`` (create or replace),
  ``delete`` (always kind + chain + prio + handle + protocol: the kernel reads
  a delete without prio as "flush the chain", without handle as "delete the
  whole priority"; ``tc_values`` refuses to build those), ``dump`` (all
  chains of a device, with counters), each decoded into ``FilterDump``,
  and ``dump_stats`` (the same without keys and actions: ``TerseFilter``).
* Pipelining: ``apply`` writes a chunk of requests (as few datagrams as
  SO_SNDBUF allows) before reading anything.  Only the chunk's last request
  asks for an ack: the kernel answers every *refused* request anyway (with
  its sequence number and extack text), handles the messages of a datagram
  one by one in order, and a refusal does not stop the rest.  So when the
  last request's ack arrives, every refusal of the chunk has arrived before
  it, and each one is matched to its request by sequence number; the others
  succeeded.  The chunk is bounded so that all of its refusals fit in
  SO_RCVBUF at once (8 MiB when root may force it): no ENOBUFS, no lost
  outcome.  Acks are capped (NETLINK_CAP_ACK: the request is not echoed).
  A socket error all the same (a send refused, ENOBUFS when the buffer is
  smaller than we were told) ends the batch without losing what is known:
  the requests up to the last answer read are decided (refused or done),
  those sent after it are ``OffloadUnsure`` (the caller reads them back),
  and the rest are refused as not sent.  The socket is then replaced.
  The garbage collector is paused for a batch (``gc_paused``).
* Dump: one RTM_GETTFILTER request with NLM_F_DUMP, then ``recv_into`` one
  1 MiB buffer until NLMSG_DONE; each multipart datagram is split and
  decoded by ``tc_dumpshape`` (a compiled Struct per message shape), else
  ``tc_dumpfast``, else ``tc_decode``; pyroute2's parser is the tests' reference.
  ``dump_stats`` asks for a terse dump (TCA_DUMP_FLAGS_TERSE: flags,
  counters and cookies only) and decodes it with ``tc_terse``.
* Encoding: whatever ``tc_wire`` does not cover (``FastEncodeUnsupported``,
  e.g. an ``UnknownAction``) is encoded by pyroute2 (which says why it
  cannot, if it cannot), with our sequence number.
* Errors: kernel refusals and socket errors are mapped once, here, to
  OffloadError with the kernel's extack text and errno, naming device,
  chain, prio, handle and the operation.
"""

from __future__ import annotations

import errno as errno_mod
import gc
import os
import socket
from typing import Any, Iterable, Iterator

import structlog
from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns
from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELTFILTER, RTM_GETTFILTER, RTM_NEWTFILTER

from dpif.errors import DeviceError, OffloadError, OffloadUnsure
from offload import tc_decode as D
from offload import tc_dumpshape as S
from offload import tc_nla as N
from offload import tc_terse as T
from offload.tc_op import TcOp
from offload.tc_values import FilterDump, FilterRef, FlowerFilter
from offload.tc_wire import FastEncodeUnsupported, encode_delete_bytes, set_seq

log = structlog.get_logger(__name__)

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10  # an ack echoes only the request's header
NETLINK_EXT_ACK = 11  # ... and carries the kernel's extack text
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # root may exceed the sysctl limits
SOCK_BUF = 8 << 20
RECV_BUF = 1 << 20  # a dump datagram is at most ~32 KiB; an ack, a few hundred bytes
ACK_TRUESIZE = 4096  # generous receive-buffer charge of one refusal (skb + extack)


class gc_paused:  # noqa: N801 -- used as a function: ``with gc_paused():``
    """The cyclic garbage collector off for the length of a batch (then as
    it was): a batch makes many long-lived objects, and every full
    collection they trigger on the way traverses every object of the
    process -- a third of put_many's time at 50k flows (measured on the
    host), the more the more flows are held."""

    def __enter__(self) -> None:
        self.was = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was:
            gc.enable()


class _Cut(Exception):
    """A socket error inside a chunk of ``apply``: what is known of it
    (refusals read, how many requests are decided, how many were sent)."""

    def __init__(self, errno: int, refused: dict[int, tuple[int, str | None]], known: int,
                 sent: int) -> None:
        super().__init__(errno)
        self.errno, self.refused, self.known, self.sent = errno, refused, known, sent


class TcNetlink:
    """tc flower I/O on one network namespace (None: the current one)."""

    def __init__(self, netns: str | None = None, batch_size: int = 2048) -> None:
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
        self._sock: socket.socket | None = None
        self._pid = 0
        self._seq = 0
        self._sndbuf = 0
        self._chunk = 1
        self._buf = bytearray(RECV_BUF)

    # --- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        self._drop_socket()
        self._ipr.close()

    def _drop_socket(self) -> None:
        """Close the filter socket; the next request opens a fresh one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

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
            raise self._nl_error(exc, "dump qdiscs", ifindex) from exc
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
            raise self._nl_error(exc, "add ingress qdisc", ifindex) from exc
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
                raise self._nl_error(exc, "delete ingress qdisc", ifindex) from exc
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
        """Send many operations, pipelined; one outcome per operation, in order.
        The garbage collector is paused meanwhile (``gc_paused``)."""
        ops = list(ops)
        out: list[OffloadError | None] = [None] * len(ops)
        with gc_paused():
            self._socket()
            for start in range(0, len(ops), self._chunk):
                chunk = ops[start:start + self._chunk]
                try:
                    refused = self._send_chunk(chunk)
                except _Cut as cut:
                    # ENOBUFS is reported before the answers still queued,
                    # and until they are read the kernel drops every new
                    # one (NETLINK_S_CONGESTED): a get would wait forever.
                    # The next request gets a fresh socket.
                    self._drop_socket()
                    self._after_cut(cut, ops, start, out)
                    break
                for i, (code, text) in refused.items():
                    op = chunk[i]
                    out[start + i] = self._error(code, text, op.op, op.filter.ifindex, op.filter)
        return out

    def _after_cut(self, cut: _Cut, ops: list[TcOp], start: int,
                   out: list[OffloadError | None]) -> None:
        """The outcomes of ``ops[start:]`` when a socket error cut the chunk
        that starts there (see the theory of operation)."""
        why = _strerror(cut.errno)
        self._log.warning("tc batch cut by a socket error", error=why, decided=cut.known,
                          unsure=cut.sent - cut.known, unsent=len(ops) - start - cut.sent)
        for i, op in enumerate(ops[start:]):
            f = op.filter
            if i in cut.refused:
                code, text = cut.refused[i]
                out[start + i] = self._error(code, text, op.op, f.ifindex, f)
            elif i >= cut.known:  # (below: done, as a later request was answered)
                unsure = i < cut.sent
                cls = OffloadUnsure if unsure else OffloadError
                what = "sent, its answer lost" if unsure else "not sent"
                out[start + i] = cls(
                    f"tc {op.op} {what}: the socket failed ({why})", errno=cut.errno,
                    device=self.ifname(f.ifindex), chain=f.chain, prio=f.prio,
                    handle=f.handle, netns=self.netns)

    def install(self, filters: Iterable[FlowerFilter], replace: bool = False
                ) -> list[OffloadError | None]:
        """Batched add (or replace) of many filters."""
        return self.apply(TcOp("replace" if replace else "add", f) for f in filters)

    def dump(self, ifindex: int, chain: int | None = None) -> list[FilterDump]:
        """Every flower filter on the ingress of ``ifindex`` (all chains unless
        ``chain``), decoded, with counters.  Other classifiers are skipped."""
        decode = S.decode_message
        out = []
        for data, start, end in self.dump_messages(ifindex, chain):
            dumped = decode(data, start, end)
            if dumped is not None:
                out.append(dumped)
        return out

    def dump_stats(self, ifindex: int, chain: int | None = None, prio: int = 0
                   ) -> list[T.TerseFilter]:
        """The counters, flags and cookie of every flower filter on the ingress
        of ``ifindex`` (all chains unless ``chain``, all priorities unless
        ``prio``), by a terse dump: no keys, no actions, no lastuse
        (``tc_terse``).  OffloadError (EMSGSIZE) when the kernel stops at a
        classifier without a terse dump (u32); one (chain, prio) never does."""
        decode = T.decode_message
        out = []
        for data, start, end in self.dump_messages(ifindex, chain, prio=prio, terse=True):
            got = decode(data, start, end)
            if got is not None:
                out.append(got)
        return out

    def dump_messages(self, ifindex: int, chain: int | None = None, *, prio: int = 0,
                      terse: bool = False) -> Iterator[tuple[bytes, int, int]]:
        """The raw RTM_NEWTFILTER replies of a filter dump (terse or full) on
        the ingress of ``ifindex`` (every chain unless ``chain``, every
        priority unless ``prio``), as (datagram, start, end) of each message."""
        sock, pid = self._socket()
        seq = self._next_seq()
        op = "dump filter stats" if terse else "dump filters"
        request = T.dump_request(ifindex, chain, prio, seq, pid, terse=terse)
        try:
            sock.send(request)
        except OSError as exc:
            raise self._error(exc.errno or 0, None, op, ifindex) from exc
        buf = self._buf
        while True:
            data = self._recv(buf, op, ifindex)
            for msg_type, flags, mseq, start, end in D.messages(data):
                if mseq != seq:
                    continue  # a late reply to an earlier, abandoned request
                if msg_type == D.NLMSG_DONE:
                    code, text = D.ack(data, start, end, flags, echoed=False)
                    if code:
                        raise self._error(code, text, op, ifindex)
                    return
                if msg_type == D.NLMSG_ERROR:
                    code, text = D.ack(data, start, end, flags)
                    raise self._error(code, text, op, ifindex)
                if msg_type == RTM_NEWTFILTER:
                    yield data, start, end

    def get(self, f: FlowerFilter) -> FilterDump | None:
        """The dumped state of the filter named by ``f.ident`` (None if absent):
        one RTM_GETTFILTER naming its kind, chain, prio, protocol and handle,
        which the kernel answers with that filter alone (as a dump has it) or
        with ENOENT, or EINVAL when that priority holds another protocol or
        kind (not ``f`` either)."""
        if not (f.prio and f.handle):  # the kernel wants both: find it in a dump
            return next((d for d in self.dump(f.ifindex, f.chain)
                         if d.filter.ident == f.ident), None)
        sock, pid = self._socket()
        seq = self._next_seq()
        try:
            sock.send(encode_delete_bytes(f.ifindex, f.chain, f.prio, f.handle, f.protocol,
                                          f.parent, RTM_GETTFILTER, NLM_F_REQUEST, seq, pid))
        except OSError as exc:
            raise self._error(exc.errno or 0, None, "get filter", f.ifindex, f) from exc
        buf = self._buf
        while True:
            data = self._recv(buf, "get filter", f.ifindex)
            for msg_type, flags, mseq, start, end in D.messages(data):
                if mseq != seq:
                    continue  # a late reply to an earlier, abandoned request
                if msg_type == RTM_NEWTFILTER:
                    return S.decode_message(data, start, end)
                if msg_type == D.NLMSG_ERROR:
                    code, text = D.ack(data, start, end, flags)
                    if not code:
                        continue  # (no ack was asked for)
                    if code in (errno_mod.ENOENT, errno_mod.EINVAL):
                        return None
                    raise self._error(code, text, "get filter", f.ifindex, f)

    # --- internals -------------------------------------------------------------------

    def _one(self, op: TcOp) -> None:
        (result,) = self.apply([op])
        if result is not None:
            raise result
        self._log.debug("tc filter", op=op.op, device=self.ifname(op.filter.ifindex),
                        chain=op.filter.chain, prio=op.filter.prio, handle=op.filter.handle)

    def _socket(self) -> tuple[socket.socket, int]:
        """The raw rtnetlink socket of the filter fast path (opened on first
        use, in our netns): large buffers, extended acks, capped acks."""
        if self._sock is None:
            try:
                sock = pyroute2_netns.create_socket(
                    netns=self.netns, family=socket.AF_NETLINK, socket_type=socket.SOCK_RAW,
                    proto=NETLINK_ROUTE)
                for force, opt in ((SO_SNDBUFFORCE, socket.SO_SNDBUF),
                                   (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, force, SOCK_BUF)
                    except PermissionError:  # not root: as much as the sysctl allows
                        sock.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
                sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
                sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
                sock.bind((0, 0))
            except OSError as exc:
                raise DeviceError("cannot open rtnetlink", netns=self.netns) from exc
            self._sndbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2
            # every message of a chunk may be refused: their acks must fit at once
            self._chunk = max(1, min(self.batch_size,
                                     sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                                     // ACK_TRUESIZE))
            self._sock, self._pid = sock, sock.getsockname()[0]
        return self._sock, self._pid

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _recv(self, buf: bytearray, op: str, ifindex: int) -> bytes:
        assert self._sock is not None
        try:
            n = self._sock.recv_into(buf)
        except OSError as exc:  # ENOBUFS: replies were dropped, outcome unknown
            raise self._error(exc.errno or 0, None, op, ifindex) from exc
        return bytes(buf[:n])

    def _send_chunk(self, ops: list[TcOp]) -> dict[int, tuple[int, str | None]]:
        """Send ``ops`` without waiting in between; return {index: (errno,
        extack)} of the refused ones.  Only the chunk's last message asks for
        an ack (the kernel acks a failure anyway), so reading up to
        that ack has read every refusal before it: they are processed, and
        answered, in order.  _Cut on a socket error."""
        sock, pid = self._socket()
        if self._seq + len(ops) > 0xFFFFFFFF:  # keep first..last increasing: no wrap inside
            self._seq = 0
        first = self._seq + 1
        datagrams: list[tuple[bytes, int]] = []  # (bytes, how many requests)
        data: list[bytes] = []
        size = 0
        for i, op in enumerate(ops):
            last = i == len(ops) - 1
            raw = self._wire(op, self._next_seq(), pid, ack=last)
            if size + len(raw) > self._sndbuf - 1024 and data:
                datagrams.append((b"".join(data), len(data)))
                data, size = [], 0
            data.append(raw)
            size += len(raw)
        datagrams.append((b"".join(data), len(data)))
        last_seq = self._seq
        sent = 0
        try:
            for dgram, count in datagrams:
                sock.send(dgram)
                sent += count
        except OSError as exc:
            raise _Cut(exc.errno or 0, {}, 0, sent) from exc
        refused: dict[int, tuple[int, str | None]] = {}
        answered = 0  # requests decided: every one up to the last answered
        buf = self._buf
        while True:
            try:
                n = sock.recv_into(buf)
            except OSError as exc:  # ENOBUFS: answers were dropped
                raise _Cut(exc.errno or 0, refused, answered, sent) from exc
            data_in = bytes(buf[:n])
            for msg_type, flags, seq, start, end in D.messages(data_in):
                if msg_type != D.NLMSG_ERROR or not first <= seq <= last_seq:
                    continue  # (a stale reply of an abandoned request)
                code, text = D.ack(data_in, start, end, flags)
                if code:
                    refused[seq - first] = (code, text)
                answered = seq - first + 1
                if seq == last_seq:
                    return refused

    def _wire(self, op: TcOp, seq: int, pid: int, ack: bool) -> bytes:
        try:
            return op.wire(seq, pid, ack)
        except FastEncodeUnsupported:  # pyroute2 encodes it (or says why it cannot)
            msg, msg_type, flags = op.message()
            if not ack:
                flags &= ~NLM_F_ACK
            msg["header"]["type"] = msg_type
            msg["header"]["flags"] = flags
            msg.encode()
            return bytes(set_seq(msg.data, seq, pid))

    def _error(self, code: int, text: str | None, op: str, ifindex: int,
               f: FlowerFilter | FilterRef | None = None) -> OffloadError:
        extack = text if text and text != _strerror(code) else None
        return OffloadError(
            f"tc {op} failed: {_strerror(code)}", extack=extack, errno=code,
            device=self.ifname(ifindex), chain=f.chain if f else None,
            prio=f.prio if f else None, handle=f.handle if f else None, netns=self.netns)

    def _nl_error(self, exc: NetlinkError, op: str, ifindex: int) -> OffloadError:
        text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else None
        return self._error(exc.code, text, op, ifindex)


def _strerror(code: int) -> str:
    return os.strerror(code)
