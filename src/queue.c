/*
 * queue.c: loom.queue, FIFO, LIFO or priority order, bounded or not.
 * Items live in the queue's uservalue table (a ring for FIFO, a stack for
 * LIFO, a binary heap for priority). A put to a queue with a waiting getter
 * hands the value straight to that getter; a get that frees a slot reserves
 * it for the first waiting putter. So waiters are served in arrival order
 * and nobody barges ahead, and a cancelled waiter gives back what it was
 * handed (undo): nothing is lost and a cancelled put changes nothing.
 */

/***
@module loom
*/
#include <string.h>
#include "loom.h"

#define LOOM_QUEUE "loom.Queue"
enum { FIFO, LIFO, PRIO };

typedef struct queue {
  lua_Integer maxsize;    /* 0: unbounded */
  lua_Integer unfinished; /* items put and not yet marked task_done */
  int order;
  int head, count, cap;   /* FIFO ring over keys 1..cap of the items table */
  int reserved;           /* free slots promised to woken putters */
  int closed;
  loom_link getters, putters, joiners;
} queue;

/* Upvalues: 1 = module state, 2 = the queue metatable. Uservalues of a queue:
   1 = the items table, 2 = the priority comparator (or nil). */
#define MT lua_upvalueindex(2)

static queue *checkqueue(lua_State *L) {
  return loom_checkudata(L, 1, MT);
}

static int is_full(const queue *q) {
  return q->maxsize > 0 && q->count + q->reserved >= q->maxsize;
}

/* a < b under the queue's order, with a and b at the top of the stack. */
static int less(lua_State *L, int qidx) {
  int r;
  if (lua_getiuservalue(L, qidx, 2) == LUA_TNIL) {
    lua_pop(L, 1);
    return lua_compare(L, -2, -1, LUA_OPLT);
  }
  lua_pushvalue(L, -3);
  lua_pushvalue(L, -3);
  lua_call(L, 2, 1);
  r = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return r;
}

/* Places the value on top of the stack (popped) at position i of the heap
   at 1..count of the items table, sifting it up or down. */
static void heap_sift(lua_State *L, queue *q, int qidx, int items, int i, int up) {
  int n = q->count;
  for (;;) {
    int j;
    if (up) {
      if (i <= 1) break;
      j = i / 2;
      lua_rawgeti(L, items, j);
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2); /* [v, p, v, p] */
      if (!less(L, qidx)) {
        lua_pop(L, 3);
        break;
      }
      lua_pop(L, 2);
      lua_rawseti(L, items, i); /* parent moves down */
    } else {
      j = 2 * i;
      if (j > n) break;
      lua_rawgeti(L, items, j);
      if (j + 1 <= n) {
        lua_rawgeti(L, items, j + 1);
        lua_pushvalue(L, -1);
        lua_pushvalue(L, -3); /* [v, left, right, right, left] */
        if (less(L, qidx)) {
          lua_pop(L, 2);
          lua_remove(L, -2);
          j++;
        } else {
          lua_pop(L, 3);
        }
      }
      lua_pushvalue(L, -2);
      lua_pushvalue(L, -2); /* [v, c, v, c] */
      lua_insert(L, -2);    /* [v, c, c, v]: c < v ? */
      if (!less(L, qidx)) {
        lua_pop(L, 3);
        break;
      }
      lua_pop(L, 2);
      lua_rawseti(L, items, i); /* child moves up */
    }
    i = j;
  }
  lua_rawseti(L, items, i);
}

/* Doubles the ring: the wrapped part [0, head) moves after the old end, so
   the items stay in order from head on. */
static void fifo_grow(lua_State *L, queue *q, int items) {
  int i;
  for (i = 0; i < q->head; i++) {
    lua_rawgeti(L, items, i + 1);
    lua_rawseti(L, items, q->cap + i + 1);
    lua_pushnil(L);
    lua_rawseti(L, items, i + 1);
  }
  q->cap = q->cap ? q->cap * 2 : 8;
}

/* Stores the value on top of the stack (popped), at the back (front = 0) or
   at the front (front = 1: the next one taken). */
static void store(lua_State *L, queue *q, int qidx, int front) {
  int items;
  lua_getiuservalue(L, qidx, 1);
  lua_insert(L, -2);
  items = lua_gettop(L) - 1;
  if (q->order == FIFO) {
    int slot;
    if (q->count == q->cap) fifo_grow(L, q, items);
    if (front) {
      q->head = (q->head + q->cap - 1) % q->cap;
      slot = q->head;
    } else {
      slot = (q->head + q->count) % q->cap;
    }
    lua_rawseti(L, items, slot + 1);
    q->count++;
  } else if (q->order == LIFO) {
    lua_rawseti(L, items, ++q->count);
  } else {
    q->count++;
    heap_sift(L, q, qidx, items, q->count, 1);
  }
  lua_pop(L, 1);
}

