/*
 * sync.c: loom.lock, loom.semaphore (one implementation: a lock is a
 * semaphore of one with an owner), their guards, and loom.event.
 * Waiters queue in intrusive FIFO lists; a release hands the permit straight
 * to the first waiter, so nobody can barge ahead of a queued task, and a
 * waiter cancelled after the hand-off passes the permit on (undo).
 */

/***
@module loom
*/
#include <string.h>
#include "loom.h"

#define LOOM_LOCK "loom.Lock"
#define LOOM_SEM "loom.Semaphore"
#define LOOM_GUARD "loom.Guard"
#define LOOM_EVENT "loom.Event"

typedef struct sem {
  lua_Integer value; /* free permits */
  lua_Integer bound; /* highest value of a bounded semaphore, -1 if unbounded */
  int is_lock;
  unsigned owner;    /* lock: id of the holding task, 0 if free */
  loom_link waiters;
} sem;

typedef struct guard {
  sem *s;
  unsigned owner; /* lock: the task that acquired it */
  int held;
} guard;

typedef struct event {
  int set;
  loom_link waiters;
} event;

/* Upvalues of every function here: 1 = module state, 2 = the metatable of
   the object type (for locks and semaphores, its field __guard is the guard
   metatable). */
#define MT lua_upvalueindex(2)

static sem *checksem(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

static unsigned current_id(loom_state *S) {
  return S->loop && S->loop->current ? S->loop->current->id : 0;
}

static void push_guard(lua_State *L, sem *s, int sidx) {
  guard *g = lua_newuserdatauv(L, sizeof *g, 1);
  g->s = s;
  g->owner = s->owner;
  g->held = 1;
  lua_getfield(L, MT, "__guard");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, sidx);
  lua_setiuservalue(L, -2, 1);
}

/* Gives one permit back: to the first waiter if there is one (it becomes the
   holder while still queued to run), else to the pool. */
static void sem_give(loom_loop *lp, sem *s) {
  if (lp != NULL && !loom_list_empty(&s->waiters)) {
    loom_task *t = loom_container(s->waiters.next, loom_task, wait);
    if (s->is_lock) s->owner = t->id;
    loom_wake(lp, t, 0);
    return;
  }
  if (s->is_lock) s->owner = 0;
  s->value++;
}

static void sem_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  (void)L;
  if (t->state == LOOM_READY) sem_give(lp, t->waitobj); /* it had been handed the permit */
}

static int acquire_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, acquire_k);
  push_guard(L, lua_touserdata(L, 1), 1);
  return 1;
}

/***
A lock made by `loom.lock()`.
@type Lock
*/

/***
Takes the lock, waiting in FIFO order while another task holds it. Blocks
(a cancellation point: a cancelled waiter gives its turn to the next).
@function Lock:acquire
@treturn Guard releases the lock when closed (use it with `<close>`)
@raise "this task already holds the lock" (locks are not re-entrant)
@usage local _ <close> = lock:acquire()
*/
static int s_acquire(lua_State *L) {
  loom_state *S = loom_getstate(L);
  sem *s = checksem(L);
  loom_task *t = loom_checkrunning(L, S, "acquire");
  if (s->is_lock && s->owner == t->id)
    return luaL_error(L, "acquire: this task already holds the lock (locks are not re-entrant)");
  lua_settop(L, 1);
  if (s->value > 0 && loom_list_empty(&s->waiters)) {
    s->value--;
    if (s->is_lock) s->owner = t->id;
    push_guard(L, s, 1);
    return 1;
  }
  loom_suspend(L, t);
  loom_list_append(&s->waiters, &t->wait);
  t->undo = sem_undo;
  t->waitobj = s;
  return loom_yield(L, t, acquire_k);
}

static void sem_release(lua_State *L, loom_state *S, sem *s) {
  if (s->is_lock) {
    if (s->owner == 0) luaL_error(L, "release: the lock is not held");
    if (s->owner != current_id(S)) luaL_error(L, "release: the lock is held by another task");
  } else if (s->bound >= 0 && s->value >= s->bound) {
    luaL_error(L, "release: semaphore released too many times (bounded at %d)", (int)s->bound);
  }
  sem_give(S->loop, s);
}

