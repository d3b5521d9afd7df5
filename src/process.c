/*
 * process.c: child processes and signals. Owns the uv_process_t of a child
 * (malloc'd, closed when the child has exited, freed in its close callback),
 * the pipes to its stdin/stdout/stderr (handed over as loom streams), the
 * uv_signal_t handles of a signal.wait, and signal watchers (loom.SignalWatch:
 * uv_signal_t handles that stay installed, queueing what arrives while no
 * task waits, so no signal falls back to its default effect between waits).
 */

/***
@module loom.process
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "handle.h"
#include "loom.h"
#include "stream.h"

#define LOOM_PROCESS "loom.Process"
#define LOOM_SIGWATCH "loom.SignalWatch"
#define STDIO_MAX 8    /* stdin, stdout, stderr and up to five more descriptors */
#define WATCH_MAX 8    /* signals one watcher handles */
#define WATCH_QUEUE 64 /* signals kept while no task waits (more are dropped, as the kernel merges them) */

typedef struct lproc {
  loom_handle h; /* first: its uv_process_t, closed once the child has exited */
  int exited, termsig;
  int64_t status;
  int pid;
  loom_link waiters;
} lproc;

/* Upvalues: 1 = module state, 2 = the Process metatable (the SignalWatch
   one for a watcher's functions), 3 = the Stream metatable. */
#define MT lua_upvalueindex(2)
#define STREAM_MT lua_upvalueindex(3)

static const struct {
  const char *name;
  int num;
} signals[] = {{"SIGHUP", SIGHUP},   {"SIGINT", SIGINT},     {"SIGQUIT", SIGQUIT},
               {"SIGKILL", SIGKILL}, {"SIGUSR1", SIGUSR1},   {"SIGUSR2", SIGUSR2},
               {"SIGPIPE", SIGPIPE}, {"SIGALRM", SIGALRM},   {"SIGTERM", SIGTERM},
               {"SIGCHLD", SIGCHLD}, {"SIGCONT", SIGCONT},   {"SIGSTOP", SIGSTOP},
               {"SIGTSTP", SIGTSTP}, {"SIGWINCH", SIGWINCH}, {"SIGTTIN", SIGTTIN},
               {"SIGTTOU", SIGTTOU}, {NULL, 0}};

static const char *signal_name(int num) {
  int i;
  for (i = 0; signals[i].name; i++)
    if (signals[i].num == num) return signals[i].name;
  return NULL;
}

/* The signal at idx: a name ("SIGTERM", or "TERM") or a number. */
int loom_check_signal(lua_State *L, int idx) {
  int i;
  if (lua_type(L, idx) == LUA_TNUMBER) return (int)luaL_checkinteger(L, idx);
  {
    const char *name = luaL_checkstring(L, idx);
    for (i = 0; signals[i].name; i++)
      if (strcmp(name, signals[i].name) == 0 || strcmp(name, signals[i].name + 3) == 0) return signals[i].num;
    return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
  }
}

static void on_child_exit(uv_process_t *p, int64_t status, int termsig) {
  lproc *pr = p->data;
  pr->exited = 1;
  pr->status = status;
  pr->termsig = termsig;
  while (!loom_list_empty(&pr->waiters)) loom_wake(pr->h.lp, loom_container(pr->waiters.next, loom_task, wait), 0);
  loom_handle_close(&pr->h);
}

/* At the end of loom.run a child still running is left running (it is not
   ours to kill); its handle is closed. */
static void teardown(loom_handle *h) {
  loom_handle_close(h);
}

static lproc *checkproc(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

static int push_status(lua_State *L, lproc *pr) {
  if (pr->termsig) {
    const char *name = signal_name(pr->termsig);
    lua_pushnil(L);
    if (name)
      lua_pushstring(L, name);
    else
      lua_pushinteger(L, pr->termsig);
    return 2;
  }
  lua_pushinteger(L, (lua_Integer)pr->status);
  return 1;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, wait_k);
  return push_status(L, lua_touserdata(L, 1));
}

