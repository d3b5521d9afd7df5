# aiohttp.web on uvloop, its router: GET /users/{id} returning a small JSON
# object, for bench/web.sh. usage: /usr/bin/python3 web_aiohttp.py PORT
import sys
import uvloop
from aiohttp import web


async def user(request):
    i = request.match_info["id"]
    return web.json_response({"id": int(i), "name": "user " + i})


app = web.Application()
app.router.add_get("/users/{id}", user)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
