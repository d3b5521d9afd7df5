/*
 * thread.c: loom.thread.run, a Lua function run on one of loom's own worker
 * threads, each with a persistent Lua state (standard libraries opened,
 * package.path and cpath inherited). The pool is loom's, not libuv's: CPU
 * work never makes file operations queue behind it. Threads start on first
 * use (LOOM_THREADS of them, default the number of cores) and are stopped
 * and joined, each closing its own Lua state, when the loom module is
 * collected (at lua_close, before C modules are unloaded: a worker that
 * loaded a C module unloads it itself, on its own thread).
 *
 * The function travels as bytecode; arguments, results and error values are
 * copied through a small encoding (nil, booleans, numbers, strings, tables
 * of them). A job belongs to the pool while queued or running and to the
 * loop once done; a caller that gives up orphans its job (the pool frees it)
 * and a running one is interrupted by a Lua hook at its next instruction.
 */
/***
@module loom
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <lualib.h>
#include "loom.h"

typedef struct buf {
  char *p;
  size_t len, cap;
  const char *err; /* set when a value cannot be copied */
} buf;

/* ---------------------------------------------------------------- encoding */

enum { T_NIL, T_FALSE, T_TRUE, T_INT, T_NUM, T_STR, T_TABLE, T_END };

static void put(buf *b, const void *p, size_t n) {
  if (b->err) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    char *np;
    while (cap < b->len + n) cap *= 2;
    if ((np = realloc(b->p, cap)) == NULL) {
      b->err = "out of memory";
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void put_tag(buf *b, char t) {
  put(b, &t, 1);
}

/* Encodes the value at idx; `seen` (a table at seenidx) holds the tables on
   the current path, to refuse cycles. */
static void encode(lua_State *L, int idx, buf *b, int seenidx, int depth) {
  idx = lua_absindex(L, idx);
  switch (lua_type(L, idx)) {
    case LUA_TNIL: put_tag(b, T_NIL); break;
    case LUA_TBOOLEAN: put_tag(b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE); break;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        lua_Integer i = lua_tointeger(L, idx);
        put_tag(b, T_INT);
        put(b, &i, sizeof i);
      } else {
        lua_Number n = lua_tonumber(L, idx);
        put_tag(b, T_NUM);
        put(b, &n, sizeof n);
      }
      break;
    case LUA_TSTRING: {
      size_t len;
      const char *s = lua_tolstring(L, idx, &len);
      put_tag(b, T_STR);
      put(b, &len, sizeof len);
      put(b, s, len);
      break;
    }
    case LUA_TTABLE:
      if (depth > 200) {
        b->err = "tables nested too deeply";
        return;
      }
      lua_pushvalue(L, idx);
      if (lua_rawget(L, seenidx) != LUA_TNIL) {
        lua_pop(L, 1);
        b->err = "a table refers to itself (cycles cannot be copied)";
        return;
      }
      lua_pop(L, 1);
      lua_pushvalue(L, idx);
      lua_pushboolean(L, 1);
      lua_rawset(L, seenidx);
      put_tag(b, T_TABLE);
      lua_pushnil(L);
      while (!b->err && lua_next(L, idx)) {
        encode(L, -2, b, seenidx, depth + 1);
        encode(L, -1, b, seenidx, depth + 1);
        lua_pop(L, 1);
      }
      if (b->err) lua_pop(L, 2); /* key and value left by the failed step */
      put_tag(b, T_END);
      lua_pushvalue(L, idx);
      lua_pushnil(L);
      lua_rawset(L, seenidx);
      break;
    case LUA_TFUNCTION:
      b->err = "a function cannot be copied to or from a thread";
      break;
    case LUA_TTHREAD:
      b->err = "a coroutine cannot be copied to or from a thread";
      break;
    default:
      b->err = "a userdata cannot be copied to or from a thread";
  }
}

/* Encodes the n values from first; returns NULL or what went wrong. */
static const char *encode_all(lua_State *L, int first, int n, buf *b) {
  int i, seen;
  lua_newtable(L);
  seen = lua_gettop(L);
  put(b, &n, sizeof n);
  for (i = 0; i < n && !b->err; i++) encode(L, first + i, b, seen, 0);
  lua_pop(L, 1);
  return b->err;
}

/* Decodes one value at *pos, pushing it. */
static void decode(lua_State *L, const char *p, size_t *pos) {
  char t = p[(*pos)++];
  luaL_checkstack(L, 3, "nested too deeply");
  switch (t) {
    case T_NIL: lua_pushnil(L); break;
    case T_FALSE: lua_pushboolean(L, 0); break;
    case T_TRUE: lua_pushboolean(L, 1); break;
    case T_INT: {
      lua_Integer i;
      memcpy(&i, p + *pos, sizeof i);
      *pos += sizeof i;
      lua_pushinteger(L, i);
      break;
    }
    case T_NUM: {
      lua_Number n;
      memcpy(&n, p + *pos, sizeof n);
      *pos += sizeof n;
      lua_pushnumber(L, n);
      break;
    }
    case T_STR: {
      size_t len;
      memcpy(&len, p + *pos, sizeof len);
      *pos += sizeof len;
      lua_pushlstring(L, p + *pos, len);
      *pos += len;
      break;
    }
    default: /* T_TABLE */
      lua_newtable(L);
      while (p[*pos] != T_END) {
        decode(L, p, pos);
        decode(L, p, pos);
        lua_rawset(L, -3);
      }
      (*pos)++;
  }
}

static int decode_all(lua_State *L, const buf *b) {
  size_t pos = sizeof(int);
  int n, i;
  memcpy(&n, b->p, sizeof n);
  luaL_checkstack(L, n + 2, "too many values");
  for (i = 0; i < n; i++) decode(L, b->p, &pos);
  return n;
}

/* ---------------------------------------------------------------- the pool */

enum { J_QUEUED, J_RUNNING, J_DONE, J_TAKEN };

typedef struct job {
  struct job *next;
  loom_task *task;  /* loop thread only */
  buf code, args, out;
  int ok;
  int where;  /* J_*, under the pool's lock */
  int orphan; /* its caller gave up, under the lock */
  int worker; /* while running */
  char *path, *cpath;
} job;

typedef struct worker {
  uv_thread_t th;
  lua_State *L;
  job *cur;
} worker;

static struct {
  uv_once_t once;
  uv_mutex_t mu;
  uv_cond_t cv;
  job *head, *tail; /* queued */
  job *done;        /* finished, for the loop */
  uv_async_t *async; /* the running loop's, NULL between runs */
  worker *w;
  int n, quit;
} P = {.once = UV_ONCE_INIT};

static void pool_init(void) {
  uv_mutex_init(&P.mu);
  uv_cond_init(&P.cv);
}

static int writer(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  put(ud, p, n);
  return 0;
}

static void job_free(job *j) {
  free(j->code.p);
  free(j->args.p);
  free(j->out.p);
  free(j->path);
  free(j->cpath);
  free(j);
}

static lua_State *worker_state(worker *w, job *j) {
  lua_State *L;
  if (w->L) return w->L;
  if ((L = luaL_newstate()) == NULL) return NULL;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, j->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, j->cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  return w->L = L;
}

/* The hook the loop thread sets on a worker's state to stop a job whose
   caller gave up (or the pool shutting down). */
static void interrupt(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "thread.run: interrupted (its caller gave up)");
}

