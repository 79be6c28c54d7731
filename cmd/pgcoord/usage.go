package main

const usageText = `pgcoord - named distributed locks on PostgreSQL advisory locks

Usage:
  pgcoord <command> [flags] [args]

Commands:
  migrate   apply pgcoord's schema migrations (--status: report, apply nothing)
  members   list live members (--all: also stopped and stale ones)
  locks     list the locks held and awaited, from pgcoord.held_locks
  prune     delete old member rows and unused names' rows (--older-than 24h)
  run       run a command while holding a lock, like flock(1):
              pgcoord run --lock NAME [--wait|--nowait|--timeout 10s] -- CMD ARGS...
  demo      three agents share volume locks; one crashes and another takes over
  elect     run a command while leader of an election:
              pgcoord elect NAME [--value V] [--timeout 10s] -- CMD ARGS...
  leader    print an election's leader (--watch: follow every change)
  help      show this help, or "pgcoord help <command>" for a command's flags

Database:
  Every command takes --database-url URL, default $DATABASE_URL. Without
  either, demo starts a throwaway PostgreSQL server (removed when it exits);
  every other command refuses and exits 78: a private server would give
  locks nobody else can see.

Output:
  members, locks, leader, migrate and prune take --json (or -o json): times in RFC 3339,
  UTC. Tables print times in the local zone, with its offset.

Exit codes:
  0      success
  1      error: a query failed, the server refused the login, the schema is
         missing...
  2      usage error
  3      run: the lock could not be acquired (busy with --nowait, still busy
         after --timeout); elect: not leader within --timeout; the command
         was not run (--conflict-exit-code N picks another code, like flock -E)
  69     the database could not be reached (connection refused, unknown
         host, timed out: each connection attempt gives up after 10s unless
         the URL sets connect_timeout, and the queries of locks, members,
         prune, leader and migrate --status after 30s)
  75     run: the lock was lost while the command ran (elect: leadership
         was lost); the command was sent SIGTERM (SIGKILL after --grace) and
         pgcoord exited once it ended; or pgcoord was frozen or starved and
         its watchdog stopped the command (see "pgcoord help run")
  78     no database: neither --database-url nor $DATABASE_URL is set
  126    run, elect: the command could not be started
  127    run, elect: the command was not found
  128+N  interrupted by signal N before the command started
  other  run, elect: the command's own exit status (128+N if signal N killed it)
`
