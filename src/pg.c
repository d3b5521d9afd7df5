/*
 * pg.c: PostgreSQL connections (the C half of loom.pg) on libpq's
 * asynchronous API. Owns the loom.PgConn object: libpq's PGconn, the poll
 * of its socket (fdwait.h), the request on the wire, the tasks taking turns
 * and the notifications received; lua/loom/pg.lua builds transactions,
 * LISTEN and the pool on these methods.
 *
 * One request (a query, a batch, an exec) is on the wire at a time; tasks
 * sharing a connection take turns in FIFO order. The task whose turn it is
 * sends its request itself (its parameters are on its stack) and waits; the
 * poll callback (the engine) flushes, reads and collects the results
 * without a task and wakes the sender when the request is complete; the
 * sender turns the result into Lua values and passes the turn on.
 *
 * Cancellation: a task cancelled while its request runs leaves it orphaned.
 * libpq's cancel request goes out from libuv's thread pool (PQcancel
 * blocks), the engine drains what the server still sends and then passes
 * the turn on, so the connection stays usable. That a cancel request stops
 * whatever the backend runs when it arrives is why the queries of different
 * tasks are not pipelined together on one connection: cancelling one could
 * stop another's. Pipeline mode is used where one task sends many
 * statements (batch), which is where it pays (README, "PostgreSQL").
 *
 * Statements: the first use of a text runs it unnamed; the second prepares
 * it (cached per connection, at most MAX_PREPARED) and every later use only
 * binds and executes it, asking for binary results when every column is of
 * a type converted here.
 */

/***
@module loom.pg
*/
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <math.h>
#include <poll.h>
#include <libpq-fe.h>
#include "loom.h"
#include "fdwait.h"

#define LOOM_PGCONN "loom.PgConn"
#define LOOM_PGRESULT "loom.PgResult"
#define MT lua_upvalueindex(2)
#define MAX_PREPARED 1000 /* past it, statements run unnamed */
#define MAX_PARAMS 65535  /* the protocol's limit */

enum { C_CONNECTING, C_READY, C_BROKEN, C_CLOSED };
enum { R_NONE, R_CONNECT, R_ONE, R_PREPARE, R_EXEC, R_BATCH, R_COPY, R_COPY_IO };
enum { COPY_NONE, COPY_IN, COPY_OUT };
/* Statement cache entries (the connection's uservalue 1): sql -> code. */
enum { ST_SEEN_TEXT = -1, ST_SEEN_BINARY = -2 }; /* run once; >0: prepared n*2 + binary */

typedef struct pgconn {
  loom_fdwait w; /* first: the connection's handle */
  PGconn *pg;
  int state;
  int req;        /* the request in flight, R_NONE when none */
  int busy;       /* a task holds the turn, or an orphaned request drains */
  int flushing;   /* libpq holds output the socket has not taken */
  int done;       /* the request in flight is complete */
  int listening;  /* LISTEN issued: read while idle */
  int copy;       /* a COPY in progress holds the turn: COPY_IN or COPY_OUT */
  int nprepared;  /* statements named so far */
  long long affected; /* batch: rows affected so far */
  loom_task *owner;   /* waiting for the request; NULL once orphaned */
  PGresult *res;      /* the result for the owner: the first error, else the last */
  loom_link turns;    /* tasks waiting for their turn */
  loom_link listeners;
  PGnotify *nhead, *ntail;
  char *fail;         /* the connection's failure, when libpq's message is gone */
  int doomed;         /* the server said FATAL: the connection is ending */
  struct cancel_req *cancel; /* a cancel request in flight */
  int held;           /* the turn waits for that cancel request to be done */
} pgconn;

typedef struct pgresult {
  PGresult *r;
} pgresult;

/* ------------------------------------------------------------ the engine */

static void set_poll(pgconn *c);

static void pass_turn(pgconn *c) {
  c->req = R_NONE;
  c->copy = COPY_NONE;
  c->owner = NULL;
  c->done = 0;
  if (!loom_list_empty(&c->turns)) {
    loom_wake(c->w.h.lp, loom_container(c->turns.next, loom_task, wait), 0);
  } else {
    c->busy = 0;
  }
  set_poll(c);
}

static int is_error(const PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  return st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE;
}

/* Keeps the first error, else the last result. */
static void keep_result(pgconn *c, PGresult *r) {
  if (c->res && is_error(c->res)) {
    PQclear(r);
    return;
  }
  PQclear(c->res);
  c->res = r;
}

static void copy_abandon(pgconn *c, const char *why);

/* The request is complete: its owner takes the result, or, orphaned, the
   result goes and the next task gets the turn, once the cancel request
   sent for it is done (arriving later, it could stop the next query). */
static void complete(pgconn *c) {
  if (c->req == R_BATCH && PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF) PQexitPipelineMode(c->pg);
  c->done = 1;
  if (c->owner) {
    loom_wake(c->w.h.lp, c->owner, 0);
    set_poll(c);
    return;
  }
  if (c->copy) { /* a COPY whose task gave up before it started */
    copy_abandon(c, "COPY cancelled");
    return;
  }
  PQclear(c->res);
  c->res = NULL;
  if (c->cancel) {
    c->req = R_NONE;
    c->held = 1;
    set_poll(c);
    return;
  }
  pass_turn(c);
}

static void wake_all(loom_loop *lp, loom_link *l) {
  while (!loom_list_empty(l)) loom_wake(lp, loom_container(l->next, loom_task, wait), 0);
}

/* The connection is gone (the server closed it, a network error): the
   request in flight fails with libpq's message. */
static void broken(pgconn *c) {
  if (c->state != C_READY) return;
  c->state = C_BROKEN;
  c->copy = COPY_NONE;
  if (c->fail == NULL) {
    const char *m = PQerrorMessage(c->pg);
    size_t n = strlen(m);
    while (n > 0 && (m[n - 1] == '\n' || m[n - 1] == ' ')) n--;
    if ((c->fail = malloc(n + 1)) != NULL) {
      memcpy(c->fail, m, n);
      c->fail[n] = 0;
    }
  }
  loom_fdwait_want(&c->w, 0);
  wake_all(c->w.h.lp, &c->listeners);
  if (c->req != R_NONE && !c->done) {
    PQclear(c->res);
    c->res = NULL;
    complete(c);
  }
}

static void take_notifies(pgconn *c) {
  PGnotify *n;
  int any = 0;
  while ((n = PQnotifies(c->pg)) != NULL) {
    n->next = NULL;
    if (c->ntail)
      c->ntail->next = n;
    else
      c->nhead = n;
    c->ntail = n;
    any = 1;
  }
  if (any) wake_all(c->w.h.lp, &c->listeners);
}

/* A COPY nobody goes on with (through query or exec, or abandoned): COPY
   FROM STDIN is ended with an error, COPY TO STDOUT read and dropped; 0
   when more input is needed first. */
static int end_copy(pgconn *c, ExecStatusType st) {
  char *buf;
  int n;
  if (st == PGRES_COPY_IN) {
    PQputCopyEnd(c->pg, "COPY FROM STDIN needs conn:copy_from");
    c->flushing = PQflush(c->pg) == 1;
    return 1;
  }
  while ((n = PQgetCopyData(c->pg, &buf, 1)) > 0) PQfreemem(buf);
  return n != 0;
}

/* Collects what libpq has parsed, until the request is complete or more
   input is needed. */
