package = "loom"
version = "scm-0"
source = {
  url = "git+https://github.com/loom-lua/loom.git",
}
description = {
  summary = "Asyncio-style concurrency for Lua 5.4 on libuv",
  detailed = [[
    Tasks, sleep, cancellation, gather, timeouts, locks, queues, TCP, files,
    processes and HTTP as plain blocking-looking calls inside coroutines,
    driven by a scheduler written in C on libuv.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  HTTP_PARSER = { header = "http_parser.h", library = "http_parser" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  ZLIB = { header = "zlib.h", library = "z" },
  PQ = { header = "postgresql/libpq-fe.h", library = "pq" },
}
build = {
  type = "builtin",
  install = { bin = { ["loom-ps"] = "tools/loom-ps" } },
  modules = {
    ["loom"] = "lua/loom/init.lua",
    ["loom.condition"] = "lua/loom/condition.lua",
    ["loom.group"] = "lua/loom/group.lua",
    ["loom.fs"] = "lua/loom/fs.lua",
    ["loom.args"] = "lua/loom/args.lua",
    ["loom.net"] = "lua/loom/net.lua",
    ["loom.process"] = "lua/loom/process.lua",
    ["loom.http"] = "lua/loom/http.lua",
    ["loom.http.common"] = "lua/loom/http/common.lua",
    ["loom.http.server"] = "lua/loom/http/server.lua",
    ["loom.http.client"] = "lua/loom/http/client.lua",
    ["loom.http.router"] = "lua/loom/http/router.lua",
    ["loom.http.static"] = "lua/loom/http/static.lua",
    ["loom.http.sse"] = "lua/loom/http/sse.lua",
    ["loom.http.form"] = "lua/loom/http/form.lua",
    ["loom.http.cookies"] = "lua/loom/http/cookies.lua",
    ["loom.tls"] = "lua/loom/tls.lua",
    ["loom.websocket"] = "lua/loom/websocket.lua",
    ["loom.pg"] = "lua/loom/pg.lua",
    ["loom.socket"] = "lua/loom/socket.lua",
    ["loom.socket.ssl"] = "lua/loom/socket/ssl.lua",
    ["loom.busted"] = "lua/loom/busted.lua",
    ["loom.workers"] = "lua/loom/workers.lua",
    ["loom.resilience"] = "lua/loom/resilience.lua",
    ["loom.core"] = {
      sources = { "src/core.c", "src/debug.c", "src/errors.c", "src/fdwait.c", "src/fs.c", "src/fswatch.c", "src/handle.c", "src/http.c", "src/http_format.c", "src/http_parse.c", "src/http_serve.c", "src/inflate.c", "src/inspect.c", "src/lsocket.c", "src/pg.c", "src/process.c", "src/queue.c", "src/sched.c", "src/stream.c", "src/sync.c", "src/task.c", "src/tcp.c", "src/thread.c", "src/timer.c", "src/tls.c", "src/udp.c", "src/watch.c", "src/ws.c" },
      libraries = { "uv", "http_parser", "ssl", "crypto", "z", "pq" },
      incdirs = { "$(LIBUV_INCDIR)", "$(HTTP_PARSER_INCDIR)", "$(OPENSSL_INCDIR)", "$(ZLIB_INCDIR)", "$(PQ_INCDIR)/postgresql" },
      libdirs = { "$(LIBUV_LIBDIR)", "$(HTTP_PARSER_LIBDIR)", "$(OPENSSL_LIBDIR)", "$(ZLIB_LIBDIR)", "$(PQ_LIBDIR)" },
    },
  },
}
