#!/usr/bin/env python3
# perf-groups.py FILE: the share of samples of `perf script -F comm,ip,sym`
# output (recorded with `perf record -a -g`) by what they were doing:
# PostgreSQL samples by the first known function on their stack
# (receiving or sending notifications, PL/pgSQL, planning, commit, the
# executor, reading and writing the client connection), Go samples of the
# fleet processes by pgx, the notifier, GC, the rest.
import sys, collections
cats = [
 ('pg:notify-recv', ['ProcessNotifyInterrupt','asyncQueueReadAllNotifications']),
 ('pg:notify-send', ['SignalBackends','Async_Notify','PreCommit_Notify','AtCommit_Notify','pg_notify']),
 ('pg:plpgsql', ['plpgsql_call_handler']),
 ('pg:plan', ['pg_plan_queries','GetCachedPlan','pg_analyze_and_rewrite','raw_parser']),
 ('pg:commit', ['CommitTransactionCommand','StartTransactionCommand']),
 ('pg:executor', ['PortalRun','PortalStart','standard_ExecutorRun']),
 ('pg:client-io', ['pq_getbyte','secure_read','pq_flush','secure_write','socket_flush','internal_flush']),
]
tot = collections.Counter(); n=0
comm=None; stack=[]
def flush():
    global n
    if comm is None: return
    n+=1
    s=' '.join(stack)
    if comm=='postgres':
        for c,keys in cats:
            if any(k in s for k in keys): tot[c]+=1; return
        tot['pg:other']+=1
    elif comm.startswith('fleet'):
        if 'runtime.gcBgMarkWorker' in s or 'gcDrain' in s: tot['go:gc']+=1
        elif 'WaitForNotification' in s or 'notifier' in s or 'listener' in s: tot['go:notifier']+=1
        elif 'pgconn' in s or 'pgproto3' in s: tot['go:pgx']+=1
        else: tot['go:other']+=1
    else: tot['other:'+comm]+=1
for line in open(sys.argv[1]):
    if not line.strip(): continue
    if not line.startswith('\t') and not line.startswith(' '):
        flush(); comm=line.split()[0]; stack=[]
    else:
        p=line.split(None,1); stack.append(p[1].strip() if len(p)>1 else '')
flush()
for k,v in tot.most_common(): print(f'{100*v/n:5.1f}% {k}')
