import time, sys, gc
sys.path.insert(0, '.')
from dpif.actions import Output
from dpif.flow import FlowSpec, Ufid, DpFlow, FlowStats
from dpif.match import Match
from offload.datapath import OffloadDatapath, Policy, TcFlow
from offload.tc_flower import PortInfo
from offload.tc_netlink import TcOp
from swpath.datapath import SwDatapath
from swpath.cache import MegaflowCache
n=20000
specs=[]
for i in range(n):
    m = Match.build(in_port=1, recirc_id=0, vlan_tpid=0, eth_type=0x0800, ip_proto=17,
                    ipv4_dst=0x0A000000 + (i >> 4), tp_dst=1000 + (i & 15), ip_frag=(0, 3))
    specs.append(FlowSpec(m,(Output(2),),Ufid(0x5EED0000_00000000_00000000_00000000 + i)))
class StubTc:
    def apply(self, ops): return [None]*len(ops)
def mk():
    dp=OffloadDatapath(StubTc(), SwDatapath(flow_limit=n+1), policy=Policy.SKIP_HW, flow_limit=n+1)
    ports={1:PortInfo(1,10,"a"),2:PortInfo(2,11,"b")}
    dp.ports.update(ports); dp._by_ifindex.update({10:ports[1],11:ports[2]})
    return dp
def T(name, fn):
    gc.collect(); gc.disable()
    best=1e9
    for _ in range(3):
        t=time.perf_counter(); fn(); best=min(best,time.perf_counter()-t)
    gc.enable()
    print(f"{name:30s} {best/n*1e6:6.2f} us/flow")
T("put_many", lambda: mk().put_many(specs))
def ins():
    c=MegaflowCache(flow_limit=n+1, emc_size=0)
    for s in specs: c.insert(s.ufid, s.match, s.actions)
T("index.insert", ins)
dp=mk(); dp._translate_op(specs[0])
def tr():
    for s in specs: dp._translate_op(s)
T("_translate_op", tr)
ops=[dp._translate_op(s) for s in specs]
def wire():
    for i,o in enumerate(ops): o.wire(i+1, 5, False)
T("op.wire", wire)
t=dp._templates[next(iter(dp._templates))][0]
def build():
    for s in specs: t.build(s.match.key, 7, s.ufid.to_bytes())
T("template.build", build)
pl=dp._tc_placement(None); z=FlowStats()
def objs():
    for s in specs: TcFlow(s.ufid, s.match, s.actions, None, z); DpFlow(s.ufid, s.match, s.actions, z, pl)
T("TcFlow+DpFlow", objs)
print(t.copied)
import struct
_H=struct.Struct("=I")
def build_bytes():
    for s in specs:
        key=s.match.key
        body = bytearray(t.body)
        for i, attr, off, ones, conv, at, size, order in t.copied:
            v = (key >> off) & ones
            body[at:at + size] = v.to_bytes(size, order)
        _H.pack_into(body, 4, 7)
        c=s.ufid.to_bytes()
        body[t.cookie_at:t.cookie_at+16] = c
T("build bytes only", build_bytes)
def ufb():
    for s in specs: s.ufid.to_bytes()
T("ufid.to_bytes", ufb)
def tk():
    from offload.tc_template import template_key
    for s in specs: dp._templates.get(template_key(s.match, s.actions))
T("template_key+get", tk)