static void collect(pgconn *c) {
  if (c->req == R_COPY_IO) return; /* the copy's own calls read and write */
  while (c->req != R_NONE && !c->done && c->state == C_READY) {
    PGresult *r;
    ExecStatusType st;
    if (PQisBusy(c->pg)) return;
    r = PQgetResult(c->pg);
    if (r == NULL) {
      if (c->req == R_BATCH) continue; /* between the statements of a pipeline */
      complete(c);
      return;
    }
    st = PQresultStatus(r);
    if (c->req == R_COPY && (st == PGRES_COPY_IN || st == PGRES_COPY_OUT)) {
      c->copy = st == PGRES_COPY_IN ? COPY_IN : COPY_OUT;
      PQclear(r);
      complete(c);
      return;
    }
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      if (c->res && !is_error(c->res)) {
        PQclear(c->res);
        c->res = NULL;
      }
      PQclear(r);
      if (!end_copy(c, st)) return;
      continue;
    }
    if (c->req == R_BATCH) {
      if (st == PGRES_PIPELINE_SYNC) {
        PQclear(r);
        complete(c);
        return;
      }
      if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        c->affected += strtoll(PQcmdTuples(r), NULL, 10);
        PQclear(r);
        continue;
      }
      if (st == PGRES_PIPELINE_ABORTED) {
        PQclear(r);
        continue;
      }
    }
    keep_result(c, r);
  }
}

static void set_poll(pgconn *c) {
  int ev = 0;
  if (c->state == C_READY) {
    if (c->req != R_NONE && !c->done) ev = UV_READABLE;
    if (c->listening) ev = UV_READABLE;
    if (c->flushing) ev |= UV_WRITABLE;
  }
  loom_fdwait_want(&c->w, ev);
}

static void connect_step(pgconn *c);

static void on_ready(loom_fdwait *w, int status, int events) {
  pgconn *c = (pgconn *)w;
  if (c->state == C_CONNECTING) {
    connect_step(c);
    return;
  }
  if (status < 0) {
    if (c->fail == NULL && (c->fail = malloc(64)) != NULL)
      snprintf(c->fail, 64, "poll: %s", uv_strerror(status));
    broken(c);
    return;
  }
  if ((events & UV_WRITABLE) && c->flushing) {
    int r = PQflush(c->pg);
    if (r < 0) {
      broken(c);
      return;
    }
    c->flushing = r == 1;
  }
  if (events & UV_READABLE) {
    if (!PQconsumeInput(c->pg)) {
      broken(c);
      return;
    }
    /* libpq flushes what it could not send while it reads */
    if (c->flushing) c->flushing = PQflush(c->pg) == 1;
    take_notifies(c);
    collect(c);
    if (c->doomed && c->req == R_NONE) {
      broken(c);
      return;
    }
  }
  /* a copy's data went out, or more came in: its task goes on */
  if (c->req == R_COPY_IO && !c->done &&
      ((c->copy == COPY_IN && !c->flushing) || (c->copy == COPY_OUT && (events & UV_READABLE))))
    complete(c);
  if (c->state == C_READY) set_poll(c);
}

/* Stops the backend's current statement: PQcancel blocks, so it runs in
   the thread pool, with its own copy of the cancel key. */
typedef struct cancel_req {
  uv_work_t work;
  PGcancel *pc;
  pgconn *c; /* NULL once the connection is closed */
} cancel_req;

static void cancel_work(uv_work_t *w) {
  cancel_req *cr = loom_container(w, cancel_req, work);
  char buf[256];
  PQcancel(cr->pc, buf, sizeof buf);
}

static void cancel_done(uv_work_t *w, int status) {
  cancel_req *cr = loom_container(w, cancel_req, work);
  pgconn *c = cr->c;
  (void)status;
  PQfreeCancel(cr->pc);
  free(cr);
  if (c == NULL) return;
  c->cancel = NULL;
  if (c->held) {
    c->held = 0;
    pass_turn(c);
  }
}

static void send_cancel(pgconn *c) {
  cancel_req *cr;
  if (c->cancel) return; /* one in flight stops the statement as well */
  if ((cr = malloc(sizeof *cr)) == NULL) return;
  cr->c = c;
  if ((cr->pc = PQgetCancel(c->pg)) == NULL ||
      uv_queue_work(&c->w.h.lp->uv, &cr->work, cancel_work, cancel_done) < 0) {
    if (cr->pc) PQfreeCancel(cr->pc);
    free(cr);
    return;
  }
  c->cancel = cr;
}

/* The task of a COPY in progress gave up on it (cancelled, raised): the
   engine ends it (COPY FROM with an error, so nothing of it is kept; COPY
   TO cancelled and its rest dropped) and passes the turn on after. */
static void copy_abandon(pgconn *c, const char *why) {
  int was = c->copy;
  c->copy = COPY_NONE;
  c->owner = NULL;
  c->req = R_EXEC;
  c->done = 0;
  PQclear(c->res);
  c->res = NULL;
  if (was == COPY_IN) {
    if (PQputCopyEnd(c->pg, why) < 0) {
      broken(c);
      return;
    }
    c->flushing = PQflush(c->pg) == 1;
  } else {
    send_cancel(c);
  }
  collect(c);
  set_poll(c);
}

/* ------------------------------------------------------ the object */

static void shut(pgconn *c) {
  loom_loop *lp = c->w.h.lp;
  PGnotify *n;
  if (c->state == C_CLOSED) return;
  c->state = C_CLOSED;
  if (c->cancel) c->cancel->c = NULL;
  c->cancel = NULL;
  loom_fdwait_close(&c->w); /* before libpq closes the socket */
  if (c->owner && c->owner->state == LOOM_WAITING) loom_wake(lp, c->owner, 0);
  wake_all(lp, &c->turns);
  wake_all(lp, &c->listeners);
  PQclear(c->res);
  c->res = NULL;
  while ((n = c->nhead) != NULL) {
    c->nhead = n->next;
    PQfreemem(n);
  }
  c->ntail = NULL;
  PQfinish(c->pg);
  c->pg = NULL;
  free(c->fail);
  c->fail = NULL;
}

static void teardown(loom_handle *h) {
  shut((pgconn *)h);
}

