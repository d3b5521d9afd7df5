/*
 * tcp.c: opening streams. The primitives under loom.tcp, loom.unix and
 * loom.dns (lua/loom/net.lua does the rest): getaddrinfo in the thread pool,
 * connecting one address, listening, and the loom.Server object whose
 * accept hands each connection to a waiting task; and the descriptors a
 * worker supervisor shares with its workers (listening sockets, channels).
 *
 * Servers accept by themselves rather than through uv_listen: libuv, out of
 * descriptors, accepts and closes the waiting connections (its EMFILE
 * trick), while a server should leave them queued in the backlog and take
 * them once descriptors free up. So the socket is bound by libuv, listened
 * on and accepted from here, and watched with a uv_poll_t only while a task
 * waits in accept and nothing is ready.
 */

/***
@module loom.net
*/
#define _GNU_SOURCE /* accept4 */
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netdb.h>
#include <time.h>
#include "loom.h"
#include "stream.h"

#define LOOM_SERVER "loom.Server"

typedef struct server {
  loom_handle h;   /* first: the bound, listening uv_tcp_t or uv_pipe_t */
  uv_poll_t *poll; /* readiness of the listening socket */
  uv_os_fd_t fd;
  int closed, pipe, polling;
  loom_link acceptors;
} server;

/* Upvalues of the functions here: 1 = module state, 2 = the Server
   metatable, 3 = the Stream metatable. */
#define MT lua_upvalueindex(2)
#define STREAM_MT lua_upvalueindex(3)


/* ---------------------------------------------------------------- dns */

typedef struct gai {
  uv_getaddrinfo_t req;
  loom_task *task; /* NULL once it gave up */
} gai;

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  gai *g = loom_container(req, gai, req);
  (void)status;
  if (g->task) {
    loom_wake((loom_loop *)req->loop, g->task, 0);
    return;
  }
  uv_freeaddrinfo(res);
  free(g);
}

static void gai_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  gai *g = t->waitobj;
  (void)L;
  (void)lp;
  if (t->state == LOOM_WAITING) {
    g->task = NULL;
    uv_cancel((uv_req_t *)&g->req);
  } else {
    uv_freeaddrinfo(g->req.addrinfo);
    free(g);
  }
}

static int gai_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, gai_k);
  gai *g = t->waitobj;
  struct addrinfo *ai, *res = g->req.addrinfo;
  int i = 0, rc = g->req.retcode;
  (void)status;
  free(g);
  if (rc < 0 || res == NULL) {
    uv_freeaddrinfo(res);
    return loom_fail(L, rc < 0 ? rc : UV_EAI_NONAME, lua_tostring(L, 1));
  }
  lua_newtable(L);
  for (ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    loom_push_addr(L, ai->ai_addr);
    lua_pop(L, 1);
    lua_rawseti(L, -2, ++i);
  }
  uv_freeaddrinfo(res);
  return 1;
}

/* loom.core._getaddrinfo(host): the IPv4 and IPv6 addresses of host, in the
   resolver's order (duplicates possible), or nil, msg, code. May block. */
static int l_getaddrinfo(lua_State *L) {
  loom_state *S = loom_getstate(L);
  const char *host = luaL_checkstring(L, 1);
  loom_task *t = loom_checkrunning(L, S, "resolve");
  struct addrinfo hints;
  gai *g = calloc(1, sizeof *g);
  int rc;
  if (g == NULL) return luaL_error(L, "resolve: out of memory");
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  rc = uv_getaddrinfo(&S->loop->uv, &g->req, on_gai, host, NULL, &hints);
  if (rc < 0) {
    free(g);
    return loom_fail(L, rc, host);
  }
  g->task = t;
  lua_settop(L, 1);
  loom_suspend(L, t);
  t->undo = gai_undo;
  t->waitobj = g;
  return loom_yield(L, t, gai_k);
}

typedef struct gni {
  uv_getnameinfo_t req;
  loom_task *task; /* NULL once it gave up */
} gni;

static void on_gni(uv_getnameinfo_t *req, int status, const char *host, const char *service) {
  gni *g = loom_container(req, gni, req);
  (void)status;
  (void)host;
  (void)service;
  if (g->task) {
    loom_wake((loom_loop *)req->loop, g->task, 0);
    return;
  }
  free(g);
}

static void gni_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  gni *g = t->waitobj;
  (void)L;
  (void)lp;
  if (t->state == LOOM_WAITING) {
    g->task = NULL;
    uv_cancel((uv_req_t *)&g->req);
  } else {
    free(g);
  }
}