/* Pushes the next item and removes it from the table. */
static void take(lua_State *L, queue *q, int qidx) {
  int items;
  lua_getiuservalue(L, qidx, 1);
  items = lua_gettop(L);
  if (q->order == FIFO) {
    lua_rawgeti(L, items, q->head + 1);
    lua_pushnil(L);
    lua_rawseti(L, items, q->head + 1);
    q->head = (q->head + 1) % q->cap;
    q->count--;
  } else if (q->order == LIFO) {
    lua_rawgeti(L, items, q->count);
    lua_pushnil(L);
    lua_rawseti(L, items, q->count--);
  } else {
    lua_rawgeti(L, items, 1);
    lua_rawgeti(L, items, q->count);
    lua_pushnil(L);
    lua_rawseti(L, items, q->count--);
    if (q->count > 0)
      heap_sift(L, q, qidx, items, 1, 0);
    else
      lua_pop(L, 1);
  }
  lua_remove(L, items);
}

/* Promises free slots to waiting putters, first come first served. */
static void grant(loom_loop *lp, queue *q) {
  while (lp != NULL && !loom_list_empty(&q->putters) && !is_full(q)) {
    q->reserved++;
    loom_wake(lp, loom_container(q->putters.next, loom_task, wait), 0);
  }
}

/* Hands the value on top of L (popped) to the first waiting getter. */
static void handoff(lua_State *L, loom_loop *lp, queue *q) {
  loom_task *g = loom_container(q->getters.next, loom_task, wait);
  lua_xmove(L, g->co, 1);
  loom_wake(lp, g, 1);
}

/* Adds the value on top of L (popped) to the queue: to a waiting getter if
   there is one, else to the items. */
static void add(lua_State *L, loom_loop *lp, queue *q, int qidx) {
  q->unfinished++;
  if (lp != NULL && !loom_list_empty(&q->getters))
    handoff(L, lp, q);
  else
    store(L, q, qidx, 0);
}

/* Runs on the cancelling task's stack L: the comparator of a priority queue
   may not be called on the suspended getter's. */
static void get_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  queue *q = t->waitobj;
  if (t->state != LOOM_READY || t->nargs != 1) return; /* nothing was handed over */
  luaL_checkstack(L, 8, NULL);
  lua_pushvalue(t->co, 1);           /* the queue */
  lua_pushvalue(t->co, t->kept + 1); /* the item goes back, first in line */
  lua_xmove(t->co, L, 2);
  if (!loom_list_empty(&q->getters))
    handoff(L, lp, q);
  else
    store(L, q, lua_gettop(L) - 1, 1);
  lua_pop(L, 1);
}

static void put_undo(lua_State *L, loom_loop *lp, loom_task *t) {
  queue *q = t->waitobj;
  (void)L;
  if (t->state != LOOM_READY || t->nargs != 0) return; /* no slot was promised */
  q->reserved--;
  grant(lp, q);
}

static int push_closed(lua_State *L) {
  lua_pushnil(L);
  lua_pushliteral(L, "closed");
  return 2;
}

static void check_item(lua_State *L) {
  luaL_argcheck(L, !lua_isnoneornil(L, 2), 2, "nil items are refused");
}

static int put_k(lua_State *L, int status, lua_KContext ctx) {
  loom_state *S = loom_getstate(L);
  loom_task *t = loom_resumed(L, S, ctx, put_k);
  queue *q = lua_touserdata(L, 1);
  (void)status;
  if (lua_gettop(L) > t->kept) return 2; /* woken by close: nil, "closed" */
  q->reserved--;
  if (q->closed) return push_closed(L);
  lua_pushvalue(L, 2);
  add(L, S->loop, q, 1);
  lua_pushboolean(L, 1);
  return 1;
}

/***
A queue made by `loom.queue`.
@type Queue
*/

/***
Adds an item, waiting while the queue is full (backpressure). Blocks.
@function Queue:put
@param item any value but nil
@treturn boolean true, or nil and "closed"
@usage q:put(job)
*/
static int q_put(lua_State *L) {
  loom_state *S = loom_getstate(L);
  queue *q = checkqueue(L);
  loom_task *t;
  check_item(L);
  t = loom_checkrunning(L, S, "put");
  lua_settop(L, 2);
  if (q->closed) return push_closed(L);
  if (!is_full(q)) {
    add(L, S->loop, q, 1);
    lua_pushboolean(L, 1);
    return 1;
  }
  loom_suspend(L, t);
  loom_list_append(&q->putters, &t->wait);
  t->undo = put_undo;
  t->waitobj = q;
  return loom_yield(L, t, put_k);
}