static pgconn *checkconn(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

/* A server error's values: nil, message, SQLSTATE. */
static int fail_result(lua_State *L, const PGresult *r) {
  const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
  lua_pushnil(L);
  if (m == NULL) m = PQresultErrorMessage(r);
  if (detail)
    lua_pushfstring(L, "%s (%s)", m, detail);
  else
    lua_pushstring(L, m);
  lua_pushstring(L, code ? code : "XX000");
  return 3;
}

/* The connection's own failure: nil, message, "08006" (or "ECLOSED"). */
static int fail_conn(lua_State *L, pgconn *c) {
  if (c->state == C_CLOSED) return loom_fail_closed(L);
  lua_pushnil(L);
  lua_pushstring(L, c->fail ? c->fail : "connection to the server lost");
  lua_pushliteral(L, "08006");
  return 3;
}

/* ------------------------------------------------------------ connect */

/* libpq reports connection failures as text; with verbose errors the
   server's SQLSTATE is in it ("FATAL:  28P01: password ..."). Pushes the
   message without the severity, code and location, and the code. */
static void push_connect_error(lua_State *L, const char *m) {
  const char *f = strstr(m, "FATAL:  "), *end;
  char code[6] = "08001";
  if (f) {
    const char *p = f + 8;
    if (strlen(p) > 7 && p[5] == ':' && p[6] == ' ') {
      memcpy(code, p, 5);
      p += 7;
    }
    end = strchr(p, '\n');
    lua_pushlstring(L, p, end ? (size_t)(end - p) : strlen(p));
  } else {
    end = m + strlen(m);
    while (end > m && (end[-1] == '\n' || end[-1] == ' ')) end--;
    lua_pushlstring(L, m, (size_t)(end - m));
  }
  lua_pushstring(L, code);
}

static void connect_step(pgconn *c) {
  PostgresPollingStatusType st;
  loom_fdwait_want(&c->w, 0);
  st = PQconnectPoll(c->pg);
  if (st == PGRES_POLLING_OK || st == PGRES_POLLING_FAILED) {
    c->state = st == PGRES_POLLING_OK ? C_READY : C_BROKEN;
    if (c->owner) loom_wake(c->w.h.lp, c->owner, 0);
    return;
  }
  if (PQsocket(c->pg) != c->w.fd && PQsocket(c->pg) >= 0) {
    /* the next address: the poll follows libpq to its new socket */
    if (loom_fdwait_move(&c->w, PQsocket(c->pg)) < 0) {
      c->state = C_BROKEN;
      if (c->owner) loom_wake(c->w.h.lp, c->owner, 0);
      return;
    }
  }
  loom_fdwait_want(&c->w, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
}

/* Notices (NOTICE, WARNING) are not errors and are not printed. What comes
   this way while the connection is idle includes the server's farewell
   (FATAL: "terminating connection due to administrator command"): the
   connection is doomed, though its socket may not have said so yet. */
static void receiver(void *arg, const PGresult *r) {
  pgconn *c = arg;
  const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0)) {
    c->doomed = 1;
    if (c->fail == NULL && m && (c->fail = malloc(strlen(m) + 1)) != NULL) strcpy(c->fail, m);
  }
}

static int connect_k(lua_State *L, int status, lua_KContext ctx);

static void connect_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  pgconn *c = t->waitobj;
  (void)L;
  (void)lp;
  c->owner = NULL;
  shut(c);
}

/* loom.core._pg_hosts(conninfo): the conninfo's host and hostaddr settings
   (nil when absent), or raises for a conninfo libpq cannot parse. */
static int l_hosts(lua_State *L) {
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse(luaL_checkstring(L, 1), &err), *o;
  if (opts == NULL) {
    lua_pushstring(L, err ? err : "out of memory");
    PQfreemem(err);
    return lua_error(L);
  }
  lua_settop(L, 1);
  lua_pushnil(L);
  lua_pushnil(L);
  for (o = opts; o->keyword; o++) {
    if (o->val == NULL) continue;
    if (strcmp(o->keyword, "host") == 0) {
      lua_pushstring(L, o->val);
      lua_replace(L, 2);
    } else if (strcmp(o->keyword, "hostaddr") == 0) {
      lua_pushstring(L, o->val);
      lua_replace(L, 3);
    }
  }
  PQconninfoFree(opts);
  return 2;
}

/* Starts connecting with conninfo, its host and hostaddr replaced by the
   strings at host_idx and addr_idx when those are not nil (loom resolved
   the names: libpq would have resolved them blocking the loop). */
static PGconn *start(lua_State *L, const char *info, int host_idx, int addr_idx) {
  PQconninfoOption *opts, *o;
  const char *kw[64], *val[64];
  int n = 0;
  PGconn *pg;
  if (lua_isnil(L, addr_idx)) return PQconnectStart(info);
  if ((opts = PQconninfoParse(info, NULL)) == NULL) return PQconnectStart(info);
  for (o = opts; o->keyword && n < 60; o++) {
    if (strcmp(o->keyword, "host") == 0 || strcmp(o->keyword, "hostaddr") == 0 || o->val == NULL) continue;
    kw[n] = o->keyword;
    val[n++] = o->val;
  }
  kw[n] = "host";
  val[n++] = lua_tostring(L, host_idx);
  kw[n] = "hostaddr";
  val[n++] = lua_tostring(L, addr_idx);
  kw[n] = NULL;
  val[n] = NULL;
  pg = PQconnectStartParams(kw, val, 0);
  PQconninfoFree(opts);
  return pg;
}

/* loom.core._pg_connect(conninfo, timeout [, host, hostaddr]): a
   connection, or nil, msg, code. Blocks. */
static int l_connect(lua_State *L) {
  loom_state *S = loom_getstate(L);
  const char *info = luaL_checkstring(L, 1);
  double timeout = luaL_optnumber(L, 2, 0);
  loom_task *t = loom_checkrunning(L, S, "loom.pg.connect");
  pgconn *c;
  int rc;
  lua_settop(L, 4);
  c = lua_newuserdatauv(L, sizeof *c, 1);
  memset(c, 0, sizeof *c);
  c->state = C_CLOSED;
  c->w.fd = -1;
  loom_list_init(&c->turns);
  loom_list_init(&c->listeners);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  if ((c->pg = start(L, info, 3, 4)) == NULL) return luaL_error(L, "loom.pg.connect: out of memory");
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    lua_pushnil(L);
    push_connect_error(L, PQerrorMessage(c->pg));
    PQfinish(c->pg);
    c->pg = NULL;
    return 3;
  }
  PQsetErrorVerbosity(c->pg, PQERRORS_VERBOSE);
  PQsetNoticeReceiver(c->pg, receiver, c);
  if ((rc = loom_fdwait_open(L, &c->w, S->loop, PQsocket(c->pg), 5, teardown, on_ready)) < 0) {
    PQfinish(c->pg);
    c->pg = NULL;
    return loom_fail(L, rc, "loom.pg.connect");
  }
  c->state = C_CONNECTING;
  c->owner = t;
  loom_fdwait_want(&c->w, UV_WRITABLE); /* as libpq asks: first wait until writable */
  loom_suspend(L, t);
  t->undo = connect_undo;
  t->waitobj = c;
  if (timeout > 0) loom_timer_start(S->loop, &t->timer, loom_time(S->loop) + (uint64_t)(timeout * 1e9));
  return loom_yield(L, t, connect_k);
}

static int connect_k(lua_State *L, int status, lua_KContext ctx) {
  pgconn *c = lua_touserdata(L, 5);
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, connect_k);
  (void)status;
  c->owner = NULL;
  if (t->timed_out || c->state != C_READY) {
    if (t->timed_out) {
      shut(c);
      return loom_fail_timeout(L);
    }
    lua_pushnil(L);
    push_connect_error(L, c->pg ? PQerrorMessage(c->pg) : "connection closed");
    shut(c);
    return 3;
  }
  if (PQsetnonblocking(c->pg, 1) != 0) {
    lua_pushnil(L);
    push_connect_error(L, PQerrorMessage(c->pg));
    shut(c);
    return 3;
  }
  PQsetErrorVerbosity(c->pg, PQERRORS_DEFAULT);
  lua_settop(L, 5);
  return 1;
}

/* --------------------------------------------------------------- turns */

static void turn_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  pgconn *c = t->waitobj;
  (void)L;
  (void)lp;
  if (t->state == LOOM_READY && c->state != C_CLOSED) pass_turn(c); /* it had been given the turn */
}

/* A request in flight whose task is cancelled: the server is asked to stop
   it, and the engine drains it. One already complete is dropped. */
