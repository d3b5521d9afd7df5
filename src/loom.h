/*
 * loom.h: the types the C files of loom share (module state, loop, task,
 * timer, intrusive list) and the few functions they call across files.
 * Ownership rules are in README.md, "Design of the scheduler".
 */
#ifndef LOOM_H
#define LOOM_H

#include <stdint.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#define LOOM_TASK "loom.Task"
#define LOOM_CANCEL_MT "loom.Cancelled"

/* Invariants checked in the checking build (make asan defines LOOM_CHECKS):
   a broken one aborts with its text, file and line. */
#ifdef LOOM_CHECKS
#include <stdio.h>
#include <stdlib.h>
#define loom_assert(c) \
  ((c) ? (void)0 : (fprintf(stderr, "loom: invariant broken: %s (%s:%d)\n", #c, __FILE__, __LINE__), abort()))
#else
#define loom_assert(c) ((void)0)
#endif

typedef struct loom_link {
  struct loom_link *prev, *next;
} loom_link;

#define loom_container(ptr, type, field) \
  ((type *)((char *)(ptr) - offsetof(type, field)))

static inline void loom_list_init(loom_link *h) { h->prev = h->next = h; }
static inline int loom_list_empty(const loom_link *h) { return h->next == h; }
static inline int loom_linked(const loom_link *n) { return n->next != NULL; }

static inline void loom_list_append(loom_link *h, loom_link *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}

static inline void loom_list_remove(loom_link *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = NULL;
}

typedef struct loom_loop loom_loop;
typedef struct loom_timer loom_timer;

struct loom_timer {
  uint64_t deadline; /* uv_hrtime() nanoseconds */
  uint64_t seq;      /* ties break in arming order: FIFO wake-ups */
  int idx;           /* position in the heap, -1 when not armed */
  void (*fire)(loom_loop *lp, loom_timer *tm);
};

enum {
  LOOM_NEW,     /* spawned, queued to start, no coroutine yet */
  LOOM_READY,   /* woken, queued; its wake-up values are on its stack */
  LOOM_RUNNING,
  LOOM_WAITING, /* suspended in a loom blocking call */
  LOOM_DONE,
  LOOM_FAILED,
  LOOM_CANCELLED
};

#define loom_ended(t) ((t)->state >= LOOM_DONE)

/* Uservalues of a task userdata. */
enum {
  LOOM_UV_VALUE = 1, /* function before start, coroutine while live, results after */
  LOOM_UV_ARGS,      /* the argument (one) or a table of them (several) until start */
  LOOM_UV_EXTRA,     /* nil, or a table of rarely set fields: name, cancel, report */
  LOOM_UV_NOTIFY,    /* done callback(s): a function or a list of them */
  LOOM_TASK_NUV = LOOM_UV_NOTIFY
};

/* Uservalues of the module state userdata. */
enum {
  LOOM_SUV_POOL = 1, /* idle coroutines, 1..npool */
  LOOM_SUV_TASKMT,   /* the loom.Task metatable */
  LOOM_SUV_NUV = LOOM_SUV_TASKMT
};

typedef struct loom_scope loom_scope;

typedef struct loom_task loom_task;
struct loom_task {
  lua_State *co;
  loom_task *next_ready;
  loom_link wait;     /* in a waiter list (awaiters of a task, queue getters ...) */
  loom_link live;     /* in the loop's list of live tasks */
  loom_link awaiters; /* tasks blocked in this task's await */
  loom_timer timer;
  /* Called when a task blocked in a primitive is cancelled before it resumed,
     whether it was still waiting (state LOOM_WAITING) or already handed
     something (LOOM_READY: a queue item, a permit), which it must take back. */
  void (*undo)(lua_State *L, loom_loop *lp, loom_task *t);
  void *waitobj; /* what the task is blocked on, for undo */
  loom_scope *scopes; /* open deadline scopes (loom.timeout), innermost first */
  int slot;    /* index in the slot table anchoring the userdata while live */
  int nargs;   /* values to pass on the next resume */
  int kept;    /* stack slots the blocked C function kept across its yield */
  int nvalues; /* results stored once done */
  unsigned id;
  unsigned parent; /* id of the task that spawned it, 0 for none */
  unsigned char state;
  unsigned char cancel_pending; /* requested, to raise at the next blocking call */
  unsigned char throwing;       /* the next resume raises the value it carries */
  unsigned char timed_out;      /* the wake-up came from the task's timer */
  unsigned char unretrieved;    /* failed, and nobody has seen the error yet */
  unsigned char notify;         /* done notifications: 0 none, 1 one, 2 a list */
  unsigned char scope_cancel;   /* the cancellation in flight is a deadline scope's */
  unsigned char cancel_missed;  /* another cancel came while a scope's was in flight */
  unsigned char keep_wake;      /* woken with results that a cancellation must not drop */
  uint64_t since;               /* when it began waiting (the step's start), for loom.dump */
  uint64_t due;                 /* woken by its timer: when that was due (the loop's lag) */
};

typedef struct loom_state {
  loom_loop *loop;      /* the running loop, NULL outside loom.run */
  const void *task_mt;  /* identity of the loom.Task metatable: a cheap type check */
  const void *countdown_mt;
  int npool;            /* idle coroutines in the pool */
  int slots_ref;        /* registry reference of the slot table */
  int nslots;           /* slots ever used */
  int *free_slots, nfree, cap_free;
  loom_scope *free_scopes;
  lua_Integer scope_gen; /* numbers scopes, so a cancellation names its scope */
  unsigned next_id;
  int last_handles; /* handles the last loom.run found still open at its end */
  int debug_next;    /* debug mode asked for the next loom.run (debug.c) */
  int vclock_next;   /* the virtual clock asked for the next loom.run (timer.c) */
  int unretrieved;   /* unretrieved task errors reported so far (task.c) */
  uint64_t slow_next;
} loom_state;

struct loom_loop {
  uv_loop_t uv;
  uv_timer_t timer;
  loom_state *S;
  lua_State *L; /* the thread running loom.run: resumes tasks from here */
  loom_task *current;
  uint64_t step_start; /* when the current step began (uv_hrtime) */
  loom_task *main;
  loom_task *ready_head, *ready_tail;
  loom_link live;
  int nlive;
  int closing; /* main has ended: leftovers were cancelled */
  int lingering; /* closed streams still flushing: loom.run waits for them */
  uv_async_t jobs_async; /* thread.run completions (thread.c) */
  int jobs;              /* thread.run jobs out: jobs_async is referenced while > 0 */
  loom_timer **heap;
  int heap_n, heap_cap;
  uint64_t timer_seq;
  char *readbuf; /* the loop's one read buffer, LOOM_READ_BUF bytes (stream.c, udp.c) */
  int debug;        /* debug mode (debug.c) */
  uint64_t slow_ns; /* in debug mode, a step longer than this is reported */
  /* inspect.c */
  uint64_t steps;                         /* task steps run */
  uint64_t lag_max, lag_cur, lag_prev;    /* how late timers fired: ever, this window, the last */
  uint64_t lag_start;                     /* when this window began */
  int nhandles;                           /* counted by loom.stats */
  uv_signal_t *inspect;                   /* the inspect signal, NULL when off */
  int inspect_ref;                        /* the writer it calls */
  uv_timer_t *alarm;                      /* a real-time alarm (loom.busted's timeout), NULL when none */
  int alarm_ref;                          /* what it calls */
  /* the virtual clock (timer.c): time moves only when nothing else can happen */
  int vclock;
  uint64_t vnow;
};

/* The loop's clock in nanoseconds: the monotonic clock, or the virtual one
   (from 0) under loom.run({clock = "virtual"}). Every deadline is on it. */
static inline uint64_t loom_time(const loom_loop *lp) {
  return lp != NULL && lp->vclock ? lp->vnow : uv_hrtime();
}

#define loom_getstate(L) ((loom_state *)lua_touserdata((L), lua_upvalueindex(1)))

/* The base of every object that owns a libuv handle (handle.h): the `data`
   of the handle points at it, and loom.run's teardown closes a handle left
   open through it. */
typedef struct loom_handle loom_handle;

/* errors.c. libuv errors as Lua failures: pushes nil, "<prefix>: <message>",
   "<ENAME>" (no prefix when it is NULL) and returns 3. */
int loom_fail(lua_State *L, int err, const char *prefix);
/* nil, "closed", "ECLOSED" and nil, "timeout", "ETIMEDOUT": 3 values. */
int loom_fail_closed(lua_State *L);
int loom_fail_timeout(lua_State *L);

/* Raises "<what the user called>: not inside a task (wrap the program in
   loom.run)" at the user's line; fname names it when the stack cannot. */
int loom_not_in_task(lua_State *L, const char *fname);
void loom_open_errors(lua_State *L);

/* Stack layout of the driver (sched.c), which loom_start/loom_finish use. */
enum { LOOM_DRV_LOOP = 1, LOOM_DRV_POOL, LOOM_DRV_SLOTS };

/* Checks that `arg` is a full userdata whose metatable is the one at index
   `mtidx` (an upvalue, typically): cheaper than luaL_checkudata's registry
   lookup by name, with the same error message. */
void *loom_checkudata(lua_State *L, int arg, int mtidx);

/* core.c: loom_newclass pushes a new metatable `name` holding `meta`, its
   __index a table of `methods`; loom_classfuncs sets `funcs` into the table
   at tbl. Every function is closed over (the module state at S, the
   metatable at mt): upvalues 1 and 2. Indices are absolute. */
void loom_newclass(lua_State *L, int S, const char *name, const luaL_Reg *methods, const luaL_Reg *meta);
void loom_classfuncs(lua_State *L, int tbl, int S, int mt, const luaL_Reg *funcs);

/* sched.c */
void loom_ready(loom_loop *lp, loom_task *t);
void loom_wake(loom_loop *lp, loom_task *t, int nargs);
void loom_throw(loom_loop *lp, loom_task *t);
loom_task *loom_checkrunning(lua_State *L, loom_state *S, const char *fname);
void loom_suspend(lua_State *L, loom_task *t);
#define loom_yield(L, t, k) lua_yieldk((L), 0, (lua_KContext)(t), (k))
int loom_step_expired(loom_loop *lp);
void loom_run_inline(loom_loop *lp);
int loom_pause(lua_State *L, loom_task *t);
loom_task *loom_resumed(lua_State *L, loom_state *S, lua_KContext ctx, lua_KFunction k);
int loom_run(lua_State *L);

/* task.c */
loom_task *loom_newtask(lua_State *L, loom_state *S, int fidx, int nargs);
loom_task *loom_totask(lua_State *L, loom_state *S, int idx);
void loom_pushtask(lua_State *L, loom_state *S, loom_task *t);
void loom_free_slots(loom_state *S);
void loom_finish(loom_loop *lp, loom_task *t, int status, int nres);
void loom_start(loom_loop *lp, loom_task *t);
int loom_cancel(lua_State *L, loom_loop *lp, loom_task *t, int reason);
int loom_cancel_with(lua_State *L, loom_loop *lp, loom_task *t, int scope);
void loom_push_cancel_error(lua_State *L, int reason);
int loom_get_extra(lua_State *L, int idx, const char *k);
void loom_set_extra(lua_State *L, int idx, const char *k);
void loom_raise_pending(lua_State *L, loom_state *S, loom_task *t);
void loom_report(lua_State *L, loom_task *t, int idx);
void loom_push_name(lua_State *L, int idx, loom_task *t);
void loom_open_task(lua_State *L);
void loom_add_notify(lua_State *L, int tidx);

/* timer.c */
void loom_timer_start(loom_loop *lp, loom_timer *tm, uint64_t deadline);
void loom_timer_stop(loom_loop *lp, loom_timer *tm);
void loom_timers_fire(loom_loop *lp, uint64_t now);
void loom_timers_arm(loom_loop *lp, uint64_t now);
void loom_virtual_wait(loom_loop *lp);
uint64_t loom_deadline(lua_State *L, int arg);
void loom_close_scopes(loom_loop *lp, loom_task *t);
void loom_free_scopes(loom_state *S);
void loom_open_timer(lua_State *L);

/* thread.c */
void loom_thread_attach(loom_loop *lp);
void loom_thread_detach(loom_loop *lp);
void loom_thread_shutdown(void);

/* fs.c, fswatch.c */
void loom_open_fs(lua_State *L);

/* The loop's read buffer: libuv calls alloc and read back to back, and the
   read callbacks copy out what arrived. It holds any UDP datagram; streams
   read at most LOOM_STREAM_READ at a time, which measured best for echo here
   (32 KiB: 0.93 of C libuv at 16 KiB messages, against 0.80 with 64 KiB and
   far less with 256 KiB; the kernel's receive path costs more per byte with
   large reads on this machine). */
#define LOOM_READ_BUF (64 * 1024)
#define LOOM_STREAM_READ (32 * 1024)

/* stream.c, tcp.c, udp.c */
void loom_open_udp(lua_State *L);
void loom_open_process(lua_State *L);
void loom_open_thread(lua_State *L);
void loom_open_stream(lua_State *L);
void loom_open_tcp(lua_State *L);
void loom_open_fswatch(lua_State *L);
void loom_open_http(lua_State *L);
void loom_open_ws(lua_State *L);
void loom_open_lsocket(lua_State *L);
void loom_open_inflate(lua_State *L);
void loom_open_pg(lua_State *L);


/* process.c: a signal name ("SIGUSR1" or "USR1") or number at idx, as a
   number; raises for an unknown name. */
int loom_check_signal(lua_State *L, int idx);

/* inspect.c */
void loom_lag_note(loom_loop *lp, uint64_t now, uint64_t due);
void loom_inspect_close(loom_loop *lp);
void loom_open_inspect(lua_State *L);

/* debug.c */
void loom_debug_spawned(lua_State *L);
void loom_debug_step(loom_loop *lp, loom_task *t, int status);
void loom_debug_setup(loom_state *S, loom_loop *lp);
int loom_task_traceback(lua_State *L);
void loom_open_debug(lua_State *L);

/* sync.c, queue.c, watch.c */
void loom_open_sync(lua_State *L);
void loom_open_queue(lua_State *L);
void loom_open_watch(lua_State *L);
int loom_countdown_notify(lua_State *L, loom_loop *lp, int idx, int T, loom_task *t);

#endif