static int gni_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, gni_k);
  gni *g = t->waitobj;
  int rc = g->req.retcode;
  (void)status;
  if (rc < 0) {
    free(g);
    return loom_fail(L, rc, lua_tostring(L, 1));
  }
  lua_pushstring(L, g->req.host);
  free(g);
  return 1;
}

/* loom.core._getnameinfo(ip): the host name of an address (reverse DNS, in
   the thread pool), or nil, msg, code. Blocks. */
static int l_getnameinfo(lua_State *L) {
  loom_state *S = loom_getstate(L);
  struct sockaddr_storage ss;
  loom_task *t;
  gni *g;
  int rc;
  lua_settop(L, 1);
  lua_pushinteger(L, 0);
  loom_parse_addr(L, 1, 2, &ss);
  lua_settop(L, 1);
  t = loom_checkrunning(L, S, "tohostname");
  if ((g = calloc(1, sizeof *g)) == NULL) return luaL_error(L, "tohostname: out of memory");
  rc = uv_getnameinfo(&S->loop->uv, &g->req, on_gni, (struct sockaddr *)&ss, NI_NAMEREQD);
  if (rc < 0) {
    free(g);
    return loom_fail(L, rc, lua_tostring(L, 1));
  }
  g->task = t;
  loom_suspend(L, t);
  t->undo = gni_undo;
  t->waitobj = g;
  return loom_yield(L, t, gni_k);
}

/* loom.core._hostname(): this machine's name. Never blocks. */
static int l_hostname(lua_State *L) {
  char buf[UV_MAXHOSTNAMESIZE];
  size_t n = sizeof buf;
  int rc = uv_os_gethostname(buf, &n);
  if (rc < 0) return loom_fail(L, rc, NULL);
  lua_pushlstring(L, buf, n);
  return 1;
}

/* loom.core._walltime(): seconds since the epoch, to the microsecond
   (LuaSocket's gettime). Never blocks. */
static int l_walltime(lua_State *L) {
  uv_timeval64_t tv;
  uv_gettimeofday(&tv);
  lua_pushnumber(L, (lua_Number)tv.tv_sec + tv.tv_usec / 1e6);
  return 1;
}

/* loom.core._sleep_blocking(s): sleeps the whole thread (LuaSocket's sleep
   outside a task). */
static int l_sleep_blocking(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  struct timespec ts;
  if (!(s > 0)) return 0;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (lua_Number)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) continue;
  return 0;
}

/* The IP address at hidx and the port at pidx as a socket address; raises
   for anything else (the Lua layer resolves host names first). */
void loom_parse_addr(lua_State *L, int hidx, int pidx, struct sockaddr_storage *ss) {
  const char *host = luaL_checkstring(L, hidx);
  lua_Integer port = luaL_checkinteger(L, pidx);
  luaL_argcheck(L, port >= 0 && port <= 65535, pidx, "port must be 0-65535");
  if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0) return;
  if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0) return;
  luaL_argerror(L, hidx, "not an IP address");
}

/* ---------------------------------------------------------------- connect */

typedef struct conn {
  uv_connect_t req;
  loom_task *task; /* NULL once it gave up */
  lstream *st;
} conn;

/* The request is freed by whoever sees it last: the continuation (or the
   undo) of a task still waiting for it, or this callback if it gave up. */
static void on_connect(uv_connect_t *req, int status) {
  conn *c = loom_container(req, conn, req);
  if (c->task == NULL) {
    free(c);
    return;
  }
  lua_pushinteger(c->task->co, status);
  loom_wake((loom_loop *)req->handle->loop, c->task, 1);
}

static void connect_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  conn *c = t->waitobj;
  lstream *st = c->st;
  (void)L;
  (void)lp;
  if (t->state == LOOM_WAITING)
    c->task = NULL; /* on_connect frees it */
  else
    free(c);
  loom_stream_shut(st); /* the stream never reaches the caller */
}

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, connect_k);
  int rc = (int)lua_tointeger(L, -1);
  lstream *st = lua_touserdata(L, t->kept);
  (void)status;
  free(t->waitobj);
  lua_pop(L, 1);
  if (rc < 0) {
    loom_stream_shut(st);
    return loom_fail(L, rc, NULL);
  }
  return 1; /* the stream */
}