static void request_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  pgconn *c = t->waitobj;
  (void)L;
  (void)lp;
  if (c->state == C_CLOSED) return;
  if (c->copy) {
    copy_abandon(c, "COPY cancelled");
    return;
  }
  c->owner = NULL;
  if (c->done) {
    PQclear(c->res);
    c->res = NULL;
    pass_turn(c);
  } else if (c->state == C_READY) {
    send_cancel(c);
  }
}

/* The calls that send a request, by what they send; each finds its
   arguments on the calling task's stack. */
enum { OP_QUERY, OP_EXEC, OP_BATCH, OP_COPY };
static int query_send(lua_State *L, pgconn *c, loom_task *t);
static int exec_send(lua_State *L, pgconn *c, loom_task *t);
static int batch_send(lua_State *L, pgconn *c, loom_task *t);
static int copy_send(lua_State *L, pgconn *c, loom_task *t);
static int (*const senders[])(lua_State *, pgconn *, loom_task *) = {query_send, exec_send, batch_send,
                                                                     copy_send};

static int turn_k(lua_State *L, int status, lua_KContext ctx);

/* Sends request op at once if the connection is free, else after the tasks
   before it in line (op waits on top of the stack meanwhile). */
static int with_turn(lua_State *L, pgconn *c, loom_task *t, int op) {
  if (!c->busy) {
    c->busy = 1;
    return senders[op](L, c, t);
  }
  lua_pushinteger(L, op);
  loom_suspend(L, t);
  loom_list_append(&c->turns, &t->wait);
  t->undo = turn_undo;
  t->waitobj = c;
  return loom_yield(L, t, turn_k);
}

/* The task has the turn, or the connection closed or broke meanwhile. */
static int turn_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, turn_k);
  pgconn *c = lua_touserdata(L, 1);
  int op = (int)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 1);
  if (c->state != C_READY) {
    if (c->state != C_CLOSED) pass_turn(c);
    return fail_conn(L, c);
  }
  return senders[op](L, c, t);
}

/* The request just sent goes out: flush what the socket takes, then the
   engine has it. */
static int wait_request(lua_State *L, pgconn *c, loom_task *t, int req, lua_KFunction k) {
  int r = PQflush(c->pg);
  if (r < 0) {
    broken(c);
    pass_turn(c);
    return fail_conn(L, c);
  }
  c->flushing = r == 1;
  c->req = req;
  c->done = 0;
  c->owner = t;
  c->affected = 0;
  set_poll(c);
  loom_suspend(L, t);
  t->undo = request_undo;
  t->waitobj = c;
  return loom_yield(L, t, k);
}

/* The request could not even be queued by libpq. */
static int send_failed(lua_State *L, pgconn *c) {
  const char *m = PQerrorMessage(c->pg);
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    broken(c);
    pass_turn(c);
    return fail_conn(L, c);
  }
  lua_pushnil(L);
  lua_pushstring(L, m);
  lua_pushliteral(L, "08P01");
  pass_turn(c);
  return 3;
}

/* The result the engine kept, boxed so that a cancellation while it is
   converted still frees it; the turn passes on. */
static PGresult *take_result(lua_State *L, pgconn *c) {
  PGresult *r = c->res;
  pgresult *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->r = r;
  c->res = NULL;
  luaL_setmetatable(L, LOOM_PGRESULT);
  return r;
}

static int result_gc(lua_State *L) {
  pgresult *box = lua_touserdata(L, 1);
  PQclear(box->r);
  box->r = NULL;
  return 0;
}

/* ------------------------------------------------------------ values */

/* How a column becomes a Lua value. */
enum { V_TEXT, V_INT, V_FLOAT, V_BOOL, V_BYTEA };

static int kind_of(Oid type) {
  switch (type) {
    case 20: case 21: case 23: case 26: return V_INT; /* int8 int2 int4 oid */
    case 700: case 701: return V_FLOAT;
    case 16: return V_BOOL;
    case 17: return V_BYTEA;
    default: return V_TEXT;
  }
}

/* Binary form is asked for only when every column is of a type converted
   here (or text, whose binary form is the text). */
static int binary_ok(const PGresult *r) {
  int j, n = PQnfields(r);
  for (j = 0; j < n; j++) {
    Oid ty = PQftype(r, j);
    if (kind_of(ty) == V_TEXT && ty != 25 && ty != 1043 && ty != 19 && ty != 1042) return 0;
  }
  return 1;
}

static uint64_t be(const unsigned char *p, int n) {
  uint64_t v = 0;
  int i;
  for (i = 0; i < n; i++) v = v << 8 | p[i];
  return v;
}

static void push_binary(lua_State *L, int kind, const char *s, int len) {
  const unsigned char *p = (const unsigned char *)s;
  switch (kind) {
    case V_INT:
      if (len == 2) lua_pushinteger(L, (int16_t)be(p, 2));
      else if (len == 4) lua_pushinteger(L, (int32_t)be(p, 4)); /* oid: see below */
      else lua_pushinteger(L, (lua_Integer)be(p, 8));
      return;
    case V_FLOAT:
      if (len == 4) {
        uint32_t u = (uint32_t)be(p, 4);
        float f;
        memcpy(&f, &u, 4);
        lua_pushnumber(L, f);
      } else {
        uint64_t u = be(p, 8);
        double d;
        memcpy(&d, &u, 8);
        lua_pushnumber(L, d);
      }
      return;
    case V_BOOL: lua_pushboolean(L, len > 0 && p[0]); return;
    default: lua_pushlstring(L, s, (size_t)len); return;
  }
}

static void push_text(lua_State *L, int kind, const char *s, int len) {
  switch (kind) {
    case V_INT: lua_pushinteger(L, (lua_Integer)strtoll(s, NULL, 10)); return;
    case V_FLOAT:
      if (s[0] == 'N') lua_pushnumber(L, NAN);
      else if (s[0] == 'I') lua_pushnumber(L, HUGE_VAL);
      else if (s[0] == '-' && s[1] == 'I') lua_pushnumber(L, -HUGE_VAL);
      else lua_pushnumber(L, strtod(s, NULL));
      return;
    case V_BOOL: lua_pushboolean(L, s[0] == 't'); return;
    case V_BYTEA: {
      size_t n;
      unsigned char *b = PQunescapeBytea((const unsigned char *)s, &n);
      if (b == NULL) luaL_error(L, "loom.pg: out of memory");
      lua_pushlstring(L, (const char *)b, n);
      PQfreemem(b);
      return;
    }
    default: lua_pushlstring(L, s, (size_t)len); return;
  }
}

/* Rows are made ROWS_STEP at a time; between steps, a conversion that has
   held the loop for a whole slice lets the other tasks run. */
#define ROWS_STEP 4096

/* Stack from `base`: box, rows, then one name per column. Converts rows
   [from, to). */
static void fill_rows(lua_State *L, int base, const PGresult *r, int from, int to) {
  int nf = PQnfields(r), bin = PQbinaryTuples(r), i, j;
  int kinds[64];
  for (j = 0; j < nf && j < 64; j++) kinds[j] = kind_of(PQftype(r, j));
  for (i = from; i < to; i++) {
    lua_createtable(L, 0, nf);
    for (j = 0; j < nf; j++) {
      int kind = j < 64 ? kinds[j] : kind_of(PQftype(r, j));
      if (PQgetisnull(r, i, j)) continue;
      lua_pushvalue(L, base + 2 + j);
      if (bin) {
        if (kind == V_INT && PQftype(r, j) == 26)
          lua_pushinteger(L, (lua_Integer)be((const unsigned char *)PQgetvalue(r, i, j), 4));
        else
          push_binary(L, kind, PQgetvalue(r, i, j), PQgetlength(r, i, j));
      } else {
        push_text(L, kind, PQgetvalue(r, i, j), PQgetlength(r, i, j));
      }
      lua_rawset(L, -3);
    }
    lua_rawseti(L, base + 1, i + 1);
  }
}