#define TRACEBACK_KEY "loom.job_traceback"

/* The message handler of a job: the error value is kept as it is; its
   traceback is set aside in the registry. */
static int job_msgh(lua_State *L) {
  luaL_traceback(L, L, NULL, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, TRACEBACK_KEY);
  lua_settop(L, 1);
  return 1;
}

/* Encodes the failure out of the error value at -2 and its traceback at -1;
   a value that cannot be copied becomes its tostring. */
static void fail_out(lua_State *L, job *j) {
  j->ok = 0;
  j->out.len = 0;
  j->out.err = NULL;
  if (encode_all(L, lua_gettop(L) - 1, 2, &j->out) != NULL) {
    luaL_tolstring(L, -2, NULL);
    lua_replace(L, -3);
    j->out.len = 0;
    j->out.err = NULL;
    encode_all(L, lua_gettop(L) - 1, 2, &j->out);
  }
}

static void fail_msg(lua_State *L, job *j, const char *msg) {
  lua_pushstring(L, msg);
  lua_pushnil(L);
  fail_out(L, j);
  lua_pop(L, 2);
}

/* Runs one job on the worker's state. */
static void run_job(worker *w, job *j) {
  lua_State *L = worker_state(w, j);
  int base, n;
  if (L == NULL) {
    j->ok = 0;
    return; /* out stays empty: the loop reports it */
  }
  base = lua_gettop(L);
  lua_pushcfunction(L, job_msgh);
  if (luaL_loadbufferx(L, j->code.p, j->code.len, "=thread", "b") != LUA_OK) {
    fail_msg(L, j, lua_tostring(L, -1));
    lua_settop(L, base);
    return;
  }
  n = decode_all(L, &j->args);
  if (lua_pcall(L, n, LUA_MULTRET, base + 1) != LUA_OK) {
    lua_getfield(L, LUA_REGISTRYINDEX, TRACEBACK_KEY);
    fail_out(L, j);
    lua_settop(L, base);
    return;
  }
  j->ok = 1;
  if (encode_all(L, base + 2, lua_gettop(L) - base - 1, &j->out) != NULL) {
    lua_pushfstring(L, "thread.run: the results: %s", j->out.err);
    j->out.len = 0;
    j->out.err = NULL;
    fail_msg(L, j, lua_tostring(L, -1));
  }
  lua_settop(L, base);
  lua_gc(L, LUA_GCSTEP, 0);
}

