# asyncpg on uvloop under the same load as bench/pg_loom.lua (bench/pg.sh):
# usage pg_asyncpg.py DSN select|wait SECS | insert ROWS
import asyncio, sys, time
import asyncpg, uvloop

QS = "SELECT id, name FROM users WHERE id = $1"
QW = "SELECT u.id, u.name FROM users u, pg_sleep(0.001) WHERE u.id = $1"

async def select(dsn, secs, Q):
    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    count = 0
    stop = False

    async def worker(w):
        nonlocal count
        i = w
        while not stop:
            row = await pool.fetchrow(Q, i)
            assert row["id"] == i
            count += 1
            i = i % 10000 + 1

    tasks = [asyncio.create_task(worker(w)) for w in range(1, 51)]
    await asyncio.sleep(0.5)
    c0, t0 = count, time.monotonic()
    await asyncio.sleep(secs)
    c1, t1 = count, time.monotonic()
    stop = True
    await asyncio.gather(*tasks)
    print("qps=%d" % ((c1 - c0) / (t1 - t0)))
    await pool.close()

async def insert(dsn, n):
    conn = await asyncpg.connect(dsn)
    rows = [(i, "name %d" % i) for i in range(1, n + 1)]
    best = float("inf")
    for _ in range(3):
        await conn.execute("TRUNCATE bulk")
        t0 = time.monotonic()
        async with conn.transaction():
            await conn.executemany("INSERT INTO bulk VALUES ($1, $2)", rows)
        best = min(best, time.monotonic() - t0)
    print("rows_per_s=%d" % (n / best))
    await conn.close()

dsn, mode, n = sys.argv[1], sys.argv[2], float(sys.argv[3])
uvloop.install()
asyncio.run(insert(dsn, int(n)) if mode == "insert" else select(dsn, n, QW if mode == "wait" else QS))