static int rows_k(lua_State *L, int status, lua_KContext ctx);

/* Continues the conversion from row `from` (the stack from base: box, rows,
   names); returns the rows. */
static int convert_from(lua_State *L, loom_task *t, int base, int from) {
  pgresult *box = lua_touserdata(L, base);
  int n = PQntuples(box->r);
  while (from < n) {
    int to = n - from > ROWS_STEP ? from + ROWS_STEP : n;
    fill_rows(L, base, box->r, from, to);
    from = to;
    if (from < n && loom_step_expired(loom_getstate(L)->loop)) {
      lua_pushinteger(L, base);
      lua_pushinteger(L, from);
      loom_suspend(L, t);
      t->keep_wake = 1;
      loom_wake(loom_getstate(L)->loop, t, 0);
      return loom_yield(L, t, rows_k);
    }
  }
  lua_pushvalue(L, base + 1);
  return 1;
}

static int rows_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, rows_k);
  int base = (int)lua_tointeger(L, -2), from = (int)lua_tointeger(L, -1);
  (void)status;
  lua_pop(L, 2);
  return convert_from(L, t, base, from);
}

/* Pushes the rows of a result, with rows.columns and rows.affected. */
static int push_rows(lua_State *L, loom_task *t, PGresult *r) {
  int nf = PQnfields(r), n = PQntuples(r), base = lua_gettop(L), j;
  const char *aff = PQcmdTuples(r);
  luaL_checkstack(L, nf + 8, "loom.pg: too many columns");
  lua_createtable(L, n, 2);
  lua_createtable(L, nf, 0);
  for (j = 0; j < nf; j++) {
    lua_pushstring(L, PQfname(r, j));
    lua_rawseti(L, -2, j + 1);
  }
  lua_setfield(L, -2, "columns");
  lua_pushinteger(L, aff[0] ? (lua_Integer)strtoll(aff, NULL, 10) : 0);
  lua_setfield(L, -2, "affected");
  for (j = 0; j < nf; j++) lua_pushstring(L, PQfname(r, j));
  return convert_from(L, t, base, 0);
}

/* ------------------------------------------------------------- query */

/* Parameters as libpq wants them, with room for the text forms of numbers:
   made once per call (once per batch), filled per statement. */
#define NUM_LEN 32
typedef struct params {
  int n;
  const char **values;
  int *lengths, *formats;
  char *scratch; /* NUM_LEN bytes per parameter */
} params;

/* Raises for a value that cannot be a parameter: checked before the call
   takes its turn, so a raise never leaves a request half sent. */
static void check_params(lua_State *L, int first, int last, const char *fname) {
  int i;
  if (last - first + 1 > MAX_PARAMS)
    luaL_error(L, "%s: at most %d parameters, got %d", fname, MAX_PARAMS, last - first + 1);
  for (i = first; i <= last; i++) {
    int ty = lua_type(L, i);
    if (ty != LUA_TNIL && ty != LUA_TBOOLEAN && ty != LUA_TNUMBER && ty != LUA_TSTRING)
      luaL_error(L, "%s: parameter $%d: cannot send a %s (nil, booleans, numbers and strings can be)", fname,
                 i - first + 1, luaL_typename(L, i));
  }
}

/* Room for up to n parameters, as a userdata pushed on the stack. */
static void new_params(lua_State *L, int n, params *p) {
  size_t each = sizeof(char *) + 2 * sizeof(int) + NUM_LEN;
  p->values = lua_newuserdatauv(L, (size_t)n * each + 1, 0);
  p->lengths = (int *)(p->values + n);
  p->formats = p->lengths + n;
  p->scratch = (char *)(p->formats + n);
}

/* Fills p from stack slots first..last (checked by check_params); strings
   are used in place, so the slots must stay until libpq has copied them. */
static void get_params(lua_State *L, int first, int last, params *p) {
  int i, n = last - first + 1;
  p->n = n < 0 ? 0 : n;
  for (i = 0; i < p->n; i++) {
    int idx = first + i;
    size_t len = 0;
    char *num = p->scratch + (size_t)i * NUM_LEN;
    p->formats[i] = 0;
    p->lengths[i] = 0;
    switch (lua_type(L, idx)) {
      case LUA_TBOOLEAN: p->values[i] = lua_toboolean(L, idx) ? "t" : "f"; break;
      case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
          snprintf(num, NUM_LEN, "%lld", (long long)lua_tointeger(L, idx));
        } else {
          double d = lua_tonumber(L, idx);
          if (d != d) strcpy(num, "NaN");
          else if (d == HUGE_VAL) strcpy(num, "Infinity");
          else if (d == -HUGE_VAL) strcpy(num, "-Infinity");
          else snprintf(num, NUM_LEN, "%.17g", d);
        }
        p->values[i] = num;
        break;
      case LUA_TSTRING:
        p->values[i] = lua_tolstring(L, idx, &len);
        if (memchr(p->values[i], 0, len)) p->formats[i] = 1; /* binary: the bytes as they are */
        p->lengths[i] = (int)len;
        break;
      default: p->values[i] = NULL; break; /* nil: NULL */
    }
  }
}

static int query_k(lua_State *L, int status, lua_KContext ctx);

/* Stack of a query: conn, sql, params..., then (after the turn) the cache
   entry code, the params buffer and the text forms. */
static int query_send(lua_State *L, pgconn *c, loom_task *t) {
  int top = lua_gettop(L), code, ok, req = R_ONE;
  params p;
  char name[24];
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  code = (int)lua_tointeger(L, -1);
  lua_pop(L, 2);
  new_params(L, top - 2, &p);
  get_params(L, 3, top, &p);
  if (code > 0) {
    snprintf(name, sizeof name, "loom_%d", code / 2);
    ok = PQsendQueryPrepared(c->pg, name, p.n, p.values, p.lengths, p.formats, code & 1);
  } else if (code < 0 && c->nprepared < MAX_PREPARED) {
    /* the second use: prepare, then execute in query_k */
    snprintf(name, sizeof name, "loom_%d", ++c->nprepared);
    ok = PQsendPrepare(c->pg, name, lua_tostring(L, 2), p.n, NULL);
    req = R_PREPARE;
  } else {
    ok = PQsendQueryParams(c->pg, lua_tostring(L, 2), p.n, NULL, p.values, p.lengths, p.formats, 0);
  }
  lua_settop(L, top);
  if (!ok) return send_failed(L, c);
  return wait_request(L, c, t, req, query_k);
}

/***
A PostgreSQL connection, from `loom.pg.connect` or a pool.
@type Conn
*/