/* process:wait(): waits for the child to exit: its exit code, or nil and the
   name of the signal that killed it. May block. */
static int p_wait(lua_State *L) {
  loom_state *S = loom_getstate(L);
  lproc *pr = checkproc(L);
  loom_task *t = loom_checkrunning(L, S, "wait");
  if (pr->exited) return push_status(L, pr);
  lua_settop(L, 1);
  loom_suspend(L, t);
  loom_list_append(&pr->waiters, &t->wait);
  return loom_yield(L, t, wait_k);
}

/* process:kill([signal]): sends a signal (default "SIGTERM"); true, or nil,
   msg, code (ESRCH once it has exited). Never blocks. */
static int p_kill(lua_State *L) {
  lproc *pr = checkproc(L);
  int sig = lua_isnoneornil(L, 2) ? SIGTERM : loom_check_signal(L, 2);
  int rc;
  if (pr->exited || pr->h.uv == NULL) return loom_fail(L, UV_ESRCH, NULL);
  rc = uv_process_kill((uv_process_t *)pr->h.uv, sig);
  if (rc < 0) return loom_fail(L, rc, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* process:pid(): the child's process id. */
static int p_pid(lua_State *L) {
  lua_pushinteger(L, checkproc(L)->pid);
  return 1;
}

static int p_tostring(lua_State *L) {
  lproc *pr = loom_checkudata(L, 1, MT);
  lua_pushfstring(L, "loom.Process (pid %d, %s)", pr->pid, pr->exited ? "exited" : "running");
  return 1;
}

static char **string_list(lua_State *L, int idx, int first) {
  int n = (int)lua_rawlen(L, idx), i;
  char **list = calloc((size_t)(n - first + 2), sizeof *list);
  if (list == NULL) return NULL;
  for (i = first; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    list[i - first] = (char *)lua_tostring(L, -1); /* the table keeps it alive */
    lua_pop(L, 1);
  }
  return list;
}

/* loom.core._spawn(argv, cwd, env, stdio [, detached]): starts argv[1]
   with argv as its arguments (searched in PATH); cwd a directory or nil; env
   a list of "NAME=value" or nil (inherit); stdio a list of the child's
   descriptors from 0 (three to STDIO_MAX): "pipe" (past 2: a two-way
   one), "inherit", "null" or a file descriptor number; detached: the child
   leads a session of its own (a terminal's ^C does not reach it). Returns
   the process and, for each "pipe", a stream (one per stdio entry, nil
   where there is none), or nil, msg, code (ENOENT ...). Never blocks. */
static int l_spawn(lua_State *L) {
  loom_state *S = loom_getstate(L);
  uv_process_options_t opts;
  uv_stdio_container_t stdio[STDIO_MAX];
  uv_pipe_t *pipes[STDIO_MAX] = {NULL};
  lproc *pr;
  uv_process_t *p;
  int i, rc, n;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TTABLE);
  n = (int)lua_rawlen(L, 4);
  luaL_argcheck(L, n >= 3 && n <= STDIO_MAX, 4, "3 to 8 descriptors expected");
  if (S->loop == NULL) return loom_not_in_task(L, "spawn");
  memset(&opts, 0, sizeof opts);
  opts.args = string_list(L, 1, 1);
  opts.file = opts.args ? opts.args[0] : NULL;
  opts.cwd = lua_tostring(L, 2);
  opts.env = lua_istable(L, 3) ? string_list(L, 3, 1) : NULL;
  opts.exit_cb = on_child_exit;
  opts.stdio = stdio;
  opts.stdio_count = n;
  if (lua_toboolean(L, 5)) opts.flags |= UV_PROCESS_DETACHED;
  for (i = 0; i < n; i++) {
    lua_rawgeti(L, 4, i + 1);
    if (lua_isinteger(L, -1)) {
      stdio[i].flags = UV_INHERIT_FD;
      stdio[i].data.fd = (int)lua_tointeger(L, -1);
    } else {
      const char *m = lua_tostring(L, -1);
      if (m && strcmp(m, "pipe") == 0 && (pipes[i] = malloc(sizeof *pipes[i])) != NULL) {
        uv_pipe_init(&S->loop->uv, pipes[i], 0);
        stdio[i].flags = UV_CREATE_PIPE | (i == 0   ? UV_READABLE_PIPE
                                           : i < 3 ? UV_WRITABLE_PIPE
                                                   : UV_READABLE_PIPE | UV_WRITABLE_PIPE);
        stdio[i].data.stream = (uv_stream_t *)pipes[i];
      } else if (m && strcmp(m, "inherit") == 0) {
        stdio[i].flags = UV_INHERIT_FD;
        stdio[i].data.fd = i;
      } else {
        stdio[i].flags = UV_IGNORE; /* "null": libuv opens /dev/null */
      }
    }
    lua_pop(L, 1);
  }
  pr = lua_newuserdatauv(L, sizeof *pr, 0);
  memset(pr, 0, sizeof *pr);
  loom_list_init(&pr->waiters);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  p = malloc(sizeof *p);
  rc = (opts.file == NULL || p == NULL) ? UV_ENOMEM : uv_spawn(&S->loop->uv, p, &opts);
  free(opts.args);
  free(opts.env);
  if (rc < 0) {
    if (p && opts.file) { /* an unsuccessful spawn still initialised the handle */
      p->data = NULL;
      uv_close((uv_handle_t *)p, loom_handle_free);
    } else {
      free(p);
    }
    pr->exited = 1;
    for (i = 0; i < n; i++)
      if (pipes[i]) {
        pipes[i]->data = NULL;
        uv_close((uv_handle_t *)pipes[i], loom_handle_free);
      }
    return loom_fail(L, rc, opts.file);
  }
  pr->pid = p->pid;
  loom_handle_open(L, &pr->h, S->loop, (uv_handle_t *)p, -1, teardown);
  luaL_checkstack(L, n, "spawn");
  for (i = 0; i < n; i++) {
    if (pipes[i])
      loom_stream_new(L, S->loop, (uv_stream_t *)pipes[i], STREAM_MT);
    else
      lua_pushnil(L);
  }
  return 1 + n;
}

/* ---------------------------------------------------------------- signals */

typedef struct sigwaiter {
  loom_task *task; /* NULL once it gave up */
  int n, left;     /* handles started, handles not yet closed */
  uv_signal_t h[8];
} sigwaiter;

static void sig_closed(uv_handle_t *h) {
  sigwaiter *w = h->data;
  if (--w->left == 0) free(w);
}

static void sig_stop(sigwaiter *w) {
  int i;
  for (i = 0; i < w->n; i++)
    if (!uv_is_closing((uv_handle_t *)&w->h[i])) uv_close((uv_handle_t *)&w->h[i], sig_closed);
}

static void on_signal(uv_signal_t *h, int signum) {
  sigwaiter *w = h->data;
  if (w->task) {
    const char *name = signal_name(signum);
    if (name)
      lua_pushstring(w->task->co, name);
    else
      lua_pushinteger(w->task->co, signum);
    loom_wake((loom_loop *)h->loop, w->task, 1);
    w->task = NULL;
  }
  sig_stop(w);
}

static void sig_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  sigwaiter *w = t->waitobj;
  (void)L;
  (void)lp;
  w->task = NULL;
  sig_stop(w);
}

