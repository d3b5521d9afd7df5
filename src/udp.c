/*
 * udp.c: loom.udp sockets. Owns the uv_udp_t (malloc'd, freed in its close
 * callback), the queue of datagrams received while no task waits (bounded:
 * the oldest are dropped beyond QUEUE_MAX), and sends (tried at once, queued
 * with a copy when the kernel is busy).
 */

/***
@module loom.net
*/
#include <stdlib.h>
#include <string.h>
#include "loom.h"
#include "stream.h"

#define LOOM_UDP "loom.UDP"
#define QUEUE_MAX 4096
#define UDPH(s) ((uv_udp_t *)(s)->h.uv)

typedef struct ludp {
  loom_handle h; /* first: its uv_udp_t (UDPH) */
  int closed, receiving, err;
  int head, tail; /* queued datagrams: triples data, host, port at [head+1 .. tail] */
  loom_link readers;
} ludp;

typedef struct sendreq {
  uv_udp_send_t req;
  char data[];
} sendreq;

/* Upvalues: 1 = module state, 2 = the UDP metatable. */
#define MT lua_upvalueindex(2)

static void shut(ludp *s) {
  if (s->closed) return;
  s->closed = 1;
  loom_handle_close(&s->h);
  while (!loom_list_empty(&s->readers)) loom_wake(s->h.lp, loom_container(s->readers.next, loom_task, wait), 0);
}

static void teardown(loom_handle *h) {
  shut((ludp *)h);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  loom_loop *lp = (loom_loop *)h->loop;
  (void)hint;
  if (lp->readbuf == NULL) lp->readbuf = malloc(LOOM_READ_BUF);
  *buf = uv_buf_init(lp->readbuf, lp->readbuf ? LOOM_READ_BUF : 0);
}

static void on_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags) {
  ludp *s = u->data;
  lua_State *L = s->h.lp->L;
  (void)flags;
  if (nread == 0 && addr == NULL) return; /* nothing more to read now */
  if (nread < 0) {
    s->err = (int)nread;
    if (!loom_list_empty(&s->readers)) loom_wake(s->h.lp, loom_container(s->readers.next, loom_task, wait), 0);
    return;
  }
  if (!loom_list_empty(&s->readers)) { /* hand it to the first waiting task */
    loom_task *t = loom_container(s->readers.next, loom_task, wait);
    lua_checkstack(t->co, 3);
    lua_pushlstring(t->co, buf->base, (size_t)nread);
    loom_push_addr(t->co, addr);
    loom_wake(s->h.lp, t, 3);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, s->h.ref);
  lua_getiuservalue(L, -1, 1);
  if ((s->tail - s->head) / 3 >= QUEUE_MAX) { /* full: the oldest goes */
    int i;
    for (i = 1; i <= 3; i++) {
      lua_pushnil(L);
      lua_rawseti(L, -2, s->head + i);
    }
    s->head += 3;
  }
  lua_pushlstring(L, buf->base, (size_t)nread);
  lua_rawseti(L, -2, ++s->tail);
  loom_push_addr(L, addr);
  lua_rawseti(L, -3, s->tail + 2);
  lua_rawseti(L, -2, s->tail + 1);
  s->tail += 2;
  lua_pop(L, 2);
}

static ludp *checkudp(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

static int recv_k(lua_State *L, int status, lua_KContext ctx);

/***
A UDP socket, from `udp.bind`. Datagrams arriving while nobody waits are
queued (at most 4,096; the oldest go).
@type UDP
*/

/***
The next datagram. Blocks.
@function UDP:recv
@tparam[opt] number timeout seconds
@return data, host, port; or nil, msg, code ("timeout"/"ETIMEDOUT")
@usage local data, host, port = sock:recv(1)
*/
static int u_recv(lua_State *L) {
  loom_state *S = loom_getstate(L);
  ludp *s = checkudp(L);
  uint64_t deadline = lua_isnoneornil(L, 2) ? UINT64_MAX : loom_deadline(L, 2);
  loom_task *t = loom_checkrunning(L, S, "recv");
  int rc;
  if (s->closed) return loom_fail_closed(L);
  if (s->head < s->tail) {
    int i;
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 1);
    for (i = 1; i <= 3; i++) {
      lua_rawgeti(L, 2, s->head + i);
      lua_pushnil(L);
      lua_rawseti(L, 2, s->head + i);
    }
    s->head += 3;
    if (s->head == s->tail) s->head = s->tail = 0;
    return 3;
  }
  if (s->err) {
    rc = s->err;
    s->err = 0;
    return loom_fail(L, rc, NULL);
  }
  if (!s->receiving) {
    if ((rc = uv_udp_recv_start(UDPH(s), on_alloc, on_recv)) < 0) return loom_fail(L, rc, NULL);
    s->receiving = 1;
  }
  lua_settop(L, 1);
  loom_suspend(L, t);
  loom_list_append(&s->readers, &t->wait);
  if (deadline != UINT64_MAX) loom_timer_start(S->loop, &t->timer, deadline);
  return loom_yield(L, t, recv_k);
}