/***
Runs one statement with parameters `$1 .. $n`. Blocks; other tasks using
the connection wait their turn.
@function Conn:query
@string sql one statement
@param ... its parameters: nil (NULL), booleans, integers, floats, strings
(any bytes)
@return rows (a list of tables keyed by column name, with `columns` and
`affected`), or nil, msg, sqlstate
@usage local rows = assert(conn:query("SELECT name FROM users WHERE id = $1", 7))
*/
static int c_query(lua_State *L) {
  loom_state *S = loom_getstate(L);
  pgconn *c = checkconn(L);
  loom_task *t;
  luaL_checkstring(L, 2);
  check_params(L, 3, lua_gettop(L), "query");
  t = loom_checkrunning(L, S, "query");
  if (c->state != C_READY) return fail_conn(L, c);
  return with_turn(L, c, t, OP_QUERY);
}

/* Notes in the statement cache what the first run taught: whether results
   can come in binary form. */
static void cache_set(lua_State *L, int code) {
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_pushinteger(L, code);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

static int query_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, query_k);
  pgconn *c = lua_touserdata(L, 1);
  int req = c->req, code;
  PGresult *r;
  (void)status;
  if (c->state == C_CLOSED) return fail_conn(L, c);
  if (c->res == NULL) {
    pass_turn(c);
    return fail_conn(L, c);
  }
  r = take_result(L, c);
  if (is_error(r)) {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    /* a prepared statement that the schema changed under is prepared anew next time */
    if (state && (strcmp(state, "0A000") == 0 || strcmp(state, "26000") == 0)) {
      lua_getiuservalue(L, 1, 1);
      lua_pushvalue(L, 2);
      lua_pushnil(L);
      lua_rawset(L, -3);
      lua_pop(L, 1);
    }
    pass_turn(c);
    return fail_result(L, r);
  }
  if (req == R_PREPARE) {
    params p;
    char name[24];
    int top = lua_gettop(L) - 1, ok;
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    code = c->nprepared * 2 + (lua_tointeger(L, -1) == ST_SEEN_BINARY);
    lua_pop(L, 2);
    cache_set(L, code);
    lua_settop(L, top);
    c->res = NULL;
    c->req = R_NONE;
    new_params(L, top - 2, &p);
    get_params(L, 3, top, &p);
    snprintf(name, sizeof name, "loom_%d", code / 2);
    ok = PQsendQueryPrepared(c->pg, name, p.n, p.values, p.lengths, p.formats, code & 1);
    lua_settop(L, top);
    if (!ok) return send_failed(L, c);
    return wait_request(L, c, t, R_ONE, query_k);
  }
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  code = lua_isnil(L, -1);
  lua_pop(L, 2);
  if (code) cache_set(L, binary_ok(r) ? ST_SEEN_BINARY : ST_SEEN_TEXT);
  pass_turn(c);
  return push_rows(L, t, r);
}

/* ---------------------------------------------------------------- exec */

static int exec_k(lua_State *L, int status, lua_KContext ctx);

static int exec_send(lua_State *L, pgconn *c, loom_task *t) {
  if (!PQsendQuery(c->pg, lua_tostring(L, 2))) return send_failed(L, c);
  return wait_request(L, c, t, R_EXEC, exec_k);
}

/***
Runs one or more statements without parameters (the simple protocol).
Blocks.
@function Conn:exec
@string sql statements separated by `;`
@return true, or nil, msg, sqlstate (of the first that failed; the others
did not run)
@usage assert(conn:exec("CREATE TABLE t (id int); INSERT INTO t VALUES (1)"))
*/
static int c_exec(lua_State *L) {
  loom_state *S = loom_getstate(L);
  pgconn *c = checkconn(L);
  loom_task *t;
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  t = loom_checkrunning(L, S, "exec");
  if (c->state != C_READY) return fail_conn(L, c);
  return with_turn(L, c, t, OP_EXEC);
}

static int exec_k(lua_State *L, int status, lua_KContext ctx) {
  pgconn *c = lua_touserdata(L, 1);
  PGresult *r;
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, exec_k);
  if (c->state == C_CLOSED) return fail_conn(L, c);
  if (c->res == NULL) { /* an empty string has no result but an empty one */
    int bad = c->state != C_READY;
    pass_turn(c);
    if (bad) return fail_conn(L, c);
    lua_pushboolean(L, 1);
    return 1;
  }
  r = take_result(L, c);
  pass_turn(c);
  if (is_error(r))
    return fail_result(L, r);
  lua_pushboolean(L, 1);
  return 1;
}

/* --------------------------------------------------------------- batch */

static int batch_k(lua_State *L, int status, lua_KContext ctx);

/* Every entry is checked before the call takes its turn. */
static void batch_check(lua_State *L) {
  lua_Integer i, n = luaL_len(L, 3);
  for (i = 1; i <= n; i++) {
    int len, j;
    if (lua_geti(L, 3, i) != LUA_TTABLE)
      luaL_error(L, "batch: entry %d is a %s, not a list of parameters", (int)i, luaL_typename(L, -1));
    len = (int)luaL_len(L, -1);
    luaL_checkstack(L, len + 4, "batch: too many parameters");
    for (j = 1; j <= len; j++) lua_geti(L, 4, j);
    check_params(L, 5, 4 + len, "batch");
    lua_settop(L, 3);
  }
}

static int batch_send(lua_State *L, pgconn *c, loom_task *t) {
  lua_Integer i, n = luaL_len(L, 3);
  int top = lua_gettop(L), code, ok = 1, most = 0;
  char name[24];
  params p;
  for (i = 1; i <= n; i++) {
    lua_geti(L, 3, i);
    if ((int)luaL_len(L, -1) > most) most = (int)luaL_len(L, -1);
    lua_pop(L, 1);
  }
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  code = (int)lua_tointeger(L, -1);
  lua_settop(L, top);
  if (PQenterPipelineMode(c->pg) == 0) return send_failed(L, c);
  if (code <= 0) {
    snprintf(name, sizeof name, "loom_%d", ++c->nprepared);
    ok = PQsendPrepare(c->pg, name, lua_tostring(L, 2), 0, NULL);
  } else {
    snprintf(name, sizeof name, "loom_%d", code / 2);
  }
  new_params(L, most, &p);
  for (i = 1; ok && i <= n; i++) {
    int before = lua_gettop(L), len;
    lua_geti(L, 3, i);
    len = (int)luaL_len(L, -1);
    luaL_checkstack(L, len + 4, "batch: too many parameters");
    for (int j = 1; j <= len; j++) lua_geti(L, before + 1, j);
    get_params(L, before + 2, before + 1 + len, &p);
    ok = PQsendQueryPrepared(c->pg, name, p.n, p.values, p.lengths, p.formats, 0);
    lua_settop(L, before);
    /* let the socket take what is queued, so libpq's buffer stays small */
    if ((i & 255) == 0 && PQflush(c->pg) < 0) ok = 0;
  }
  if (ok) ok = PQpipelineSync(c->pg);
  if (!ok) {
    PQexitPipelineMode(c->pg); /* fails when something went out; the connection is broken then */
    return send_failed(L, c);
  }
  if (code <= 0) code = c->nprepared * 2; /* noted as prepared once the batch succeeded */
  lua_settop(L, top);
  lua_pushinteger(L, code);
  return wait_request(L, c, t, R_BATCH, batch_k);
}

