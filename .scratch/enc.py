import sys, time, cProfile, pstats
sys.path.insert(0,'.'); sys.path.insert(0,'bench')
import tc_install as B
from offload.tc_flower import PortInfo
from offload import tc_wire as W
specs=B.megaflows(20000)
ports={1:PortInfo(1,10,"a"),2:PortInfo(2,11,"b")}
t=time.perf_counter(); fs=B.translate(specs, ports); d=time.perf_counter()-t
print(f"translate {d/len(fs)*1e6:.2f} us")
t=time.perf_counter()
for i,f in enumerate(fs): W.encode_filter_bytes(f, 44, 0x605, i+1, 7)
d=time.perf_counter()-t
print(f"encode {d/len(fs)*1e6:.2f} us")
pr=cProfile.Profile(); pr.runcall(lambda: [W.encode_filter_bytes(f, 44, 0x605, 1, 7) for f in fs])
pstats.Stats(pr).sort_stats("tottime").print_stats(12)