static int connect_to(lua_State *L, loom_state *S, loom_task *t, uv_stream_t *hs, int pipe_path,
                      const struct sockaddr *sa) {
  conn *c = calloc(1, sizeof *c);
  lstream *st;
  int rc;
  if (c == NULL) {
    free(hs);
    return luaL_error(L, "connect: out of memory");
  }
  st = loom_stream_new(L, S->loop, hs, STREAM_MT);
  c->st = st;
  c->task = t;
  if (pipe_path) {
    uv_pipe_connect(&c->req, (uv_pipe_t *)hs, lua_tostring(L, 1), on_connect);
  } else if ((rc = uv_tcp_connect(&c->req, (uv_tcp_t *)hs, sa, on_connect)) < 0) {
    free(c);
    loom_stream_shut(st);
    return loom_fail(L, rc, NULL);
  }
  loom_suspend(L, t); /* kept: the stream on top */
  t->undo = connect_undo;
  t->waitobj = c;
  return loom_yield(L, t, connect_k);
}

/* loom.core._tcp_connect(ip, port): a stream connected to that address, or
   nil, msg, code (ECONNREFUSED, ENETUNREACH ...). May block. */
static int l_tcp_connect(lua_State *L) {
  loom_state *S = loom_getstate(L);
  struct sockaddr_storage ss;
  loom_task *t;
  uv_tcp_t *h;
  loom_parse_addr(L, 1, 2, &ss);
  t = loom_checkrunning(L, S, "connect");
  if ((h = malloc(sizeof *h)) == NULL) return luaL_error(L, "connect: out of memory");
  uv_tcp_init(&S->loop->uv, h);
  lua_settop(L, 2);
  return connect_to(L, S, t, (uv_stream_t *)h, 0, (struct sockaddr *)&ss);
}

/* loom.core._pipe_connect(path): a stream connected to the Unix socket, or
   nil, msg, code. May block. */
static int l_pipe_connect(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_task *t;
  uv_pipe_t *h;
  luaL_checkstring(L, 1);
  t = loom_checkrunning(L, S, "connect");
  if ((h = malloc(sizeof *h)) == NULL) return luaL_error(L, "connect: out of memory");
  uv_pipe_init(&S->loop->uv, h, 0);
  lua_settop(L, 1);
  return connect_to(L, S, t, (uv_stream_t *)h, 1, NULL);
}

/* ---------------------------------------------------------------- servers */

static void server_shut(server *srv) {
  if (srv->closed) return;
  srv->closed = 1;
  if (srv->poll) {
    uv_close((uv_handle_t *)srv->poll, loom_handle_free);
    srv->poll = NULL;
  }
  loom_handle_close(&srv->h);
  while (!loom_list_empty(&srv->acceptors))
    loom_wake(srv->h.lp, loom_container(srv->acceptors.next, loom_task, wait), 0);
}

static void server_teardown(loom_handle *h) {
  server_shut((server *)h);
}

/* A connection is waiting: the acceptors try, and polling stops until one
   of them finds the queue empty again (level-triggered, it would spin). */
static void on_readable(uv_poll_t *p, int status, int events) {
  server *srv = p->data;
  (void)status;
  (void)events;
  uv_poll_stop(p);
  srv->polling = 0;
  if (!loom_list_empty(&srv->acceptors))
    loom_wake(srv->h.lp, loom_container(srv->acceptors.next, loom_task, wait), 0);
}