/***
Runs one statement once per parameter list, all in one round trip (libpq's
pipeline mode) and as one transaction: either every run succeeds or none
has an effect. Blocks.
@function Conn:batch
@string sql one statement
@tparam table list a list of parameter lists: `{{1, "a"}, {2, "b"}}`
@return the number of rows affected in all, or nil, msg, sqlstate
@usage assert(conn:batch("INSERT INTO t VALUES ($1, $2)", rows))
*/
static int c_batch(lua_State *L) {
  loom_state *S = loom_getstate(L);
  pgconn *c = checkconn(L);
  loom_task *t;
  luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  batch_check(L);
  t = loom_checkrunning(L, S, "batch");
  if (c->state != C_READY) return fail_conn(L, c);
  return with_turn(L, c, t, OP_BATCH);
}

static int batch_k(lua_State *L, int status, lua_KContext ctx) {
  pgconn *c = lua_touserdata(L, 1);
  long long n = c->affected;
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, batch_k);
  if (c->state == C_CLOSED) return fail_conn(L, c);
  if (c->res) {
    PGresult *r = take_result(L, c);
    pass_turn(c);
    if (is_error(r))
      return fail_result(L, r);
  } else {
    int bad = c->state != C_READY;
    pass_turn(c);
    if (bad) return fail_conn(L, c);
  }
  cache_set(L, (int)lua_tointeger(L, 4));
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* ---------------------------------------------------------------- copy */

/* COPY as the private calls under conn:copy_from and conn:copy_to
   (lua/loom/pg.lua): the copy holds the connection's turn from _copy_start
   to its end, and an abandoned one is ended by the engine (copy_abandon). */

static int copy_start_k(lua_State *L, int status, lua_KContext ctx);

static int copy_send(lua_State *L, pgconn *c, loom_task *t) {
  if (!PQsendQuery(c->pg, lua_tostring(L, 2))) return send_failed(L, c);
  return wait_request(L, c, t, R_COPY, copy_start_k);
}

/* conn:_copy_start(sql): "in" or "out" once the server is ready for the
   data (the copy then holds the turn), or nil, msg, code. Blocks. */
static int c_copy_start(lua_State *L) {
  loom_state *S = loom_getstate(L);
  pgconn *c = checkconn(L);
  loom_task *t;
  luaL_checkstring(L, 2);
  lua_settop(L, 2);
  t = loom_checkrunning(L, S, "copy");
  if (c->state != C_READY) return fail_conn(L, c);
  return with_turn(L, c, t, OP_COPY);
}

static int copy_start_k(lua_State *L, int status, lua_KContext ctx) {
  pgconn *c = lua_touserdata(L, 1);
  PGresult *r;
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, copy_start_k);
  if (c->state == C_CLOSED) return fail_conn(L, c);
  if (c->copy) { /* the turn stays with the copy */
    c->req = R_NONE;
    c->owner = NULL;
    c->done = 0;
    PQclear(c->res);
    c->res = NULL;
    lua_pushstring(L, c->copy == COPY_IN ? "in" : "out");
    return 1;
  }
  if (c->res == NULL) {
    int bad = c->state != C_READY;
    pass_turn(c);
    if (bad) return fail_conn(L, c);
    lua_pushnil(L);
    lua_pushliteral(L, "not a COPY statement");
    lua_pushliteral(L, "42601");
    return 3;
  }
  r = take_result(L, c);
  pass_turn(c);
  if (is_error(r)) return fail_result(L, r);
  lua_pushnil(L);
  lua_pushliteral(L, "not a COPY ... FROM STDIN or TO STDOUT statement");
  lua_pushliteral(L, "42601");
  return 3;
}

static void need_copy(lua_State *L, pgconn *c, int dir, const char *fname) {
  if (c->state == C_READY && c->copy != dir)
    luaL_error(L, "%s: no COPY %s in progress", fname, dir == COPY_IN ? "FROM STDIN" : "TO STDOUT");
}

/* Waits in a copy until the socket took the data (in) or more came (out). */
static int copy_wait(lua_State *L, pgconn *c, loom_task *t, lua_KFunction k) {
  c->req = R_COPY_IO;
  c->done = 0;
  c->owner = t;
  set_poll(c);
  loom_suspend(L, t);
  t->undo = request_undo;
  t->waitobj = c;
  return loom_yield(L, t, k);
}

static int copy_put_k(lua_State *L, int status, lua_KContext ctx);

/* conn:_copy_put(data): true once libpq has the data and the socket took
   it (a slow server blocks the task here, so memory stays bounded), or
   nil, msg, code. */
static int c_copy_put(lua_State *L) {
  loom_state *S = loom_getstate(L);
  pgconn *c = checkconn(L);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  loom_task *t = loom_checkrunning(L, S, "copy_from");
  int r;
  if (c->state != C_READY) return fail_conn(L, c);
  need_copy(L, c, COPY_IN, "copy_from");
  if (len > 0x3fffffff) return luaL_error(L, "copy_from: a chunk of at most 1 GiB, got %I bytes", (lua_Integer)len);
  lua_settop(L, 2);
  r = PQputCopyData(c->pg, data, (int)len);
  if (r == 0) { /* libpq's buffer is full: again once it drained */
    c->flushing = 1;
    return copy_wait(L, c, t, copy_put_k);
  }
  if (r > 0) r = PQflush(c->pg);
  if (r < 0) {
    broken(c);
    return fail_conn(L, c);
  }
  if (r == 1) {
    c->flushing = 1;
    lua_pushnil(L); /* sent: the continuation only waits for the flush */
    lua_replace(L, 2);
    return copy_wait(L, c, t, copy_put_k);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int copy_put_k(lua_State *L, int status, lua_KContext ctx) {
  pgconn *c = lua_touserdata(L, 1);
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, copy_put_k);
  c->req = R_NONE;
  c->owner = NULL;
  c->done = 0;
  if (c->state != C_READY) return fail_conn(L, c);
  if (!lua_isnil(L, 2)) return c_copy_put(L); /* not queued yet */
  lua_pushboolean(L, 1);
  return 1;
}

static int copy_end_k(lua_State *L, int status, lua_KContext ctx) {
  pgconn *c = lua_touserdata(L, 1);
  PGresult *r;
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, copy_end_k);
  if (c->state == C_CLOSED) return fail_conn(L, c);
  if (c->res == NULL) {
    pass_turn(c);
    return fail_conn(L, c);
  }
  r = take_result(L, c);
  pass_turn(c);
  if (is_error(r)) return fail_result(L, r);
  lua_pushinteger(L, (lua_Integer)strtoll(PQcmdTuples(r), NULL, 10));
  return 1;
}

/* conn:_copy_end(): ends a COPY FROM STDIN; the rows copied, or nil, msg,
   sqlstate (bad data is reported here). Blocks. */
static int c_copy_end(lua_State *L) {
  loom_state *S = loom_getstate(L);
  pgconn *c = checkconn(L);
  loom_task *t = loom_checkrunning(L, S, "copy_from");
  if (c->state != C_READY) return fail_conn(L, c);
  need_copy(L, c, COPY_IN, "copy_from");
  lua_settop(L, 1);
  if (PQputCopyEnd(c->pg, NULL) < 0) {
    broken(c);
    return fail_conn(L, c);
  }
  c->copy = COPY_NONE;
  return wait_request(L, c, t, R_EXEC, copy_end_k);
}

static int copy_get_k(lua_State *L, int status, lua_KContext ctx);

/* conn:_copy_get(): the next row of a COPY TO STDOUT; at its end nil and
   the rows copied; or nil, msg, code. Blocks. */