static int sig_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, sig_k);
  return 1;
}

/* loom.signal.wait(name, ...): waits for the first of these signals and
   returns its name. While it waits, the signals do not have their default
   effect. May block. */
static int l_sigwait(lua_State *L) {
  loom_state *S = loom_getstate(L);
  int n = lua_gettop(L), nums[8], i, rc;
  loom_task *t;
  sigwaiter *w;
  luaL_argcheck(L, n >= 1, 1, "signal name expected");
  luaL_argcheck(L, n <= 8, 9, "at most 8 signals");
  for (i = 0; i < n; i++) nums[i] = loom_check_signal(L, i + 1);
  t = loom_checkrunning(L, S, "wait");
  if ((w = calloc(1, sizeof *w)) == NULL) return luaL_error(L, "wait: out of memory");
  for (i = 0; i < n; i++) {
    uv_signal_init(&S->loop->uv, &w->h[i]);
    w->h[i].data = w;
    w->n++;
    w->left++;
    if ((rc = uv_signal_start(&w->h[i], on_signal, nums[i])) < 0) {
      sig_stop(w);
      return loom_fail(L, rc, NULL);
    }
  }
  w->task = t;
  lua_settop(L, 0);
  loom_suspend(L, t);
  t->undo = sig_undo;
  t->waitobj = w;
  return loom_yield(L, t, sig_k);
}