static server *checkserver(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

static int accept_k(lua_State *L, int status, lua_KContext ctx);

/* Wraps an accepted descriptor in a stream and pushes it; 1, or loom_fail's
   values. */
static int wrap_accepted(lua_State *L, loom_state *S, server *srv, int fd) {
  uv_stream_t *c = malloc(srv->pipe ? sizeof(uv_pipe_t) : sizeof(uv_tcp_t));
  int rc;
  if (c == NULL) {
    close(fd);
    return luaL_error(L, "accept: out of memory");
  }
  if (srv->pipe) {
    uv_pipe_init(&S->loop->uv, (uv_pipe_t *)c, 0);
    rc = uv_pipe_open((uv_pipe_t *)c, fd);
  } else {
    uv_tcp_init(&S->loop->uv, (uv_tcp_t *)c);
    rc = uv_tcp_open((uv_tcp_t *)c, fd);
  }
  if (rc < 0) {
    close(fd);
    c->data = NULL;
    uv_close((uv_handle_t *)c, loom_handle_free);
    return loom_fail(L, rc, NULL);
  }
  if (!srv->pipe) uv_tcp_nodelay((uv_tcp_t *)c, 1);
  loom_stream_new(L, S->loop, c, STREAM_MT);
  return 1;
}

/***
A listening socket, from `tcp.listen`, `tcp.serve` (and the `unix`
ones).
@type Server
*/

/***
The next connection (with TCP_NODELAY on). Blocks. Out of descriptors it
returns "EMFILE" and leaves the waiting connections queued (none is
accepted and dropped): call again once descriptors free up.
@function Server:accept
@return a Stream, or nil, msg, code ("closed" once the server is closed;
"EMFILE" when out of descriptors)
@usage local s = assert(server:accept())
*/
static int sv_accept(lua_State *L) {
  loom_state *S = loom_getstate(L);
  server *srv = checkserver(L);
  loom_task *t = loom_checkrunning(L, S, "accept");
  int fd, rc;
  if (srv->closed) return loom_fail_closed(L);
  if (loom_list_empty(&srv->acceptors)) { /* first come, first served */
    do fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
    if (fd >= 0) return wrap_accepted(L, S, srv, fd);
    if (errno != EAGAIN && errno != EWOULDBLOCK) return loom_fail(L, uv_translate_sys_error(errno), NULL);
  }
  if (!srv->polling) {
    if ((rc = uv_poll_start(srv->poll, UV_READABLE, on_readable)) < 0) return loom_fail(L, rc, NULL);
    srv->polling = 1;
  }
  lua_settop(L, 1);
  loom_suspend(L, t);
  loom_list_append(&srv->acceptors, &t->wait);
  return loom_yield(L, t, accept_k);
}

static int accept_k(lua_State *L, int status, lua_KContext ctx) {
  server *srv = lua_touserdata(L, 1);
  int r;
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, accept_k);
  r = sv_accept(L);
  /* the next acceptor in line tries too: several connections may wait */
  if (r == 1 && lua_type(L, -1) == LUA_TUSERDATA && !loom_list_empty(&srv->acceptors) && !srv->polling)
    loom_wake(srv->h.lp, loom_container(srv->acceptors.next, loom_task, wait), 0);
  return r;
}

/* server:_accept_now(): a connection the kernel has queued, or nil when
   none is (for a graceful close, which takes them before closing: Linux
   resets those still queued on a socket's last close). Never blocks. */
static int sv_accept_now(lua_State *L) {
  loom_state *S = loom_getstate(L);
  server *srv = checkserver(L);
  int fd;
  if (srv->closed || S->loop == NULL) return 0;
  do fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
  if (fd < 0) return 0;
  return wrap_accepted(L, S, srv, fd);
}

/***
Where the server listens. Never blocks.
@function Server:address
@return host and port (port 0 in listen picked a free one; a path for Unix sockets)
@usage local _, port = server:address()
*/
static int sv_address(lua_State *L) {
  server *srv = checkserver(L);
  struct sockaddr_storage ss;
  int len = sizeof ss, rc;
  if (srv->closed) return loom_fail(L, UV_EBADF, NULL);
  if (srv->pipe) {
    char path[1024];
    size_t plen = sizeof path;
    rc = uv_pipe_getsockname((uv_pipe_t *)srv->h.uv, path, &plen);
    if (rc < 0) return loom_fail(L, rc, NULL);
    lua_pushlstring(L, path, plen);
    return 1;
  }
  rc = uv_tcp_getsockname((uv_tcp_t *)srv->h.uv, (struct sockaddr *)&ss, &len);
  if (rc < 0) return loom_fail(L, rc, NULL);
  return loom_push_addr(L, (struct sockaddr *)&ss);
}

/***
Stops listening; `accept` then returns nil, "closed"; connections already
accepted go on. Also `<close>`. Never blocks.
@function Server:close
@usage server:close()
*/
static int sv_close(lua_State *L) {
  server_shut(loom_checkudata(L, 1, MT));
  return 0;
}

static int sv_tostring(lua_State *L) {
  server *srv = loom_checkudata(L, 1, MT);
  lua_pushfstring(L, "loom.Server (%s)", srv->closed ? "closed" : "listening");
  return 1;
}

static server *new_server(lua_State *L, loom_state *S, uv_stream_t *hs, int pipe) {
  server *srv = lua_newuserdatauv(L, sizeof *srv, 0);
  memset(srv, 0, sizeof *srv);
  srv->pipe = pipe;
  srv->fd = -1;
  loom_list_init(&srv->acceptors);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  loom_handle_open(L, &srv->h, S->loop, (uv_handle_t *)hs, -1, server_teardown);
  return srv;
}

