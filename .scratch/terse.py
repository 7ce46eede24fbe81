import sys, time, struct
sys.path.insert(0,'.')
from tests.offload.test_tc_terse import terse_message, Act
from offload import tc_terse as T, tc_decode as D
n=20000
msgs=[terse_message(handle=i+1, actions=(Act(stats=(i,i*60,0,0), cookie=(i).to_bytes(16,'big')),)) for i in range(n)]
# datagrams of ~ 32 KiB
dgs=[]; cur=b""
for m in msgs:
    if len(cur)+len(m) > 32768: dgs.append(cur); cur=b""
    cur+=m
dgs.append(cur)
print(len(msgs[0]), "bytes/msg", len(dgs), "datagrams")
def run():
    out=[]
    for data in dgs:
        for msg_type, flags, mseq, start, end in D.messages(data):
            if mseq != 7: continue
            if msg_type == 44:
                got = T.decode_message(data, start, end)
                if got is not None: out.append(got)
    return out
for _ in range(3):
    t=time.perf_counter(); out=run(); d=time.perf_counter()-t
    print(f"decode {d/n*1e6:.2f} us/msg", len(out))
def walk():
    for data in dgs:
        for x in D.messages(data): pass
t=time.perf_counter(); walk(); d=time.perf_counter()-t
print(f"messages() {d/n*1e6:.2f} us/msg")