static int c_copy_get(lua_State *L) {
  loom_state *S = loom_getstate(L);
  pgconn *c = checkconn(L);
  loom_task *t = loom_checkrunning(L, S, "copy_to");
  char *buf;
  int n;
  PGresult *r;
  if (c->state != C_READY) return fail_conn(L, c);
  need_copy(L, c, COPY_OUT, "copy_to");
  lua_settop(L, 1);
  n = PQgetCopyData(c->pg, &buf, 1);
  if (n > 0) {
    lua_pushlstring(L, buf, (size_t)n);
    PQfreemem(buf);
    return 1;
  }
  if (n == 0) return copy_wait(L, c, t, copy_get_k);
  if (n == -2) {
    broken(c);
    return fail_conn(L, c);
  }
  /* the end: its result is usually buffered already */
  c->copy = COPY_NONE;
  while (!PQisBusy(c->pg) && (r = PQgetResult(c->pg)) != NULL) keep_result(c, r);
  if (PQisBusy(c->pg)) return wait_request(L, c, t, R_EXEC, copy_end_k);
  if (c->res == NULL) {
    pass_turn(c);
    return fail_conn(L, c);
  }
  r = take_result(L, c);
  pass_turn(c);
  if (is_error(r)) return fail_result(L, r);
  lua_pushnil(L);
  lua_pushinteger(L, (lua_Integer)strtoll(PQcmdTuples(r), NULL, 10));
  return 2;
}

static int copy_get_k(lua_State *L, int status, lua_KContext ctx) {
  pgconn *c = lua_touserdata(L, 1);
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, copy_get_k);
  c->req = R_NONE;
  c->owner = NULL;
  c->done = 0;
  if (c->state != C_READY) return fail_conn(L, c);
  return c_copy_get(L);
}

/* conn:_copy_abort(why): gives up the COPY in progress, if any. Never
   blocks: the engine ends it and passes the turn on. */
static int c_copy_abort(lua_State *L) {
  pgconn *c = checkconn(L);
  const char *why = luaL_optstring(L, 2, "COPY aborted");
  if (c->state == C_READY && c->copy) copy_abandon(c, why);
  return 0;
}

/* ------------------------------------------------------- notifications */

static int notify_k(lua_State *L, int status, lua_KContext ctx);

/* conn:_notification(): the next notification (channel, payload, pid), or
   nil, msg, code once the connection is closed or lost. Blocks. */
static int c_notification(lua_State *L) {
  loom_state *S = loom_getstate(L);
  pgconn *c = checkconn(L);
  loom_task *t = loom_checkrunning(L, S, "notifications");
  PGnotify *n = c->nhead;
  if (n != NULL) {
    if ((c->nhead = n->next) == NULL) c->ntail = NULL;
    lua_pushstring(L, n->relname);
    lua_pushstring(L, n->extra);
    lua_pushinteger(L, n->be_pid);
    PQfreemem(n);
    return 3;
  }
  if (c->state != C_READY) return fail_conn(L, c);
  lua_settop(L, 1);
  loom_suspend(L, t);
  loom_list_append(&c->listeners, &t->wait);
  return loom_yield(L, t, notify_k);
}

static int notify_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, notify_k);
  return c_notification(L);
}

/* conn:_listening(on): read while idle (LISTEN issued), or not. */
static int c_listening(lua_State *L) {
  pgconn *c = checkconn(L);
  c->listening = lua_toboolean(L, 2);
  if (c->state == C_READY) {
    /* notifications may already be in libpq's buffer */
    take_notifies(c);
    set_poll(c);
  }
  return 0;
}

/* ---------------------------------------------------------------- misc */

/***
Closes the connection; tasks waiting on it get nil, "closed". Idempotent;
also `<close>`. Never blocks.
@function Conn:close
*/
static int c_close(lua_State *L) {
  shut(checkconn(L));
  return 0;
}

static int c_gc(lua_State *L) {
  pgconn *c = lua_touserdata(L, 1);
  if (c->pg && c->state != C_CLOSED && c->w.h.uv == NULL) { /* never opened its poll */
    PQfinish(c->pg);
    c->pg = NULL;
  }
  return 0;
}

/***
What the connection can do now. Never blocks: an idle connection whose
server has gone (restarted, killed the backend) is found out here, so a
pool does not hand it out.
@function Conn:status
@return "ready", "busy" (a request in flight or tasks waiting), "broken"
or "closed"
*/
static int c_status(lua_State *L) {
  pgconn *c = checkconn(L);
  static const char *names[] = {"connecting", "ready", "broken", "closed"};
  if (c->state == C_READY && !c->busy && !c->listening) {
    /* idle, nothing should arrive: anything readable is the end of it */
    struct pollfd pfd;
    pfd.fd = c->w.fd;
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, 0) > 0) {
      if (PQconsumeInput(c->pg)) take_notifies(c); /* which parses what came */
      if (PQstatus(c->pg) == CONNECTION_BAD || c->doomed) broken(c);
    }
  }
  if (c->state == C_READY && c->busy) {
    lua_pushliteral(L, "busy");
    return 1;
  }
  lua_pushstring(L, names[c->state]);
  return 1;
}

/***
The server process serving this connection (as `pg_backend_pid()` and
`pg_stat_activity.pid` give it).
@function Conn:pid
@return an integer, or nil once closed
*/
static int c_pid(lua_State *L) {
  pgconn *c = checkconn(L);
  if (c->state == C_CLOSED) return 0;
  lua_pushinteger(L, PQbackendPID(c->pg));
  return 1;
}

/* conn:_txstatus(): "idle", "active", "intrans", "inerror" (a failed
   statement inside a transaction) or "unknown" (closed, broken). */
static int c_txstatus(lua_State *L) {
  pgconn *c = checkconn(L);
  static const char *names[] = {"idle", "active", "intrans", "inerror", "unknown"};
  PGTransactionStatusType s = c->state == C_CLOSED ? PQTRANS_UNKNOWN : PQtransactionStatus(c->pg);
  lua_pushstring(L, names[s <= PQTRANS_UNKNOWN ? s : PQTRANS_UNKNOWN]);
  return 1;
}

static int c_tostring(lua_State *L) {
  pgconn *c = checkconn(L);
  static const char *names[] = {"connecting", "ready", "broken", "closed"};
  lua_pushfstring(L, "loom.pg connection (%s)", names[c->state]);
  return 1;
}

void loom_open_pg(lua_State *L) {
  static const luaL_Reg methods[] = {{"query", c_query},       {"exec", c_exec},
                                     {"batch", c_batch},       {"close", c_close},
                                     {"status", c_status},     {"pid", c_pid},
                                     {"_notification", c_notification},
                                     {"_listening", c_listening}, {"_txstatus", c_txstatus},
                                     {"_copy_start", c_copy_start}, {"_copy_put", c_copy_put},
                                     {"_copy_end", c_copy_end},     {"_copy_get", c_copy_get},
                                     {"_copy_abort", c_copy_abort},
                                     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__close", c_close}, {"__gc", c_gc}, {"__tostring", c_tostring}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"_pg_connect", l_connect}, {"_pg_hosts", l_hosts}, {NULL, NULL}};
  int S = lua_absindex(L, -2);
  luaL_newmetatable(L, LOOM_PGRESULT);
  lua_pushcfunction(L, result_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  loom_newclass(L, S, LOOM_PGCONN, methods, meta);
  loom_classfuncs(L, S + 1, S, lua_gettop(L), funcs);
  lua_setfield(L, S + 1, "_PgConn");
}
