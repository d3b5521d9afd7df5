# A python3-websockets peer for spec/websocket_spec.lua (Debian's package, a
# strict implementation). Run with Debian's /usr/bin/python3.
#   (a last argument "compress" turns permessage-deflate on, with the
#   library's own parameters)
#   ws_peer.py client URL   - checks loom's server: echoes of every boundary
#                             size, binary, a fragmented message, ping, close
#   ws_peer.py server       - an echo server on a free port (printed first);
#                             "fragments" is answered with a fragmented
#                             message, "close" with a close 4001 "asked"; it
#                             ends after a connection closed with 4002
import asyncio, sys
import websockets

COMPRESS = "deflate" if "compress" in sys.argv[2:] else None

async def client(url):
    async with websockets.connect(url, compression=COMPRESS, max_size=None) as ws:
        for n in (0, 1, 125, 126, 127, 65535, 65536, 100000):
            msg = "x" * n
            await ws.send(msg)
            back = await ws.recv()
            print("echo", n, "ok" if back == msg else "WRONG", flush=True)
        await ws.send(bytes(range(256)))
        back = await ws.recv()
        print("binary", "ok" if back == bytes(range(256)) else "WRONG", flush=True)
        await ws.send(["frag", "mented ", "message ✓"])
        print("fragmented", await ws.recv(), flush=True)
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        print("pong ok", flush=True)
        await ws.close(4000, "done here")
        print("closed", ws.close_code, ws.close_reason, flush=True)
        print("extensions", [e.name for e in ws.extensions], flush=True)

done = None

async def echo(ws):
    try:
        async for msg in ws:
            if msg == "fragments":
                await ws.send(["one ", "two ", "three"])
            elif msg == "close":
                await ws.close(4001, "asked")
            else:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass
    print("server saw close", ws.close_code, ws.close_reason, flush=True)
    if ws.close_code == 4002:  # the spec's last connection
        done.set_result(True)

async def server():
    global done
    done = asyncio.get_running_loop().create_future()
    async with websockets.serve(echo, "127.0.0.1", 0, compression=COMPRESS, max_size=None) as srv:
        print(srv.sockets[0].getsockname()[1], flush=True)
        await asyncio.wait_for(done, 30)

if sys.argv[1] == "client":
    asyncio.run(client(sys.argv[2]))
else:
    asyncio.run(server())