/***
Releases the lock held by the running task (prefer the guard's `<close>`).
Never blocks.
@function Lock:release
@raise "the lock is not held", "the lock is held by another task"
@usage lock:acquire(); work(); lock:release()
*/
static int s_release(lua_State *L) {
  loom_state *S = loom_getstate(L);
  sem_release(L, S, checksem(L));
  return 0;
}

/***
Whether some task holds the lock. Never blocks.
@function Lock:locked
@treturn boolean
@usage if not lock:locked() then print("free") end
*/
static int l_locked(lua_State *L) {
  lua_pushboolean(L, checksem(L)->owner != 0);
  return 1;
}

/***
Whether the running task holds the lock. Never blocks.
@function Lock:owned
@treturn boolean
@usage assert(lock:owned())
*/
static int l_owned(lua_State *L) {
  loom_state *S = loom_getstate(L);
  sem *s = checksem(L);
  lua_pushboolean(L, s->owner != 0 && s->owner == current_id(S));
  return 1;
}

/***
A semaphore made by `loom.semaphore(n)`.
@type Semaphore
*/

/***
Takes a permit, waiting in FIFO order while there is none. Blocks.
@function Semaphore:acquire
@treturn Guard gives the permit back when closed
@usage local _ <close> = limit:acquire()
fetch(url)
*/

/***
Gives a permit back (prefer the guard's `<close>`). Never blocks.
@function Semaphore:release
@raise "semaphore released too many times" (a bounded one, above its start value)
@usage limit:release()
*/

/***
The number of free permits. Never blocks.
@function Semaphore:value
@treturn integer
@usage print(limit:value())
*/
static int s_value(lua_State *L) {
  lua_pushinteger(L, checksem(L)->value);
  return 1;
}

static int s_tostring(lua_State *L) {
  sem *s = checksem(L);
  if (s->is_lock)
    lua_pushfstring(L, "loom.Lock (%s)", s->owner ? "locked" : "unlocked");
  else
    lua_pushfstring(L, "loom.Semaphore (%I free)", (LUAI_UACINT)s->value);
  return 1;
}

/***
What `acquire` returns: closing it gives the lock or permit back, once.
@type Guard
*/

/***
Gives the lock or permit back; again is harmless. Also `guard:close()` and
`<close>`. Never blocks.
@function Guard:release
@usage local g = lock:acquire(); work(); g:release()
*/
static int g_release(lua_State *L) {
  loom_state *S = loom_getstate(L);
  guard *g = loom_checkudata(L, 1, MT); /* the guard's own metatable */
  sem *s = g->s;
  if (!g->held) return 0;
  g->held = 0;
  if (s->is_lock && s->owner != g->owner) return 0;
  sem_release(L, S, s);
  return 0;
}

static sem *new_sem(lua_State *L, lua_Integer value, lua_Integer bound, int is_lock) {
  sem *s = lua_newuserdatauv(L, sizeof *s, 0);
  memset(s, 0, sizeof *s);
  s->value = value;
  s->bound = bound;
  s->is_lock = is_lock;
  loom_list_init(&s->waiters);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  return s;
}

/***
Synchronisation primitives. Blocking methods need a task.
@section sync
*/

/***
A mutual exclusion lock: FIFO hand-off, not re-entrant. Never blocks.
@function lock
@treturn Lock
@usage local lock = loom.lock()
local _ <close> = lock:acquire()
*/

/***
A semaphore with `n` permits. Never blocks.
@function semaphore
@tparam integer n the permits, 0 or more
@tparam[opt] table opts `bounded = true`: releasing above `n` raises
@treturn Semaphore
@usage local limit = loom.semaphore(3)
*/

/***
An event: a flag tasks can wait for. Never blocks.
@function event
@treturn Event
@usage local ready = loom.event()
loom.spawn(function() ready:wait(); go() end)
ready:set()
*/
static int l_lock(lua_State *L) {
  new_sem(L, 1, 1, 1);
  return 1;
}

/* loom.semaphore(n [, {bounded = true}]): n permits; a bounded semaphore
   raises when released above n. */
static int l_semaphore(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  int bounded = 0;
  luaL_argcheck(L, n >= 0, 1, "the number of permits must not be negative");
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "bounded");
    bounded = lua_toboolean(L, -1);
  }
  new_sem(L, n, bounded ? n : -1, 0);
  return 1;
}