static void worker_main(void *arg) {
  worker *w = arg;
  uv_mutex_lock(&P.mu);
  for (;;) {
    job *j;
    while (!P.quit && P.head == NULL) uv_cond_wait(&P.cv, &P.mu);
    if (P.quit) break;
    j = P.head;
    if ((P.head = j->next) == NULL) P.tail = NULL;
    j->where = J_RUNNING;
    j->worker = (int)(w - P.w);
    w->cur = j;
    uv_mutex_unlock(&P.mu);
    run_job(w, j);
    uv_mutex_lock(&P.mu);
    w->cur = NULL;
    if (w->L) lua_sethook(w->L, NULL, 0, 0); /* an interruption that came too late */
    if (j->orphan) {
      job_free(j);
      continue;
    }
    j->where = J_DONE;
    j->next = P.done;
    P.done = j;
    if (P.async) uv_async_send(P.async);
  }
  uv_mutex_unlock(&P.mu);
  if (w->L) lua_close(w->L); /* on this thread: it unloads the C modules it loaded */
  w->L = NULL;
}

/* Starts the threads on first use; 0 or a libuv error. Under the lock. */
static int pool_start(void) {
  const char *env = getenv("LOOM_THREADS");
  int n = env && atoi(env) > 0 ? atoi(env) : (int)uv_available_parallelism(), i, rc;
  if (P.w) return 0;
  if (n > 256) n = 256;
  if ((P.w = calloc((size_t)n, sizeof *P.w)) == NULL) return UV_ENOMEM;
  P.quit = 0;
  for (i = 0; i < n; i++) {
    if ((rc = uv_thread_create(&P.w[i].th, worker_main, &P.w[i])) != 0) {
      if (i == 0) {
        free(P.w);
        P.w = NULL;
        return rc;
      }
      break;
    }
  }
  P.n = i;
  return 0;
}

/* The module's collection (lua_close): stops every worker, interrupting the
   jobs still running, and joins them. */
