import resource, sys, time, os, tempfile, subprocess, gc
sys.path.insert(0, "bench"); sys.path.insert(0, ".")
import tc_install as B
import structlog, logging
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from offload.tc_netlink import TcNetlink
from offload.tc_flower import PortInfo
from offload.datapath import OffloadDatapath, Policy
from swpath.datapath import SwDatapath
R = resource
def ru(who):
    r = R.getrusage(who); return r.ru_utime, r.ru_stime
def meas(name, fn, who=R.RUSAGE_SELF):
    u0, s0 = ru(who); t0 = time.perf_counter(); fn(); t = time.perf_counter() - t0; u1, s1 = ru(who)
    print(f"{name:30s} wall {t:7.2f}  user {u1-u0:7.2f}  sys {s1-s0:7.2f}", flush=True)
for n in [int(x) for x in sys.argv[1].split(",")]:
    specs = B.megaflows(n)
    for rep in range(2):
        with B.fresh_ns("i") as ns:
            tc = TcNetlink(netns=ns)
            ports = {1: PortInfo(1, tc.ifindex("bp0"), "bp0"), 2: PortInfo(2, tc.ifindex("bp1"), "bp1")}
            tc.ensure_ingress(ports[1].ifindex)
            filters = B.translate(specs, ports)
            gc.collect()
            meas(f"{n} install", lambda: tc.install(filters))
            tc.close()
        with B.fresh_ns("b") as ns:
            B.sh("tc", "-n", ns, "qdisc", "add", "dev", "bp0", "ingress")
            lines = [B.tc_line(f, "bp0", lambda ix: "bp1") for f in filters]
            with tempfile.NamedTemporaryFile("w", suffix=".tc", delete=False) as fh:
                fh.write("\n".join(lines) + "\n")
            meas(f"{n} tc -batch", lambda: B.sh("tc", "-n", ns, "-batch", fh.name), R.RUSAGE_CHILDREN)
        with B.fresh_ns("p") as ns:
            tc = TcNetlink(netns=ns)
            dp = OffloadDatapath(tc, SwDatapath(flow_limit=n + 1), policy=Policy.SKIP_HW, flow_limit=n + 1)
            dp.add_port(1, "bp0"); dp.add_port(2, "bp1")
            gc.collect()
            meas(f"{n} put_many", lambda: dp.put_many(specs))
            meas(f"{n} dp.dump", lambda: list(dp.dump()))
            meas(f"{n} dump_stats", lambda: tc.dump_stats(dp.ports[1].ifindex))
            meas(f"{n} tc -s show", lambda: B.sh("tc", "-n", ns, "-s", "filter", "show", "dev", "bp0", "ingress"), R.RUSAGE_CHILDREN)
            tc.close()
