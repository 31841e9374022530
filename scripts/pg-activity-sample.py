#!/usr/bin/env python3
"""Samples pg_stat_activity of one database every 10 ms until SIGINT or SIGTERM: which
statements its backends are running (active), and whether on CPU or waiting (the wait
event). Prints the share of samples by statement and writes the pids seen (the
database's backends and the cluster's background processes) to --pids, for
scripts/perf-summary.py. Needs asyncpg (scripts/bench-profile.sh runs it with the
.local/bench-venv of the FastAPI peer).

    pg-activity-sample.py DATABASE_URL --pids FILE
"""

import argparse
import asyncio
import collections
import re
import signal

import asyncpg

QUERY = """
SELECT pid, datname IS NULL AS background, state = 'active' AS active,
       coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait, left(query, 200) AS query
FROM pg_stat_activity
WHERE (datname = current_database() OR datname IS NULL)
  AND application_name <> 'city-bridge-bench'  -- the benchmark's own connections
"""


def shape(query):
    query = re.sub(r"\s+", " ", query).strip()
    return query[:110]


async def main():
    args = argparse.ArgumentParser()
    args.add_argument("url")
    args.add_argument("--pids", required=True)
    args = args.parse_args()
    conn = await asyncpg.connect(args.url, server_settings={"application_name": "city-bridge-bench"})
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    pids = set()
    by_query = collections.Counter()
    by_wait = collections.defaultdict(collections.Counter)
    rounds = 0
    while not stop.is_set():
        rounds += 1
        for row in await conn.fetch(QUERY):
            pids.add(row["pid"])
            if row["background"] or not row["active"]:
                continue
            q = shape(row["query"])
            by_query[q] += 1
            by_wait[q][row["wait"]] += 1
        try:
            await asyncio.wait_for(stop.wait(), 0.01)
        except asyncio.TimeoutError:
            pass
    await conn.close()
    with open(args.pids, "w") as f:
        f.write("\n".join(str(p) for p in sorted(pids)) + "\n")
    total = sum(by_query.values()) or 1
    print(f"\nPostgres statements of the database, active in {rounds} samples of pg_stat_activity "
          f"(every 10 ms; {total} backend-samples active):")
    for q, n in by_query.most_common(12):
        waits = ", ".join(f"{w} {100 * c / n:.0f}%" for w, c in by_wait[q].most_common(3))
        print(f"  {100 * n / total:5.1f}%  {q}\n          ({waits})")


asyncio.run(main())