static event *checkevent(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

/***
An event made by `loom.event()`.
@type Event
*/

/***
Sets the flag and wakes every waiting task. Never blocks.
@function Event:set
@usage ready:set()
*/
static int e_set(lua_State *L) {
  loom_state *S = loom_getstate(L);
  event *e = checkevent(L);
  e->set = 1;
  while (!loom_list_empty(&e->waiters))
    loom_wake(S->loop, loom_container(e->waiters.next, loom_task, wait), 0);
  return 0;
}

/***
Clears the flag. Never blocks.
@function Event:clear
@usage ready:clear()
*/
static int e_clear(lua_State *L) {
  checkevent(L)->set = 0;
  return 0;
}

/***
Whether the flag is set. Never blocks.
@function Event:is_set
@treturn boolean
@usage if ready:is_set() then go() end
*/
static int e_is_set(lua_State *L) {
  lua_pushboolean(L, checkevent(L)->set);
  return 1;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t;
  (void)status;
  t = loom_resumed(L, loom_getstate(L), ctx, wait_k);
  if (t->timed_out) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/***
Waits until the flag is set (at once if it is). Blocks.
@function Event:wait
@tparam[opt] number timeout seconds
@treturn boolean true, or false and "timeout"
@usage if not ready:wait(5) then print("not ready in 5 s") end
*/
static int e_wait(lua_State *L) {
  loom_state *S = loom_getstate(L);
  event *e = checkevent(L);
  uint64_t deadline = lua_isnoneornil(L, 2) ? 0 : loom_deadline(L, 2);
  loom_task *t = loom_checkrunning(L, S, "wait");
  if (e->set) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  loom_suspend(L, t);
  loom_list_append(&e->waiters, &t->wait);
  if (deadline != 0 && deadline != UINT64_MAX) loom_timer_start(S->loop, &t->timer, deadline);
  return loom_yield(L, t, wait_k);
}

static int e_tostring(lua_State *L) {
  lua_pushfstring(L, "loom.Event (%s)", checkevent(L)->set ? "set" : "clear");
  return 1;
}

/* loom.event(): a flag that tasks can wait for. */
static int l_event(lua_State *L) {
  event *e = lua_newuserdatauv(L, sizeof *e, 0);
  e->set = 0;
  loom_list_init(&e->waiters);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* Expects [state, module] on the stack. */
void loom_open_sync(lua_State *L) {
  static const luaL_Reg guard_m[] = {{"release", g_release}, {"close", g_release}, {NULL, NULL}};
  static const luaL_Reg guard_mt[] = {{"__close", g_release}, {NULL, NULL}};
  static const luaL_Reg lock_m[] = {
      {"acquire", s_acquire}, {"release", s_release}, {"locked", l_locked},
      {"owned", l_owned},     {NULL, NULL}};
  static const luaL_Reg sem_m[] = {
      {"acquire", s_acquire}, {"release", s_release}, {"value", s_value}, {NULL, NULL}};
  static const luaL_Reg sem_mt[] = {{"__tostring", s_tostring}, {NULL, NULL}};
  static const luaL_Reg event_m[] = {
      {"set", e_set}, {"clear", e_clear}, {"is_set", e_is_set}, {"wait", e_wait}, {NULL, NULL}};
  static const luaL_Reg event_mt[] = {{"__tostring", e_tostring}, {NULL, NULL}};
  static const luaL_Reg lock_ctor[] = {{"lock", l_lock}, {NULL, NULL}};
  static const luaL_Reg sem_ctor[] = {{"semaphore", l_semaphore}, {NULL, NULL}};
  static const luaL_Reg event_ctor[] = {{"event", l_event}, {NULL, NULL}};
  int S = lua_absindex(L, -2), guard = S + 2;
  loom_newclass(L, S, LOOM_GUARD, guard_m, guard_mt);
  loom_newclass(L, S, LOOM_LOCK, lock_m, sem_mt);
  lua_pushvalue(L, guard);
  lua_setfield(L, -2, "__guard");
  loom_classfuncs(L, S + 1, S, lua_gettop(L), lock_ctor);
  loom_newclass(L, S, LOOM_SEM, sem_m, sem_mt);
  lua_pushvalue(L, guard);
  lua_setfield(L, -2, "__guard");
  loom_classfuncs(L, S + 1, S, lua_gettop(L), sem_ctor);
  loom_newclass(L, S, LOOM_EVENT, event_m, event_mt);
  loom_classfuncs(L, S + 1, S, lua_gettop(L), event_ctor);
  lua_settop(L, S + 1);
}