/***
Adds an item if there is room. Never blocks.
@function Queue:put_nowait
@param item any value but nil
@return true, or nil and "full" / "closed"
@usage if not q:put_nowait(job) then drop(job) end
*/
static int q_put_nowait(lua_State *L) {
  loom_state *S = loom_getstate(L);
  queue *q = checkqueue(L);
  check_item(L);
  lua_settop(L, 2);
  if (q->closed) return push_closed(L);
  if (is_full(q)) {
    lua_pushnil(L);
    lua_pushliteral(L, "full");
    return 2;
  }
  add(L, S->loop, q, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int get_k(lua_State *L, int status, lua_KContext ctx) {
  loom_task *t = loom_resumed(L, loom_getstate(L), ctx, get_k);
  (void)status;
  return lua_gettop(L) - t->kept;
}

/* Pushes what a get returns without waiting: the next item (1), or
   nil, "closed" (2); 0 when the queue is empty and open. */
static int get_now(lua_State *L, loom_state *S, queue *q) {
  lua_settop(L, 1);
  if (q->count > 0) {
    take(L, q, 1);
    grant(S->loop, q);
    return 1;
  }
  return q->closed ? push_closed(L) : 0;
}

/***
The next item, waiting while the queue is empty; once the queue is closed
and drained, nil and "closed". Blocks.
@function Queue:get
@return the item, or nil and "closed"
@usage local job = q:get()
*/
static int q_get(lua_State *L) {
  loom_state *S = loom_getstate(L);
  queue *q = checkqueue(L);
  loom_task *t = loom_checkrunning(L, S, "get");
  int n = get_now(L, S, q);
  if (n > 0) return n;
  loom_suspend(L, t);
  loom_list_append(&q->getters, &t->wait);
  t->undo = get_undo;
  t->waitobj = q;
  return loom_yield(L, t, get_k);
}

/***
The next item if there is one. Never blocks.
@function Queue:get_nowait
@return the item, or nil and "empty" / "closed"
@usage local job = q:get_nowait()
*/
static int q_get_nowait(lua_State *L) {
  loom_state *S = loom_getstate(L);
  queue *q = checkqueue(L);
  int n = get_now(L, S, q);
  if (n > 0) return n;
  lua_pushnil(L);
  lua_pushliteral(L, "empty");
  return 2;
}

/***
The number of items waiting. Never blocks.
@function Queue:size
@treturn integer
@usage print(q:size())
*/
static int q_size(lua_State *L) {
  lua_pushinteger(L, checkqueue(L)->count);
  return 1;
}

/***
Whether no item waits. Never blocks.
@function Queue:empty
@treturn boolean
@usage if q:empty() then idle() end
*/
static int q_empty(lua_State *L) {
  lua_pushboolean(L, checkqueue(L)->count == 0);
  return 1;
}

/***
Whether a put would wait. Never blocks.
@function Queue:full
@treturn boolean
@usage if q:full() then slow_down() end
*/
static int q_full(lua_State *L) {
  lua_pushboolean(L, is_full(checkqueue(L)));
  return 1;
}

/***
Marks one item taken earlier as processed (for `join`). Never blocks.
@function Queue:task_done
@raise "task_done: called more times than items were put"
@usage local job = q:get(); handle(job); q:task_done()
*/
static int q_task_done(lua_State *L) {
  loom_state *S = loom_getstate(L);
  queue *q = checkqueue(L);
  if (q->unfinished <= 0) return luaL_error(L, "task_done: called more times than items were put");
  if (--q->unfinished == 0)
    while (!loom_list_empty(&q->joiners))
      loom_wake(S->loop, loom_container(q->joiners.next, loom_task, wait), 0);
  return 0;
}

static int join_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  loom_resumed(L, loom_getstate(L), ctx, join_k);
  return 0;
}

/***
Waits until every item put has been marked `task_done`. Blocks.
@function Queue:join
@usage q:join() -- all the work is processed
*/
static int q_join(lua_State *L) {
  loom_state *S = loom_getstate(L);
  queue *q = checkqueue(L);
  loom_task *t = loom_checkrunning(L, S, "join");
  if (q->unfinished == 0) return 0;
  lua_settop(L, 1);
  loom_suspend(L, t);
  loom_list_append(&q->joiners, &t->wait);
  return loom_yield(L, t, join_k);
}

/***
Closes the queue: puts return nil, "closed"; getters drain what is left
and then get nil, "closed". Never blocks.
@function Queue:close
@usage q:close()
*/
static int q_close(lua_State *L) {
  loom_state *S = loom_getstate(L);
  queue *q = checkqueue(L);
  loom_link *lists[2];
  int i;
  if (q->closed) return 0;
  q->closed = 1;
  lists[0] = &q->getters;
  lists[1] = &q->putters;
  for (i = 0; i < 2; i++)
    while (!loom_list_empty(lists[i])) {
      loom_task *t = loom_container(lists[i]->next, loom_task, wait);
      lua_checkstack(t->co, 2);
      lua_pushnil(t->co);
      lua_pushliteral(t->co, "closed");
      loom_wake(S->loop, t, 2);
    }
  return 0;
}

/***
An iterator over the items as they come; it ends when the queue is closed
and drained. Each step blocks.
@function Queue:items
@usage for job in q:items() do handle(job); q:task_done() end
*/
static int q_items(lua_State *L) {
  checkqueue(L);
  lua_getfield(L, MT, "__index");
  lua_getfield(L, -1, "get");
  lua_pushvalue(L, 1);
  return 2;
}

static int q_len(lua_State *L) {
  return q_size(L);
}

static int q_tostring(lua_State *L) {
  queue *q = checkqueue(L);
  static const char *const names[] = {"fifo", "lifo", "priority"};
  lua_pushfstring(L, "loom.Queue (%s, %d items%s)", names[q->order], q->count,
                  q->closed ? ", closed" : "");
  return 1;
}

/***
Queues.
@section queues
*/

/***
A queue of items between tasks, with backpressure when `maxsize` is set.
Never blocks.
@function queue
@tparam[opt] integer maxsize 0 or nil: unbounded
@tparam[opt] table opts `order = "fifo"` (default), `"lifo"` or `"priority"`;
`less = function(a, b)` orders a priority queue (default `<`)
@treturn Queue
@usage local q = loom.queue(10)
local pq = loom.queue(nil, { order = "priority", less = function(a, b) return a.due < b.due end })
*/
static int l_queue(lua_State *L) {
  static const char *const orders[] = {"fifo", "lifo", "priority", NULL};
  lua_Integer maxsize = 0;
  int order = FIFO, opts = 2;
  queue *q;
  if (lua_type(L, 1) == LUA_TTABLE) {
    opts = 1;
  } else {
    maxsize = luaL_optinteger(L, 1, 0);
    luaL_argcheck(L, maxsize >= 0, 1, "maxsize must not be negative");
  }
  if (!lua_isnoneornil(L, opts)) {
    luaL_checktype(L, opts, LUA_TTABLE);
    lua_getfield(L, opts, "order");
    if (!lua_isnil(L, -1)) {
      const char *o = lua_tostring(L, -1);
      for (order = 0; orders[order] && !(o && strcmp(o, orders[order]) == 0); order++) {}
      if (orders[order] == NULL)
        return luaL_error(L, "bad option 'order' to 'queue' (\"fifo\", \"lifo\" or \"priority\" expected, got %s)",
                          luaL_tolstring(L, -1, NULL));
    }
    lua_getfield(L, opts, "less");
    if (!lua_isnil(L, -1) && !lua_isfunction(L, -1))
      return luaL_error(L, "bad option 'less' to 'queue' (function expected, got %s)", luaL_typename(L, -1));
  } else {
    lua_pushnil(L);
  }
  q = lua_newuserdatauv(L, sizeof *q, 2);
  memset(q, 0, sizeof *q);
  q->maxsize = maxsize;
  q->order = order;
  loom_list_init(&q->getters);
  loom_list_init(&q->putters);
  loom_list_init(&q->joiners);
  lua_pushvalue(L, MT);
  lua_setmetatable(L, -2);
  lua_createtable(L, maxsize > 0 && maxsize <= 1024 ? (int)maxsize : 8, 0);
  lua_setiuservalue(L, -2, 1);
  if (order == PRIO) {
    lua_pushvalue(L, -2);
    lua_setiuservalue(L, -2, 2);
  }
  return 1;
}

/* Expects [state, module] on the stack. */
void loom_open_queue(lua_State *L) {
  static const luaL_Reg methods[] = {{"put", q_put},         {"get", q_get},
                                     {"put_nowait", q_put_nowait},
                                     {"get_nowait", q_get_nowait},
                                     {"size", q_size},       {"empty", q_empty},
                                     {"full", q_full},       {"task_done", q_task_done},
                                     {"join", q_join},       {"close", q_close},
                                     {"items", q_items},     {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__len", q_len}, {"__tostring", q_tostring}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {{"queue", l_queue}, {NULL, NULL}};
  int S = lua_absindex(L, -2);
  loom_newclass(L, S, LOOM_QUEUE, methods, meta);
  loom_classfuncs(L, S + 1, S, lua_gettop(L), funcs);
  lua_pop(L, 1);
}
