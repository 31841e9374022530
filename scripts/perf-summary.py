#!/usr/bin/env python3
"""Summarises a `perf script` dump (call graphs) of an ingest run by process and by what
the time was spent on: the bridge by the part of the bridge the time is under (the
outermost `city_bridge::` frame of the stack) and by crate, Postgres by component (search
index, WAL, the journal's compression, index and heap inserts, reads, commits, background
processes). Reads the dump on stdin; `scripts/bench-profile.sh` runs it.

    perf script -F comm,pid,tid,ip,sym,dso | scripts/perf-summary.py [--bridge-pid P]
"""

import argparse
import collections
import re
import sys

# Postgres, by the first rule matching any frame of the stack (leaf first within a rule).
POSTGRES_RULES = [
    ("background: WAL writer", r"^WalWriterMain$"),
    ("background: checkpointer / background writer", r"^(CheckpointerMain|BackgroundWriterMain)$"),
    ("background: autovacuum", r"^(AutoVacWorkerMain|AutoVacLauncherMain|do_autovacuum|StartAutoVacWorker)$"),
    ("WAL: records and flushes (in every write)", r"^(XLog\w+|issue_xlog_fsync|pg_comp_crc32c\w*|CopyXLogRecordToWAL)$"),
    ("search: tsvector input and lexeme order (to_tsvector's parser, when used)", r"^(tsvectorrecv|tsvectorin|gettoken_tsvector|to_tsvector\w*|make_tsvector|parsetext|tsCompareString|compareentry|uniqueWORD|dsimple_lexize|lowerstr\w*|LexizeExec|prsd_\w+|TParser\w*)$"),
    ("search: GIN index insert", r"^(gin\w*|ginHeapTupleFastInsert|gin_cmp_tslexeme|gin_extract_tsvector)$"),
    ("journal: lz4 compression / TOAST", r"^(toast_\w+|heap_toast\w*|LZ4_\w+|lz4_\w+|pglz_\w+)$"),
    ("btree index entries (keys, (channel, seq), seq; the unique checks)", r"^(ExecInsertIndexTuples|btinsert|_bt_doinsert|ExecCheckIndexConstraints)$"),
    ("heap insert", r"^(heap_insert|heap_multi_insert|RelationGetBufferForTuple)$"),
    ("reads: index scans and heap fetches (the relay's new rows, checks)", r"^(index_getnext_slot|index_fetch_heap|heap_hot_search_buffer|_bt_first|_bt_next|heapgettup\w*|heap_getnextslot|index_getnext_tid)$"),
    ("rows out: output functions, printtup", r"^(printtup|SendRowDescriptionMessage|\w+_out|textout|OutputFunctionCall)$"),
    ("parse / bind / plan", r"^(exec_parse_message|exec_bind_message|pg_plan_queries|standard_planner|planner|pg_analyze_and_rewrite\w*|parse_analyze\w*|raw_parser|GetCachedPlan|RevalidateCachedQuery)$"),
    ("commit / begin", r"^(CommitTransaction\w*|StartTransaction\w*|AbortTransaction|AbortCurrentTransaction)$"),
    ("client protocol: socket read / write", r"^(pq_\w+|secure_read|secure_write|socket_flush)$"),
]
POSTGRES_RULES = [(name, re.compile(rule)) for name, rule in POSTGRES_RULES]


def postgres_category(frames):
    for name, rule in POSTGRES_RULES:
        if any(rule.match(sym) for sym, _ in frames):
            return name
    return "other (executor, expression evaluation, memory, kernel…)"


def crate(sym, dso):
    if dso.startswith("[kernel"):
        return "kernel"
    sym = re.sub(r"^<", "", sym)
    m = re.match(r"(?:_<)?([A-Za-z_][A-Za-z0-9_]*)::", sym)
    if m:
        return m.group(1)
    if "libc" in dso:
        return "libc (memcpy, malloc…)"
    return sym or dso


def bridge_part(frames):
    """The outermost city_bridge frame: the task or handler the time is under."""
    part = None
    for sym, _ in frames:  # leaf first
        if "city_bridge::" in sym and "city_bridge::workers::" not in sym:
            part = sym
    if part is None:
        return "(no city_bridge frame: runtime, kernel)"
    part = re.sub(r"^<", "", part)
    part = re.sub(r"::\{\{closure\}\}.*$", "", part)
    part = re.sub(r"<.*", "", part)
    return "::".join(part.split("::")[:4])


def parse(stream):
    header = re.compile(r"^(\S.*?)\s+(\d+)/(\d+)\s*$")
    sample = None
    for line in stream:
        line = line.rstrip("\n")
        if not line.strip():
            if sample:
                yield sample
            sample = None
            continue
        if not line.startswith((" ", "\t")):
            m = header.match(line)
            sample = {"comm": m.group(1) if m else line, "pid": m.group(2) if m else "?", "frames": []}
            continue
        parts = line.strip().split(None, 1)
        if sample is None or len(parts) < 2:
            continue
        rest = parts[1]
        m = re.match(r"(.*) \((.*)\)$", rest)
        sym, dso = (m.group(1), m.group(2)) if m else (rest, "")
        sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
        sample["frames"].append((sym, dso))
    if sample:
        yield sample


def table(title, counter, total, top=12):
    print(f"\n{title}")
    for name, n in counter.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--bridge-pid")
    args.add_argument("--postgres-pids", help="a file of the pids to count as the database's Postgres")
    args = args.parse_args()
    by_process = collections.Counter()
    postgres = collections.Counter()
    bridge_parts = collections.Counter()
    bridge_crates = collections.Counter()
    total = 0
    mine = None
    if args.postgres_pids:
        with open(args.postgres_pids) as f:
            mine = {line.strip() for line in f if line.strip()}
    for s in parse(sys.stdin):
        total += 1
        frames = s["frames"]
        if s["comm"].startswith("postgres") or any("postgres" in d for _, d in frames[:1]):
            if mine is not None and s["pid"] not in mine:
                by_process["postgres (other databases)"] += 1
                continue
            by_process["postgres"] += 1
            postgres[postgres_category(frames)] += 1
        elif (args.bridge_pid and s["pid"] == args.bridge_pid) or "city-bridge" in s["comm"] or s["comm"].startswith("tokio-runtime"):
            by_process["city-bridge"] += 1
            bridge_parts[bridge_part(frames)] += 1
            if frames:
                bridge_crates[crate(*frames[0])] += 1
        else:
            by_process[s["comm"]] += 1
    if not total:
        sys.exit("perf-summary: no samples")
    table("samples by process (of all samples, every process of the machine)", by_process, total, 8)
    if postgres:
        n = sum(postgres.values())
        table(f"Postgres ({n} samples) by component", postgres, n, 20)
    if bridge_parts:
        n = sum(bridge_parts.values())
        table(f"city-bridge ({n} samples) by the part of the bridge it is under", bridge_parts, n, 15)
        table(f"city-bridge ({n} samples) by the crate of the leaf frame (self time)", bridge_crates, n, 15)


if __name__ == "__main__":
    main()