void loom_thread_shutdown(void) {
  job *j;
  int i;
  if (P.w == NULL) return;
  uv_mutex_lock(&P.mu);
  P.quit = 1;
  for (i = 0; i < P.n; i++)
    if (P.w[i].cur && P.w[i].L) lua_sethook(P.w[i].L, interrupt, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
  uv_cond_broadcast(&P.cv);
  uv_mutex_unlock(&P.mu);
  for (i = 0; i < P.n; i++) uv_thread_join(&P.w[i].th);
  while ((j = P.head) != NULL) {
    P.head = j->next;
    job_free(j);
  }
  while ((j = P.done) != NULL) {
    P.done = j->next;
    job_free(j);
  }
  P.tail = NULL;
  free(P.w);
  P.w = NULL;
  P.n = 0;
}

/* In the loop: hands finished jobs to their tasks. */
static void on_done(uv_async_t *a) {
  loom_loop *lp = a->data;
  job *list, *j;
  uv_mutex_lock(&P.mu);
  list = P.done;
  P.done = NULL;
  for (j = list; j; j = j->next) j->where = J_TAKEN;
  uv_mutex_unlock(&P.mu);
  while ((j = list) != NULL) {
    list = j->next;
    if (j->orphan) {
      job_free(j);
    } else {
      if (--lp->jobs == 0) uv_unref((uv_handle_t *)a);
      loom_wake(lp, j->task, 0);
    }
  }
}

/* loom.run's start and end: the loop's async handle receives the pool's
   completions (referenced only while jobs are out). */
void loom_thread_attach(loom_loop *lp) {
  uv_async_init(&lp->uv, &lp->jobs_async, on_done);
  lp->jobs_async.data = lp;
  uv_unref((uv_handle_t *)&lp->jobs_async);
  uv_once(&P.once, pool_init);
  uv_mutex_lock(&P.mu);
  P.async = &lp->jobs_async;
  uv_mutex_unlock(&P.mu);
}

void loom_thread_detach(loom_loop *lp) {
  job *list, *j;
  (void)lp;
  uv_mutex_lock(&P.mu);
  P.async = NULL;
  list = P.done; /* orphans of the tasks cancelled at the end */
  P.done = NULL;
  uv_mutex_unlock(&P.mu);
  while ((j = list) != NULL) {
    list = j->next;
    job_free(j);
  }
}

static void job_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  job *j = t->waitobj, **pp;
  (void)L;
  uv_mutex_lock(&P.mu);
  if (j->where != J_TAKEN && --lp->jobs == 0) uv_unref((uv_handle_t *)&lp->jobs_async);
  switch (j->where) {
    case J_QUEUED:
      for (pp = &P.head; *pp != j; pp = &(*pp)->next) {}
      *pp = j->next;
      if (P.tail == j) {
        P.tail = NULL;
        for (pp = &P.head; *pp; pp = &(*pp)->next) P.tail = *pp;
      }
      uv_mutex_unlock(&P.mu);
      job_free(j);
      return;
    case J_RUNNING: /* stopped at its next instruction; the worker frees it */
      j->orphan = 1;
      if (P.w[j->worker].L) lua_sethook(P.w[j->worker].L, interrupt, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
      uv_mutex_unlock(&P.mu);
      return;
    case J_DONE: /* on_done frees it */
      j->orphan = 1;
      uv_mutex_unlock(&P.mu);
      return;
    default: /* J_TAKEN: woken with its result, which nobody will read */
      uv_mutex_unlock(&P.mu);
      job_free(j);
  }
}

static int run_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, run_k);
  job *j = t->waitobj;
  int n;
  (void)status;
  lua_settop(L, 0);
  if (!j->ok) {
    if (j->out.len == 0) {
      job_free(j);
      return luaL_error(L, "thread.run: cannot create a Lua state");
    }
    decode_all(L, &j->out); /* the error value, its traceback */
    job_free(j);
    if (lua_isstring(L, 2)) {
      loom_pushtask(L, loom_getstate(L), t);
      lua_pushvalue(L, 2);
      loom_set_extra(L, -2, "thread_traceback");
      lua_pop(L, 1);
    }
    lua_settop(L, 1);
    return lua_error(L);
  }
  n = decode_all(L, &j->out);
  job_free(j);
  return n;
}

