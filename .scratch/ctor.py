import sys, timeit
sys.path.insert(0,'.')
from dpif.flow import DpFlow, FlowStats, Placement, Ufid
u=Ufid(5); p=Placement("tc")
s=FlowStats(1,2,None,0)
print("DpFlow()", timeit.timeit(lambda: DpFlow(u,None,(),s,p), number=200000)/0.2, "us")
print("FlowStats()", timeit.timeit(lambda: FlowStats(1,2,3.0,0), number=200000)/0.2, "us")
new=object.__new__
d=[DpFlow.__dict__[k].__set__ for k in ("ufid","match","actions","stats","placement")]
su,sm,sa,ss,sp=d
def fast(u,m,a,s,p):
    o=new(DpFlow); su(o,u); sm(o,m); sa(o,a); ss(o,s); sp(o,p); return o
print("fast DpFlow", timeit.timeit(lambda: fast(u,None,(),s,p), number=200000)/0.2, "us")
print("lambda overhead", timeit.timeit(lambda: None, number=200000)/0.2, "us")
import copyreg
# __setstate__ based? slots dataclass in 3.11 defines __getstate__/__setstate__
print(hasattr(DpFlow,'__setstate__'))
st=DpFlow.__setstate__
def fast2(u,m,a,s,p):
    o=new(DpFlow); st(o,(u,m,a,s,p)); return o
print("setstate DpFlow", timeit.timeit(lambda: fast2(u,None,(),s,p), number=200000)/0.2, "us")
from dataclasses import fields
def maker(cls):
    setters = tuple(cls.__dict__[f.name].__set__ for f in fields(cls))
    def make(*values):
        o = new(cls)
        for s, v in zip(setters, values):
            s(o, v)
        return o
    return make
mk=maker(DpFlow)
print("zip DpFlow", timeit.timeit(lambda: mk(u,None,(),s,p), number=200000)/0.2, "us")
mk2=maker(FlowStats)
print("zip FlowStats", timeit.timeit(lambda: mk2(1,2,3.0,0), number=200000)/0.2, "us")
