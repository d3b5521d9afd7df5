# aiohttp's client on uvloop: N GETs with C in flight (one session, one
# connector), for bench/http_client.sh and bench/https.sh (BENCH_CA: the CA
# that signed an https server's certificate). Prints the requests per second.
# usage: /usr/bin/python3 bench/http_client_aiohttp.py URL [N] [C]
import asyncio, os, ssl, sys, time
import aiohttp, uvloop

async def main(url, n, c):
    left = n
    ca = os.environ.get("BENCH_CA")
    tls = ssl.create_default_context(cafile=ca) if ca else None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c, ssl=tls)) as session:
        async def worker():
            nonlocal left
            while left > 0:
                left -= 1
                async with session.get(url) as res:
                    body = await res.read()
                    assert res.status == 200 and body
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        print("rps=%.0f" % (n / (time.perf_counter() - t0)))

uvloop.install()
asyncio.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10000,
                 int(sys.argv[3]) if len(sys.argv) > 3 else 50))
