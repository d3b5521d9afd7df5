# asyncio twins of loom's benchmarks that ../shared/bench has no peer for.
# usage: peers_asyncio.py semaphore|gather|timeout [uvloop]
import asyncio, sys, time
N_SEM, N_SEM_TASKS, N_GATHER, N_TIMEOUT = 100_000, 10_000, 100_000, 100_000

async def semaphore():
    sem = asyncio.Semaphore(N_SEM_TASKS)
    entered = 0
    async def worker():
        nonlocal entered
        for _ in range(N_SEM // N_SEM_TASKS):
            async with sem:
                entered += 1
    await asyncio.gather(*(worker() for _ in range(N_SEM_TASKS)))
    assert entered == N_SEM

async def gather():
    async def one(): return 1
    assert sum(await asyncio.gather(*(one() for _ in range(N_GATHER)))) == N_GATHER

async def timeout():
    async def op(): return 1
    total = 0
    for _ in range(N_TIMEOUT):
        async with asyncio.timeout(10):
            total += await op()
    assert total == N_TIMEOUT

which = sys.argv[1]
if len(sys.argv) > 2 and sys.argv[2] == 'uvloop':
    import uvloop; uvloop.install()
n = {'semaphore': N_SEM, 'gather': N_GATHER, 'timeout': N_TIMEOUT}[which]
t0 = time.perf_counter(); asyncio.run(globals()[which]()); el = time.perf_counter() - t0
print(f"{which} n={n} seconds={el:.3f} per_op_us={el / n * 1e6:.2f}")