/* ------------------------------------------------------- signal watchers */

typedef struct sigwatch sigwatch;

typedef struct sigslot {
  loom_handle h; /* first: its uv_signal_t */
  sigwatch *w;
} sigslot;

struct sigwatch {
  sigslot slot[WATCH_MAX];
  int n, closed;
  loom_loop *lp;
  int queue[WATCH_QUEUE], head, count; /* arrived while no task waited */
  loom_task *task;                      /* the task in wait(), or NULL */
};

static void push_signal(lua_State *L, int signum) {
  const char *name = signal_name(signum);
  if (name)
    lua_pushstring(L, name);
  else
    lua_pushinteger(L, signum);
}

static void watch_close(sigwatch *w) {
  int i;
  if (w->closed) return;
  w->closed = 1;
  for (i = 0; i < w->n; i++) loom_handle_close(&w->slot[i].h);
  if (w->task) {
    loom_task *t = w->task;
    w->task = NULL;
    loom_wake(w->lp, t, 0);
  }
}

static void watch_teardown(loom_handle *h) {
  watch_close(((sigslot *)h)->w);
}

static void on_watched(uv_signal_t *h, int signum) {
  sigwatch *w = ((sigslot *)h->data)->w;
  if (w->task) {
    loom_task *t = w->task;
    w->task = NULL;
    push_signal(t->co, signum);
    loom_wake((loom_loop *)h->loop, t, 1);
  } else if (w->count < WATCH_QUEUE) {
    w->queue[(w->head + w->count++) % WATCH_QUEUE] = signum;
  }
}

static void watch_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  sigwatch *w = t->waitobj;
  (void)L;
  (void)lp;
  if (w->task == t) w->task = NULL;
}

static int watch_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, watch_k);
  (void)status;
  if (lua_gettop(L) > t->kept) return 1; /* handed its signal */
  return loom_fail_closed(L);
}

/***
Signals as they arrive, from `signal.watch`. While it is open its signals
never have their default effect, and those that arrive while no task waits
are kept (in order) for the next `wait`.
@type SignalWatch
*/

/***
The next signal's name. Blocks.
@function SignalWatch:wait
@return the name, or nil, "closed", "ECLOSED" once closed
@usage for sig in function() return w:wait() end do reload(sig) end
*/
static int sw_wait(lua_State *L) {
  loom_state *S = loom_getstate(L);
  sigwatch *w = loom_checkudata(L, 1, MT);
  loom_task *t = loom_checkrunning(L, S, "wait");
  if (w->closed) return loom_fail_closed(L);
  if (w->count > 0) {
    push_signal(L, w->queue[w->head]);
    w->head = (w->head + 1) % WATCH_QUEUE;
    w->count--;
    return 1;
  }
  if (w->task) return luaL_error(L, "wait: another task is waiting on this watcher");
  lua_settop(L, 1);
  loom_suspend(L, t);
  t->undo = watch_undo;
  t->waitobj = w;
  w->task = t;
  return loom_yield(L, t, watch_k);
}

/***
Removes the handlers (the signals have their default effect again) and
wakes a waiting task with `nil, "closed"`. Harmless twice.
@function SignalWatch:close
*/
static int sw_close(lua_State *L) {
  watch_close(loom_checkudata(L, 1, MT));
  return 0;
}