static int listen_on(lua_State *L, server *srv, int backlog) {
  int rc = uv_fileno(srv->h.uv, &srv->fd);
  if (rc == 0 && listen(srv->fd, backlog) < 0) rc = uv_translate_sys_error(errno);
  if (rc == 0 && (srv->poll = malloc(sizeof *srv->poll)) == NULL) rc = UV_ENOMEM;
  if (rc == 0 && (rc = uv_poll_init_socket(&srv->h.lp->uv, srv->poll, srv->fd)) < 0) {
    free(srv->poll);
    srv->poll = NULL;
  }
  if (rc < 0) {
    server_shut(srv);
    return loom_fail(L, rc, NULL);
  }
  srv->poll->data = srv;
  return 1;
}

/* loom.core._tcp_listen(ip, port, backlog, reuseport [, fd]): a server, or
   nil, msg, code (EADDRINUSE, EACCES ...); with fd, a server on that
   listening socket (a worker's, inherited from its supervisor: see
   _listen_fd), ip and port unused. Never blocks. */
static int l_tcp_listen(lua_State *L) {
  loom_state *S = loom_getstate(L);
  struct sockaddr_storage ss;
  int backlog, reuseport, rc;
  uv_tcp_t *h;
  server *srv;
  backlog = (int)luaL_optinteger(L, 3, 511);
  reuseport = lua_toboolean(L, 4);
  if (!lua_isinteger(L, 5)) loom_parse_addr(L, 1, 2, &ss);
  if (S->loop == NULL) return loom_not_in_task(L, "listen");
  if ((h = malloc(sizeof *h)) == NULL) return luaL_error(L, "listen: out of memory");
  if (lua_isinteger(L, 5)) {
    uv_tcp_init(&S->loop->uv, h);
    srv = new_server(L, S, (uv_stream_t *)h, 0);
    int fd = (int)lua_tointeger(L, 5);
    fcntl(fd, F_SETFD, FD_CLOEXEC); /* inherited as a stdio entry: not passed on to this process's children */
    if ((rc = uv_tcp_open(h, (uv_os_sock_t)fd)) < 0) {
      server_shut(srv);
      return loom_fail(L, rc, NULL);
    }
    return listen_on(L, srv, backlog);
  }
  uv_tcp_init_ex(&S->loop->uv, h, ss.ss_family);
  srv = new_server(L, S, (uv_stream_t *)h, 0);
  if (reuseport) { /* libuv 1.44 has no flag for it: set it on the socket itself */
    uv_os_fd_t fd;
    int on = 1;
    if (uv_fileno((uv_handle_t *)h, &fd) == 0) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on);
  }
  rc = uv_tcp_bind(h, (struct sockaddr *)&ss, 0);
  if (rc == 0) { /* libuv defers EADDRINUSE to uv_listen: an unbound socket still has port 0 */
    struct sockaddr_storage got;
    int len = sizeof got;
    if (uv_tcp_getsockname(h, (struct sockaddr *)&got, &len) < 0 ||
        ((struct sockaddr_in *)&got)->sin_port == 0) /* sin6_port is at the same place */
      rc = UV_EADDRINUSE;
  }
  if (rc < 0) {
    server_shut(srv);
    return loom_fail(L, rc, lua_tostring(L, 1));
  }
  return listen_on(L, srv, backlog);
}

/* loom.core._listen_fd(ip, port, backlog): a listening socket with
   SO_REUSEPORT, as a bare descriptor that no loop watches (close-on-exec:
   a child gets it only as an explicit stdio entry): a supervisor holds one
   per worker, so that a worker's queue outlives the worker. fd and the
   port, or nil, msg, code. Never blocks. */
static int l_listen_fd(lua_State *L) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int backlog, fd, on = 1, rc = 0;
  loom_parse_addr(L, 1, 2, &ss);
  backlog = (int)luaL_optinteger(L, 3, 511);
  fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) < 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0 ||
      bind(fd, (struct sockaddr *)&ss, ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                                 : sizeof(struct sockaddr_in)) < 0 ||
      listen(fd, backlog) < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
    rc = uv_translate_sys_error(errno);
  if (rc < 0) {
    if (fd >= 0) close(fd);
    return loom_fail(L, rc, lua_tostring(L, 1));
  }
  lua_pushinteger(L, fd);
  lua_pushinteger(L, ntohs(((struct sockaddr_in *)&ss)->sin_port)); /* sin6_port is at the same place */
  return 2;
}

