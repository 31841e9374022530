"""The durable ingest peer on the seeds' stack: FastAPI + asyncpg, run by uvicorn with one
worker. Same job as durable.mjs: each `PUT /_matrix/app/v1/transactions/{txn_id}` (the
hs_token as a bearer) stores its m.room.message events with ONE statement,
`INSERT … SELECT FROM unnest(…) ON CONFLICT (event_id) DO NOTHING`, and answers {} once it
has committed. Its own schema, created on start: PEER_SCHEMA (default peer_fastapi), in
PEER_DATABASE_URL; BENCH_HS_TOKEN.

    uvicorn --app-dir bench/peers durable_fastapi:app --workers 1 --port …
"""

import os
import re
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel

TOKEN = os.environ["BENCH_HS_TOKEN"]
SCHEMA = os.environ.get("PEER_SCHEMA", "peer_fastapi")
if not re.fullmatch(r"[a-z_][a-z0-9_]*", SCHEMA):
    raise SystemExit(f"bad PEER_SCHEMA {SCHEMA}")
INSERT = f"""INSERT INTO {SCHEMA}.events (event_id, room_id, sender, ts, body)
  SELECT e, r, s, to_timestamp(t / 1000.0), b
  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[]) AS u(e, r, s, t, b)
  ON CONFLICT (event_id) DO NOTHING"""


class Event(BaseModel):
    type: str
    event_id: str
    room_id: str
    sender: str
    origin_server_ts: int
    content: dict[str, Any]


class Transaction(BaseModel):
    events: list[Event] = []


pool: asyncpg.Pool


@asynccontextmanager
async def lifespan(_: FastAPI):
    global pool
    pool = await asyncpg.create_pool(os.environ["PEER_DATABASE_URL"], min_size=1, max_size=4)
    async with pool.acquire() as conn:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
                  event_id TEXT PRIMARY KEY,
                  seq      BIGINT GENERATED ALWAYS AS IDENTITY,
                  room_id  TEXT NOT NULL,
                  sender   TEXT NOT NULL,
                  ts       TIMESTAMPTZ NOT NULL,
                  body     TEXT NOT NULL)"""
        )
        await conn.execute(
            f"CREATE INDEX IF NOT EXISTS events_room_seq ON {SCHEMA}.events (room_id, seq)"
        )
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan)


@app.put("/_matrix/app/v1/transactions/{txn_id}")
async def transaction(txn_id: str, txn: Transaction, authorization: str = Header("")):
    if authorization != f"Bearer {TOKEN}":
        return JSONResponse({"errcode": "M_FORBIDDEN", "error": "Bad token"}, status_code=403)
    messages = [
        e for e in txn.events if e.type == "m.room.message" and isinstance(e.content.get("body"), str)
    ]
    if messages:
        # Raises (a 500: Synapse retries) unless committed.
        await pool.execute(
            INSERT,
            [e.event_id for e in messages],
            [e.room_id for e in messages],
            [e.sender for e in messages],
            [e.origin_server_ts for e in messages],
            [e.content["body"] for e in messages],
        )
    return {}
