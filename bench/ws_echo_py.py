# python3-websockets echo server on uvloop, for bench/ws.sh.
# usage: /usr/bin/python3 bench/ws_echo_py.py PORT
import asyncio, sys
import uvloop, websockets

async def echo(ws):
    async for msg in ws:
        await ws.send(msg)

async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1]), compression=None, max_size=None):
        await asyncio.Future()

uvloop.install()
asyncio.run(main())
