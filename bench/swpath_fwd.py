#!/usr/bin/env python3
"""Helpers of bench/swpath_forward.sh (run that, not this).

    swpath_fwd.py gen  --netns NS --dev DEV --dst-mac M [--seconds T] [--count N]
    swpath_fwd.py fwd  --netns NS --mode ports|swdp [--rx ring|recvmsg] [--tx ring|send]
                       --seconds T

``gen`` blasts 60-byte IPv4/UDP frames (64 on the wire with FCS) out of DEV
with a PACKET_TX_RING (one ``send`` per 256 frames, so the generator is not
the bottleneck), 64 different UDP source ports, and prints
``sent=<n> seconds=<t>``.  The destination IP is one the receiver does not
own: the receiving namespace counts the frame (link rx_packets) and drops it
silently (forwarding is off), so no reply traffic disturbs the count.

``fwd`` runs flowpath between ports s1 (1) and s2 (2) of NS for T seconds:
``ports`` = the ports and runner with a trivial cross-connect (the I/O
ceiling, no parse/lookup), ``swdp`` = the real ``SwDatapath`` with one
megaflow ``in_port(1) -> 2`` installed by the first upcall (warm cache after
the first packet).  Prints ``forwarded=<n> seconds=<t> upcalls=<u>``.
"""

from __future__ import annotations

import argparse
import mmap
import os
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swpath.ports import NetdevPort, in_netns  # noqa: E402
from swpath.ring import PACKET_QDISC_BYPASS, PACKET_VERSION, SOL_PACKET, TPACKET_V2  # noqa: E402
from swpath.runner import Runner  # noqa: E402

PACKET_TX_RING = 13
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
FRAME = 2048
NFRAMES = 1024
DATA_OFF = 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)


def ip_csum(hdr: bytes) -> int:
    s = sum(struct.unpack(">10H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def frame(dst_mac: bytes, src_mac: bytes, sport: int) -> bytes:
    payload = b"flowpath-bench-" + bytes(3)  # 60 - 14 - 20 - 8 = 18 bytes
    payload = payload[:18]
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0, 64, 17, 0,
                     bytes([10, 88, 0, 1]), bytes([10, 88, 0, 99]))
    ip = ip[:10] + struct.pack(">H", ip_csum(ip)) + ip[12:]
    udp = struct.pack(">HHHH", 10000 + sport, 5001, 8 + len(payload), 0)
    return dst_mac + src_mac + b"\x08\x00" + ip + udp + payload


def gen(args: argparse.Namespace) -> None:
    with in_netns(args.netns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
        s.setsockopt(SOL_PACKET, PACKET_TX_RING,
                     struct.pack("=IIII", 1 << 16, NFRAMES * FRAME >> 16, FRAME, NFRAMES))
        mm = mmap.mmap(s.fileno(), NFRAMES * FRAME, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE)
        s.bind((args.dev, 0))
    dst = bytes.fromhex(args.dst_mac.replace(":", ""))
    src = bytes.fromhex("02ee00000001")
    for i in range(NFRAMES):
        f = frame(dst, src, i % 64)
        mm[i * FRAME + DATA_OFF:i * FRAME + DATA_OFF + len(f)] = f
        struct.pack_into("=II", mm, i * FRAME + 4, len(f), len(f))  # tp_len, tp_snaplen
    status = struct.Struct("=I")
    idx = sent = 0
    limit = args.count or 1 << 62
    t0 = time.monotonic()
    end = t0 + args.seconds
    while sent < limit:
        queued = 0
        for _ in range(min(256, limit - sent)):
            off = idx * FRAME
            if status.unpack_from(mm, off)[0] != TP_STATUS_AVAILABLE:
                break
            status.pack_into(mm, off, TP_STATUS_SEND_REQUEST)
            queued += 1
            idx = (idx + 1) % NFRAMES
        if queued:
            s.send(b"")
            sent += queued
        if time.monotonic() >= end:
            break
    s.send(b"")  # flush what is left in the ring
    print(f"sent={sent} seconds={time.monotonic() - t0:.3f}")


class CrossConnect:
    def __init__(self) -> None:
        self.ports: dict[int, NetdevPort] = {}

    def process(self, in_port: int, packets: list[bytes]) -> None:
        send = self.ports[3 - in_port].send
        for p in packets:
            send(p)


def fwd(args: argparse.Namespace) -> None:
    ring, txr = args.rx == "ring", args.tx == "ring"
    p1 = NetdevPort("s1", 1, netns=args.netns, ring=ring, tx_ring=txr)
    p2 = NetdevPort("s2", 2, netns=args.netns, ring=ring, tx_ring=txr)
    upcalls = [0]
    if args.mode == "ports":
        sink = CrossConnect()
        sink.ports = {1: p1, 2: p2}
        dp: object = sink
    else:
        from dpif.actions import Output
        from dpif.match import Match
        from swpath.datapath import SwDatapath, UpcallResult

        def upcall(packet: bytes, key: int, in_port: int) -> UpcallResult:
            upcalls[0] += 1
            return UpcallResult(Match.build(in_port=in_port), (Output(3 - in_port),))

        sw = SwDatapath(upcall=upcall)
        sw.add_port(p1)
        sw.add_port(p2)
        dp = sw
    runner = Runner(dp, [p1, p2], batch=args.batch)  # type: ignore[arg-type]
    st = runner.run(timeout=args.seconds)
    print(f"forwarded={p2.stats().tx_packets + p1.stats().tx_packets} "
          f"seconds={st.seconds:.3f} upcalls={upcalls[0]} rx_dropped="
          f"{p1.stats().rx_dropped} polls={st.polls} empty_wakeups={st.empty_wakeups} "
          f"stalls={st.stalls} "
          f"batches={st.batches}")
    p1.close()
    p2.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--netns", required=True)
    g.add_argument("--dev", required=True)
    g.add_argument("--dst-mac", required=True)
    g.add_argument("--seconds", type=float, default=5.0)
    g.add_argument("--count", type=int, default=0)
    f = sub.add_parser("fwd")
    f.add_argument("--netns", required=True)
    f.add_argument("--mode", choices=["ports", "swdp"], default="swdp")
    f.add_argument("--rx", choices=["ring", "recvmsg"], default="ring")
    f.add_argument("--tx", choices=["ring", "send"], default="ring")
    f.add_argument("--seconds", type=float, default=10.0)
    f.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    gen(args) if args.cmd == "gen" else fwd(args)


if __name__ == "__main__":
    main()