/* loom.core._close_fd(fd): closes a descriptor from _listen_fd. */
static int l_close_fd(lua_State *L) {
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

/* loom.core._pipe_open(fd): a stream over an inherited descriptor (a
   worker's channel to its supervisor), or nil, msg, code. Never blocks. */
static int l_pipe_open(lua_State *L) {
  loom_state *S = loom_getstate(L);
  int fd = (int)luaL_checkinteger(L, 1), rc;
  uv_pipe_t *h;
  if (S->loop == NULL) return loom_not_in_task(L, "open");
  if ((h = malloc(sizeof *h)) == NULL) return luaL_error(L, "open: out of memory");
  uv_pipe_init(&S->loop->uv, h, 0);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  if ((rc = uv_pipe_open(h, fd)) < 0) {
    h->data = NULL;
    uv_close((uv_handle_t *)h, loom_handle_free);
    return loom_fail(L, rc, NULL);
  }
  loom_stream_new(L, S->loop, (uv_stream_t *)h, STREAM_MT);
  return 1;
}

/* loom.core._pipe_listen(path, backlog): a Unix socket server, or nil, msg,
   code. Never blocks. */
static int l_pipe_listen(lua_State *L) {
  loom_state *S = loom_getstate(L);
  const char *path = luaL_checkstring(L, 1);
  int backlog = (int)luaL_optinteger(L, 2, 511), rc;
  uv_pipe_t *h;
  server *srv;
  if (S->loop == NULL) return loom_not_in_task(L, "listen");
  if ((h = malloc(sizeof *h)) == NULL) return luaL_error(L, "listen: out of memory");
  uv_pipe_init(&S->loop->uv, h, 0);
  srv = new_server(L, S, (uv_stream_t *)h, 1);
  rc = uv_pipe_bind(h, path);
  if (rc < 0) {
    server_shut(srv);
    return loom_fail(L, rc, path);
  }
  return listen_on(L, srv, backlog);
}

/* stream options for the Lua layer: loom.core._tcp_options(stream, nodelay,
   keepalive_seconds_or_false). */
static int l_tcp_options(lua_State *L) {
  lstream *st = luaL_checkudata(L, 1, LOOM_STREAM);
  uv_tcp_t *h = (uv_tcp_t *)st->h.uv;
  if (h && h->type == UV_TCP) {
    uv_tcp_nodelay(h, lua_toboolean(L, 2));
    if (!lua_isnoneornil(L, 3))
      uv_tcp_keepalive(h, lua_toboolean(L, 3),
                       lua_isnumber(L, 3) ? (unsigned)lua_tointeger(L, 3) : 60);
  }
  return 0;
}

/* Expects [state, module] with module._Stream set. */
void loom_open_tcp(lua_State *L) {
  static const luaL_Reg methods[] = {{"accept", sv_accept}, {"address", sv_address},
                                     {"close", sv_close},   {"_accept_now", sv_accept_now},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", sv_close}, {"__tostring", sv_tostring}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"_getaddrinfo", l_getaddrinfo}, {"_getnameinfo", l_getnameinfo},
                                   {"_hostname", l_hostname}, {"_walltime", l_walltime},
                                   {"_sleep_blocking", l_sleep_blocking}, {"_tcp_connect", l_tcp_connect},
                                   {"_pipe_connect", l_pipe_connect}, {"_tcp_listen", l_tcp_listen},
                                   {"_pipe_listen", l_pipe_listen},  {"_tcp_options", l_tcp_options},
                                   {"_listen_fd", l_listen_fd},      {"_close_fd", l_close_fd},
                                   {"_pipe_open", l_pipe_open},      {NULL, NULL}};
  int S = lua_absindex(L, -2), mt, i;
  loom_newclass(L, S, LOOM_SERVER, methods, meta);
  mt = lua_gettop(L);
  /* every function here gets the Stream metatable as upvalue 3 */
  lua_getfield(L, mt, "__index");
  for (i = 0; methods[i].name; i++) {
    lua_pushvalue(L, S);
    lua_pushvalue(L, mt);
    lua_getfield(L, S + 1, "_Stream");
    lua_pushcclosure(L, methods[i].func, 3);
    lua_setfield(L, -2, methods[i].name);
  }
  lua_pop(L, 1);
  for (i = 0; funcs[i].name; i++) {
    lua_pushvalue(L, S);
    lua_pushvalue(L, mt);
    lua_getfield(L, S + 1, "_Stream");
    lua_pushcclosure(L, funcs[i].func, 3);
    lua_setfield(L, S + 1, funcs[i].name);
  }
  lua_pop(L, 1);
}
