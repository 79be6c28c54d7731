#!/usr/bin/env python3
# cpu-split.py SECONDS [DELAY]: the CPU seconds each kind of process used
# over SECONDS, starting after DELAY: PostgreSQL backends together, its
# auxiliary processes one by one, every other process by its command line.
# Run it beside a benchmark (make fleet) to see whether the server or the
# clients take the machine; reads /proc/*/stat, Linux only.
import os, sys, time
def snap():
    d = {}
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            st = open(f'/proc/{p}/stat').read()
            cl = open(f'/proc/{p}/cmdline').read().replace('\0',' ')
        except Exception: continue
        f = st[st.rfind(')')+2:].split()
        d[p] = (int(f[11])+int(f[12]), cl)
    return d
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0); a = snap(); time.sleep(float(sys.argv[1])); b = snap()
t = {}
for p,(v,cl) in b.items():
    dv = v - a.get(p,(0,''))[0]
    if 'postgres:' in cl:
        k = 'pg-backend' if ('idle' in cl or 'fleet' in cl or 'SELECT' in cl or 'transaction' in cl or '(' in cl) else 'pg-aux:'+cl[:40]
    else: k = cl[:40]
    t[k] = t.get(k,0)+dv/100
for k,v in sorted(t.items(), key=lambda x:-x[1]):
    if v>0.05: print(f'{v:7.2f}s {k}')