/***
Runs `fn(...)` on a worker thread with its own Lua state (standard
libraries opened, `package.path`/`cpath` inherited) and returns its results:
CPU-bound work and blocking C libraries, without blocking the loop.
Arguments and results are copied (nil, booleans, numbers, strings, tables
of them; no cycles); `fn` may capture no upvalue but `_ENV`. An error in
`fn` is raised here as the same value (a table error stays a table; the
worker's traceback is kept beside it, in `task:traceback()`); cancelling the
caller interrupts `fn` at its next Lua instruction and frees the thread. The
pool is loom's own, apart from the one file operations use (`LOOM_THREADS`
threads, default the number of cores). Blocks.
@function thread.run
@tparam function fn a function without upvalues
@param ... its arguments
@return fn's results
@raise fn's error; "the function may not capture upvalues: it uses 'x'"
@usage local n = loom.thread.run(function(a, b) local c = 0; for i = a, b do c = c + i end; return c end, 1, 1e8)
*/
static int l_thread_run(lua_State *L) {
  loom_state *S = loom_getstate(L);
  loom_task *t;
  const char *why;
  job *j;
  int i, rc;
  if (lua_type(L, 1) != LUA_TFUNCTION || lua_iscfunction(L, 1))
    return luaL_error(L, "bad argument #1 to 'run' (Lua function expected, got %s)",
                      lua_iscfunction(L, 1) ? "C function" : luaL_typename(L, 1));
  for (i = 1; lua_getupvalue(L, 1, i) != NULL; i++) {
    const char *name = lua_getupvalue(L, 1, i);
    lua_pop(L, 2);
    if (strcmp(name, "_ENV") != 0)
      return luaL_error(L, "bad argument #1 to 'run' (the function may not capture upvalues: it uses '%s')", name);
  }
  t = loom_checkrunning(L, S, "thread.run");
  loom_pushtask(L, S, t); /* a worker traceback left by an earlier, caught failure is stale */
  lua_pushnil(L);
  loom_set_extra(L, -2, "thread_traceback");
  lua_pop(L, 1);
  if ((j = calloc(1, sizeof *j)) == NULL) return luaL_error(L, "thread.run: out of memory");
  lua_pushvalue(L, 1);
  lua_dump(L, writer, &j->code, 0);
  lua_pop(L, 1);
  if ((why = encode_all(L, 2, lua_gettop(L) - 1, &j->args)) != NULL) {
    job_free(j);
    return luaL_error(L, "thread.run: %s", why);
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  j->path = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
  lua_getfield(L, -2, "cpath");
  j->cpath = strdup(lua_tostring(L, -1) ? lua_tostring(L, -1) : "");
  lua_settop(L, 0);
  uv_mutex_lock(&P.mu);
  if ((rc = pool_start()) < 0) {
    uv_mutex_unlock(&P.mu);
    job_free(j);
    return loom_fail(L, rc, "thread.run");
  }
  j->task = t;
  j->where = J_QUEUED;
  if (P.tail)
    P.tail->next = j;
  else
    P.head = j;
  P.tail = j;
  uv_cond_signal(&P.cv);
  uv_mutex_unlock(&P.mu);
  if (S->loop->jobs++ == 0) uv_ref((uv_handle_t *)&S->loop->jobs_async);
  loom_suspend(L, t);
  t->undo = job_undo;
  t->waitobj = j;
  return loom_yield(L, t, run_k);
}

/* Expects [state, module]. */
void loom_open_thread(lua_State *L) {
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_thread_run, 1);
  lua_setfield(L, -2, "_thread_run");
}