/* loom.core._signal_watch(name, ...): a SignalWatch for up to eight
   signals, or nil, msg, code. Never blocks. */
static int l_signal_watch(lua_State *L) {
  loom_state *S = loom_getstate(L);
  int n = lua_gettop(L), nums[WATCH_MAX], i, rc;
  sigwatch *w;
  luaL_argcheck(L, n >= 1, 1, "signal name expected");
  luaL_argcheck(L, n <= WATCH_MAX, WATCH_MAX + 1, "at most 8 signals");
  for (i = 0; i < n; i++) nums[i] = loom_check_signal(L, i + 1);
  if (S->loop == NULL) return loom_not_in_task(L, "watch");
  w = lua_newuserdatauv(L, sizeof *w, 0);
  memset(w, 0, sizeof *w);
  w->lp = S->loop;
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  for (i = 0; i < n; i++) {
    uv_signal_t *h = malloc(sizeof *h);
    if (h == NULL) {
      watch_close(w);
      return luaL_error(L, "watch: out of memory");
    }
    uv_signal_init(&S->loop->uv, h);
    w->slot[i].w = w;
    loom_handle_open(L, &w->slot[i].h, S->loop, (uv_handle_t *)h, -1, watch_teardown);
    w->n++;
    if ((rc = uv_signal_start(h, on_watched, nums[i])) < 0) {
      watch_close(w);
      return loom_fail(L, rc, NULL);
    }
  }
  return 1;
}

/* loom.core._getppid(): the parent's process id (1, or a subreaper's, once
   the parent is gone). */
static int l_getppid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getppid());
  return 1;
}

/* loom.core._cpu_count(): the cores this process may run on. */
static int l_cpu_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
  return 1;
}

/* loom.core._raise(name): ends the process by the signal, with its default
   effect (as if it had not been caught): the conventional exit status. */
static int l_raise(lua_State *L) {
  int sig = loom_check_signal(L, 1);
  fflush(NULL); /* the signal ends the process without exit's flushing */
  signal(sig, SIG_DFL);
  raise(sig);
  return 0;
}

/* Expects [state, module] with module._Stream set. */
void loom_open_process(lua_State *L) {
  static const luaL_Reg methods[] = {{"wait", p_wait}, {"kill", p_kill}, {"pid", p_pid}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__tostring", p_tostring}, {NULL, NULL}};
  int S = lua_absindex(L, -2), mt;
  loom_newclass(L, S, LOOM_PROCESS, methods, meta);
  mt = lua_gettop(L);
  lua_pushvalue(L, S);
  lua_pushvalue(L, mt);
  lua_getfield(L, S + 1, "_Stream");
  lua_pushcclosure(L, l_spawn, 3);
  lua_setfield(L, S + 1, "_spawn");
  lua_pushvalue(L, S);
  lua_pushvalue(L, mt);
  lua_pushcclosure(L, l_sigwait, 2);
  lua_setfield(L, S + 1, "_signal_wait");
  lua_pushcfunction(L, l_raise);
  lua_setfield(L, S + 1, "_raise");
  lua_pushcfunction(L, l_getppid);
  lua_setfield(L, S + 1, "_getppid");
  lua_pushcfunction(L, l_cpu_count);
  lua_setfield(L, S + 1, "_cpu_count");
  lua_pop(L, 1);
  {
    static const luaL_Reg wmethods[] = {{"wait", sw_wait}, {"close", sw_close}, {NULL, NULL}};
    static const luaL_Reg wmeta[] = {{"__close", sw_close}, {NULL, NULL}};
    loom_newclass(L, S, LOOM_SIGWATCH, wmethods, wmeta);
    lua_pushvalue(L, S);
    lua_pushvalue(L, -2);
    lua_pushcclosure(L, l_signal_watch, 2);
    lua_setfield(L, S + 1, "_signal_watch");
    lua_pop(L, 1);
  }
}
