/*
 * thread.c: loom.thread.run — a Lua function run on a worker thread of
 * libuv's pool, each worker thread with its own Lua state (made on first
 * use, libraries opened, package.path and cpath inherited). The function
 * travels as bytecode; arguments and results are copied through a small
 * encoding (nil, booleans, numbers, strings, tables of them). Owns the job
 * (freed by whoever sees it last: the waiting task, or the completion
 * callback when the task gave up).
 */

/***
@module loom
*/
#include <pthread.h>
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

typedef struct job {
  uv_work_t work;
  loom_task *task; /* NULL once it gave up */
  buf code, args, out;
  int ok;
  char *path, *cpath;
} job;

static pthread_key_t state_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void close_state(void *L) {
  lua_close(L);
}

static void make_key(void) {
  pthread_key_create(&state_key, close_state);
}

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

/* ---------------------------------------------------------------- jobs */

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

static lua_State *worker_state(job *j) {
  lua_State *L;
  pthread_once(&key_once, make_key);
  if ((L = pthread_getspecific(state_key)) != NULL) return L;
  if ((L = luaL_newstate()) == NULL) return NULL;
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushstring(L, j->path);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, j->cpath);
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  pthread_setspecific(state_key, L);
  return L;
}

static void fail_out(job *j, const char *msg) {
  size_t len = strlen(msg);
  int one = 1;
  j->ok = 0;
  j->out.len = 0;
  j->out.err = NULL;
  put(&j->out, &one, sizeof one);
  put_tag(&j->out, T_STR);
  put(&j->out, &len, sizeof len);
  put(&j->out, msg, len);
}

/* In a pool thread: runs the function on this thread's Lua state. */
static void work(uv_work_t *w) {
  job *j = loom_container(w, job, work);
  lua_State *L = worker_state(j);
  int base, n;
  if (L == NULL) {
    fail_out(j, "thread.run: cannot create a Lua state");
    return;
  }
  base = lua_gettop(L);
  if (luaL_loadbufferx(L, j->code.p, j->code.len, "=thread", "b") != LUA_OK) {
    fail_out(j, lua_tostring(L, -1));
    lua_settop(L, base);
    return;
  }
  n = decode_all(L, &j->args);
  if (lua_pcall(L, n, LUA_MULTRET, 0) != LUA_OK) {
    fail_out(j, luaL_tolstring(L, -1, NULL));
    lua_settop(L, base);
    return;
  }
  j->ok = 1;
  if (encode_all(L, base + 1, lua_gettop(L) - base, &j->out) != NULL) {
    lua_pushfstring(L, "thread.run: the results: %s", j->out.err);
    fail_out(j, lua_tostring(L, -1));
  }
  lua_settop(L, base);
}

static void done(uv_work_t *w, int status) {
  job *j = loom_container(w, job, work);
  (void)status;
  if (j->task)
    loom_wake((loom_loop *)w->loop, j->task, 0);
  else
    job_free(j);
}

static void job_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  job *j = t->waitobj;
  (void)L;
  (void)lp;
  if (t->state == LOOM_WAITING)
    j->task = NULL; /* the worker finishes; done() drops the result */
  else
    job_free(j);
}

static int run_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, run_k);
  job *j = t->waitobj;
  int n;
  (void)status;
  lua_settop(L, 0);
  if (!j->ok) {
    decode_all(L, &j->out);
    job_free(j);
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
`fn` is raised here with its message; cancelling the caller lets the worker
finish and drops the result. The pool is libuv's (`LOOM_THREADS`, default
the number of cores, at least 4). Blocks.
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
  if ((rc = uv_queue_work(&S->loop->uv, &j->work, work, done)) < 0) {
    job_free(j);
    return loom_fail(L, rc, NULL);
  }
  j->task = t;
  loom_suspend(L, t);
  t->undo = job_undo;
  t->waitobj = j;
  return loom_yield(L, t, run_k);
}

/* Expects [state, module]. Sizes libuv's pool (shared with file operations)
   unless UV_THREADPOOL_SIZE is set: LOOM_THREADS, else the number of cores,
   at least libuv's default of 4 (file work wants several in flight). libuv
   reads it once, on first use. */
void loom_open_thread(lua_State *L) {
  const char *n = getenv("LOOM_THREADS");
  if (getenv("UV_THREADPOOL_SIZE") == NULL) {
    char size[16];
    unsigned cores = uv_available_parallelism();
    snprintf(size, sizeof size, "%u", cores > 4 ? cores : 4);
    setenv("UV_THREADPOOL_SIZE", n && *n ? n : size, 0);
  }
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, l_thread_run, 1);
  lua_setfield(L, -2, "_thread_run");
}
