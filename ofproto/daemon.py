"""The flowpath daemon: one bridge on netdevs, served on a control socket.

Theory of operation
-------------------
``run_daemon(config)`` is ``flowpath daemon run``: a foreground process
(like ``ovs-vswitchd`` under systemd) with two kinds of thread:

* the datapath thread (``Switch.runner``): the poll loop, the software
  datapath, upcalls into the bridge, tc netlink -- and every control
  command, submitted with ``Runner.call_soon`` (see ``ofproto.control``:
  one thread owns all bridge and datapath state, so nothing races);
* the main thread accepts control connections (``ofproto.control_io``),
  one short-lived thread per connection, none of which touches the bridge.
* a timer thread submits ``ControlCore.tick`` to the datapath thread like
  any command: a revalidator sweep every ``revalidate_interval_ms`` (flow
  aging, the flow limit, rule timeouts, rechecks after MAC changes; see
  ``ofproto.revalidator``).  The tick returns when the next sweep is due;
  the timer waits at most ``TICK`` seconds between two.

Start: the rules file is parsed first (a bad rule names ``FILE:LINE``
before anything touches the kernel); then the ``Switch`` is built (ports,
adoption of our tc filters from a previous run, miss channels), the rules
are added while the datapath thread is not running yet, the thread starts
and the socket is bound.  Stop: SIGTERM or SIGINT sets an event the accept
loop checks every quarter second; the socket is closed and unlinked, the
runner stopped and the miss channels removed.  The tc filters stay (and
keep forwarding) for the next start to adopt, unless ``cleanup_on_exit``.

``Service`` is the part that does not care where the ports are: a bridge
whose datapath a ``Runner`` drives, a ``ControlCore`` and a
``ControlServer``.  The daemon runs one on a ``Switch``; the unit tier runs
the same class on in-memory ports.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import structlog

from dpif.errors import ParseError
from offload.datapath import eswitch_check
from ofproto.bridge import Bridge
from ofproto.control import BridgeInfo, ControlCore, PortInfo
from ofproto.control_io import ControlServer
from ofproto.daemon_config import DaemonConfig
from ofproto.revalidator import RevalidatorConfig
from ofproto.normal import PortConfig
from ofproto.rule import Rule
from ofproto.ruletext import parse_rule
from ofproto.switch import Switch, SwitchPort
from swpath.runner import Runner

log = structlog.get_logger("ofproto.daemon")


def port_info(cfg: PortConfig, netdev: str) -> PortInfo:
    return PortInfo(cfg.number, netdev, cfg.vlan_mode.value, cfg.tag, tuple(sorted(cfg.trunks)))


class Service:
    """A running bridge's control plane: core + socket server."""

    def __init__(self, bridge: Bridge, runner: Runner, info: BridgeInfo, socket_path: str,
                 reval: RevalidatorConfig | None = None) -> None:
        self.core = ControlCore(bridge, info, reval)
        self.server = ControlServer(socket_path, self.core, runner.call_soon)
        self.runner = runner
        self._thread: threading.Thread | None = None
        self._ticks = threading.Event()  # set: the timer stops
        self._timer: threading.Thread | None = None

    def _tick_loop(self) -> None:
        """Revalidator sweeps on the datapath thread, when ``ControlCore.tick`` says."""
        wait = 0.0
        while not self._ticks.wait(wait):
            try:
                got = self.runner.call_soon(self.core.tick).result(self.server.call_timeout)
                wait = min(TICK, float(got)) if isinstance(got, (int, float)) else TICK
            except Exception as e:  # noqa: BLE001 - log, keep ticking
                log.warning("revalidator sweep failed", error=repr(e))
                wait = TICK

    def _start_timer(self) -> None:
        self._timer = threading.Thread(target=self._tick_loop, daemon=True,
                                       name="flowpath-timer")
        self._timer.start()

    def serve(self, stop: threading.Event) -> None:
        """Bind and serve in this thread until ``stop``."""
        self.server.bind()
        self._start_timer()
        self.server.serve(stop)

    def start(self) -> None:
        """Bind, then serve in a background thread (tests)."""
        self.server.bind()
        self._start_timer()
        self._thread = threading.Thread(target=self.server.serve, daemon=True,
                                        name="flowpath-accept")
        self._thread.start()

    def close(self) -> None:
        self._ticks.set()
        if self._timer is not None:
            self._timer.join(self.server.call_timeout + 1)
            self._timer = None
        self.server.close()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None


TICK = 1.0  # the longest wait between two timer calls


def read_rules(path: str) -> list[Rule]:
    """Parse a rules file; an error names ``FILE:LINE``."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(enumerate(f, start=1))
    except OSError as e:
        raise ParseError(f"rules: cannot read: {e.strerror or e}", file=path) from None
    out = []
    for n, raw in lines:
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            out.append(parse_rule(text))
        except ParseError as e:
            raise e.at(f"{path}:{n}") from None
    return out


def build_switch(cfg: DaemonConfig) -> Switch:
    """The ``Switch`` a config describes (touches the kernel)."""
    check = None
    if cfg.eswitch_check:
        from offload.switchdev import discover
        check = eswitch_check(discover(cfg.netns))
    return Switch(cfg.bridge, [SwitchPort(p.config, p.netdev) for p in cfg.ports],
                  netns=cfg.netns, policy=cfg.policy, check=check, flow_limit=cfg.flow_limit,
                  packet_in_limit=cfg.packet_in_limit)


def revalidator_config(cfg: DaemonConfig) -> RevalidatorConfig:
    return RevalidatorConfig(max_idle=cfg.max_idle_ms / 1000,
                             interval=cfg.revalidate_interval_ms / 1000,
                             flow_limit=cfg.flow_limit)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM / SIGINT set ``stop`` (main thread only); old handlers come back after."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received, stopping", signal=signal.Signals(signum).name)
        stop.set()
    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_daemon(cfg: DaemonConfig, *, cleanup_on_exit: bool = False,
               stop: threading.Event | None = None) -> None:
    """``flowpath daemon run``: serve until SIGTERM/SIGINT (or ``stop``)."""
    stop = stop or threading.Event()
    rules = read_rules(cfg.rules) if cfg.rules else []
    dlog = log.bind(bridge=cfg.bridge, socket=cfg.socket, config=cfg.path)
    with stop_on_signals(stop):
        switch = build_switch(cfg)
        service: Service | None = None
        try:
            for r in rules:  # the datapath thread is not running yet: no race
                switch.bridge.tables.add(r, switch.bridge.clock())
            switch.start()
            info = BridgeInfo(cfg.policy.value, cfg.netns,
                              tuple(port_info(p.config, p.netdev) for p in cfg.ports),
                              switch.bridge.clock())
            service = Service(switch.bridge, switch.runner, info, cfg.socket,
                              revalidator_config(cfg))
            dlog.info("daemon up", ports=[p.netdev for p in cfg.ports], rules=len(rules),
                      adopted=switch.adopted, policy=cfg.policy.value)
            service.serve(stop)
        finally:
            if service is not None:
                service.close()
            switch.close(cleanup=cleanup_on_exit)
            dlog.info("daemon stopped", cleanup=cleanup_on_exit)