static int recv_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, recv_k);
  (void)status;
  if (lua_gettop(L) > t->kept) return 3; /* handed a datagram */
  if (t->timed_out) return loom_fail_timeout(L);
  lua_settop(L, 1);
  return u_recv(L);
}

static void on_send(uv_udp_send_t *req, int status) {
  (void)status;
  free(loom_container(req, sendreq, req));
}

/* socket:send(data, ip, port): sends one datagram (tried at once; queued
   with a copy when the kernel is busy). true, or nil, msg, code. Never
   blocks (host names are resolved by the Lua layer's send). */
static int u_send(lua_State *L) {
  ludp *s = checkudp(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  struct sockaddr_storage ss;
  uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
  sendreq *r;
  int rc;
  loom_parse_addr(L, 3, 4, &ss);
  if (s->closed) return loom_fail_closed(L);
  rc = uv_udp_try_send(UDPH(s), &b, 1, (struct sockaddr *)&ss);
  if (rc == UV_EAGAIN) {
    if ((r = malloc(sizeof *r + len)) == NULL) return luaL_error(L, "send: out of memory");
    memcpy(r->data, data, len);
    b = uv_buf_init(r->data, (unsigned)len);
    rc = uv_udp_send(&r->req, UDPH(s), &b, 1, (struct sockaddr *)&ss, on_send);
    if (rc < 0) free(r);
  }
  if (rc < 0) return loom_fail(L, rc, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/***
The address the socket is bound to. Never blocks.
@function UDP:sockname
@return host, port, or nil, msg, code
@usage local _, port = sock:sockname()
*/
static int u_sockname(lua_State *L) {
  ludp *s = checkudp(L);
  struct sockaddr_storage ss;
  int len = sizeof ss, rc;
  if (s->closed) return loom_fail_closed(L);
  if ((rc = uv_udp_getsockname(UDPH(s), (struct sockaddr *)&ss, &len)) < 0) return loom_fail(L, rc, NULL);
  return loom_push_addr(L, (struct sockaddr *)&ss);
}

/***
Closes the socket; a task blocked in recv gets nil, "closed". Also
`<close>`. Never blocks.
@function UDP:close
@usage sock:close()
*/
static int u_close(lua_State *L) {
  shut(loom_checkudata(L, 1, MT));
  return 0;
}

static int u_tostring(lua_State *L) {
  ludp *s = loom_checkudata(L, 1, MT);
  lua_pushfstring(L, "loom.UDP (%s)", s->closed ? "closed" : "open");
  return 1;
}

/* loom.core._udp_bind(ip, port): a UDP socket bound there (port 0: a free
   one), or nil, msg, code. Never blocks. */
static int l_udp_bind(lua_State *L) {
  loom_state *S = loom_getstate(L);
  struct sockaddr_storage ss;
  ludp *s;
  uv_udp_t *u;
  int rc;
  loom_parse_addr(L, 1, 2, &ss);
  if (S->loop == NULL) return loom_not_in_task(L, "bind");
  s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  loom_list_init(&s->readers);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  if ((u = malloc(sizeof *u)) == NULL) return luaL_error(L, "bind: out of memory");
  uv_udp_init(&S->loop->uv, u);
  loom_handle_open(L, &s->h, S->loop, (uv_handle_t *)u, -1, teardown);
  if ((rc = uv_udp_bind(UDPH(s), (struct sockaddr *)&ss, 0)) < 0) {
    shut(s);
    return loom_fail(L, rc, lua_tostring(L, 1));
  }
  return 1;
}

/* Expects [state, module]. */
void loom_open_udp(lua_State *L) {
  static const luaL_Reg methods[] = {{"recv", u_recv},         {"send", u_send},
                                     {"sockname", u_sockname}, {"close", u_close},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", u_close}, {"__tostring", u_tostring}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"_udp_bind", l_udp_bind}, {NULL, NULL}};
  int S = lua_absindex(L, -2);
  loom_newclass(L, S, LOOM_UDP, methods, meta);
  loom_classfuncs(L, S + 1, S, lua_gettop(L), funcs);
  lua_setfield(L, S + 1, "_UDP");
}
