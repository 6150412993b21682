/* Waiting and waking on a word of a shared mapping, across processes.
 *
 * A futex on a MAP_SHARED mapping of a shmem/memfd/file region is keyed by
 * the kernel by file page and offset, so two processes that mapped the same
 * region at different addresses wait on the same word. Only the shared ops
 * are used on region words (never FUTEX_PRIVATE_FLAG).
 *
 * Every async wait of this process is also filed in one process-wide table
 * (under `table_lock`), for three reasons the kernel cannot serve (a blocking
 * wait needs none of them: see futex_wait_js):
 *  - notify() from this process must reach a waitAsync() of this process that
 *    has returned but whose thread is not yet inside the kernel. Each waiter
 *    thread sleeps in futex_waitv() on two words: its own private `cancel`
 *    word (first) and the region's word. notify() first
 *    wakes, oldest first, the waiters of this process that are not in the
 *    kernel: it marks them and sets `cancel`, which they cannot miss
 *    (futex_waitv checks `cancel` before it queues on the region's word).
 *    The rest of `count` goes to the kernel, which wakes the waiters queued
 *    on the word, of this process and of others, in the order they queued;
 *    each is woken once and counted once, so the total is exact. (Marking a waiter that is in the kernel
 *    instead would leave it on the word's queue for a moment, where the
 *    kernel's wake could count it a second time.)
 *  - close() of a view must end the waits on it (ERR_COWSHM_CLOSED) and must
 *    not return while a waiter thread may still pass the address to the
 *    kernel: cowshm_futex_on_unmap() marks them, wakes them, and waits until
 *    none uses the range any more.
 *  - an environment that ends (a worker) must settle or drop its waits
 *    before its threadsafe function goes.
 * A waiter that the kernel woke through the region's word after it was
 * already marked (its wake was meant for another waiter) passes the wake on.
 *
 * Async waits are io_uring futex-wait requests on a ring of their
 * environment, polled by its event loop (see "async waits as io_uring
 * requests" below). Where io_uring is refused they sleep on threads of
 * their own, never on libuv's pool: a process-wide set of waiter threads,
 * one per pending wait, kept when idle so a wait costs a condition-variable
 * handoff, not a thread creation. Their results reach JavaScript through one
 * threadsafe function per environment, referenced only while that
 * environment has waits pending on threads.
 *
 * The kernel compares the word again whenever a waiter (re)enters it: if the
 * word no longer holds the expected value by then, the wait ends with 'ok'
 * (the word changed, which is what waiters wait for). On the waiter threads,
 * a notify from another process that changes nothing and lands in the
 * microseconds between a waitAsync() call and its thread entering the kernel
 * is not seen (an io_uring request is queued before waitAsync() returns);
 * notifiers change the word before they notify, as every futex user does.
 */
#include "cowshm.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "uring.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

/* RES_FAULT: the kernel found no page behind the word (another process
 * truncated the region's file under it): EFAULT, as the blocking wait says. */
enum { RES_WAITING = 0, RES_OK, RES_NOT_EQUAL, RES_TIMED_OUT, RES_CLOSED, RES_ABORTED, RES_ERROR, RES_FAULT };
/* What JS receives for each result, as an index into this list. */
static const char *const result_names[] = {"waiting", "ok", "not-equal", "timed-out", "closed", "aborted", "error", "fault"};

struct fenv;
struct fring;

struct waiter {
  struct waiter *prev, *next; /* the table: every wait of the process, oldest first */
  uint64_t dev, ino, off;     /* the word's identity: region file and byte offset in it */
  uintptr_t addr;             /* where this environment maps it */
  uint32_t expected;
  _Atomic uint32_t cancel;    /* private futex: set to 1 (and woken) to end the wait */
  int result;                 /* RES_*, under table_lock */
  int busy;                   /* a thread may still pass addr to the kernel */
  int in_kernel;              /* inside futex_waitv (or about to be), under table_lock */
  int timed;
  struct timespec deadline;   /* CLOCK_MONOTONIC, when timed */
  /* async waits only */
  struct fenv *fe;
  napi_deferred deferred;
  napi_ref array;             /* the Int32Array waited on, held until the wait settles, as
                               * Atomics.waitAsync holds its buffer: a view nothing else
                               * references must not be collected (and closed) under it */
  int final;                  /* settled as waitAsync's caller gets it (see settle) */
  double id;
  struct waiter *queue_next;  /* jobs not yet taken by a thread; then the environment's done list */
  struct fring *fr;           /* waits as an io_uring request of this ring (NULL: on a waiter thread) */
  int err;                    /* RES_ERROR: the errno the kernel completed the request with */
  int orphan;                 /* its view was closed before its completion came: never touch addr */
  /* The linked timeout's deadline. Here, not on the stack: a submit the
   * kernel takes only in part leaves the rest queued for a later call. */
  struct __kernel_timespec uring_ts;
};

/* Per environment: its threadsafe function and the waits to settle. */
struct fenv {
  napi_env env;
  napi_threadsafe_function tsfn;
  size_t pending;              /* async waits not yet settled (JS thread only) */
  struct waiter *done;         /* finished, to settle on the JS thread (under table_lock) */
  int closing;
  napi_ref noop;               /* a JS function: calling it tells whether the thread is being terminated */
  int worker;                  /* not the process's main thread: blocking waits sleep in slices */
  /* How async waits wait: decided at the first one (see ring_start). */
  int path;                    /* PATH_* */
  char path_reason[128];
  struct fring *fr;            /* PATH_RING: the environment's ring (JS thread only) */
  size_t pending_threads;      /* of `pending`: on waiter threads (the tsfn is referenced while > 0) */
  napi_ref names;              /* result_names as JS strings, made once: a settle copies none */
  struct waiter *spare;        /* settled waits kept for the next ones (JS thread only) */
  size_t spares;
};

enum { PATH_UNKNOWN = 0, PATH_RING, PATH_THREADS };

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t table_cond = PTHREAD_COND_INITIALIZER; /* a waiter stopped being busy */
static pthread_cond_t job_cond = PTHREAD_COND_INITIALIZER;   /* a job was queued */
static struct waiter *table_head, *table_tail;
static struct waiter *jobs_head, *jobs_tail;
static size_t idle_threads;
static double next_id = 1;
static _Atomic int have_waitv = -1; /* futex_waitv(2) (Linux 5.16): -1 not known yet */

/* A wait's record: one of the environment's spares, or a new one. Both on
 * the environment's JS thread, which files and settles its waits. */
enum { MAX_SPARES = 8 };

static struct waiter *waiter_new(struct fenv *fe) {
  struct waiter *w = fe->spare;
  if (w == NULL) return malloc(sizeof *w);
  fe->spare = w->queue_next;
  fe->spares--;
  return w;
}

static void waiter_free(struct fenv *fe, struct waiter *w) {
  if (fe->closing || fe->spares >= MAX_SPARES) {
    free(w);
    return;
  }
  w->queue_next = fe->spare;
  fe->spare = w;
  fe->spares++;
}

static long sys_futex(void *addr, int op, uint32_t val, const struct timespec *ts) {
  return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

/* Waits on waiter threads in the table (under table_lock; read without it by
 * notify, which has nothing to look for in the table while there are none). */
static _Atomic size_t thread_waits;

static void table_insert(struct waiter *w) {
  if (w->fr == NULL) atomic_fetch_add(&thread_waits, 1);
  w->prev = table_tail;
  w->next = NULL;
  if (table_tail != NULL) table_tail->next = w;
  else table_head = w;
  table_tail = w;
}

static void table_remove(struct waiter *w) {
  if (w->fr == NULL) atomic_fetch_sub(&thread_waits, 1);
  if (w->prev != NULL) w->prev->next = w->next;
  else table_head = w->next;
  if (w->next != NULL) w->next->prev = w->prev;
  else table_tail = w->prev;
  w->prev = w->next = NULL;
}

/* Under table_lock: end a wait that is still waiting. */
static void finish_locked(struct waiter *w, int result) {
  if (w->result != RES_WAITING) return;
  w->result = result;
  atomic_store(&w->cancel, 1);
  sys_futex(&w->cancel, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/* How one sleep in the kernel ended. */
enum { S_WORD, S_CANCEL, S_CHANGED, S_DEADLINE, S_SLICE, S_FAULT, S_AGAIN };

static int before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* One sleep in the kernel, until the wait's deadline or `slice_end`,
 * whichever comes first (NULL: no slice). The caller holds w->busy. */
static int sleep_once(struct waiter *w, const struct timespec *slice_end) {
  const struct timespec *until = w->timed ? &w->deadline : NULL;
  if (slice_end != NULL && (until == NULL || before(slice_end, until))) until = slice_end;
  if (atomic_load(&have_waitv) != 0) {
    /* cancel first: futex_waitv queues in order and gives up at the first
     * word that differs, so a set cancel keeps it off the region's queue. */
    struct futex_waitv v[2] = {
        {.val = 0, .uaddr = (uintptr_t)&w->cancel, .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG},
        {.val = w->expected, .uaddr = w->addr, .flags = FUTEX_32},
    };
    long r = syscall(SYS_futex_waitv, v, 2, 0, until, CLOCK_MONOTONIC);
    if (r >= 0) {
      atomic_store(&have_waitv, 1);
      /* The index of the last word that was woken: 1 when the region's was,
       * whether or not cancel was too. */
      return r == 1 ? S_WORD : S_CANCEL;
    }
    int err = errno;
    if (err == ENOSYS) {
      atomic_store(&have_waitv, 0);
    } else {
      atomic_store(&have_waitv, 1);
      if (err == EAGAIN) return atomic_load(&w->cancel) ? S_CANCEL : S_CHANGED;
      if (err == ETIMEDOUT) return until == &w->deadline ? S_DEADLINE : S_SLICE;
      if (err == EFAULT) return S_FAULT;
      return S_AGAIN; /* EINTR */
    }
  }
  /* Kernels before 5.16: FUTEX_WAIT on the word alone, in slices of at most
   * 10 ms so a set cancel is seen (a notify from this process, close() or an
   * abort then takes up to a slice to arrive). */
  if (atomic_load(&w->cancel)) return S_CANCEL;
  const long long step = 10000000LL;
  long long left = step;
  if (until != NULL) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    left = (long long)(until->tv_sec - now.tv_sec) * 1000000000LL + (until->tv_nsec - now.tv_nsec);
    if (left <= 0) return until == &w->deadline ? S_DEADLINE : S_SLICE;
  }
  int partial = until == NULL || left > step;
  struct timespec rel = {.tv_sec = 0, .tv_nsec = partial ? step : left};
  if (sys_futex((void *)w->addr, FUTEX_WAIT, w->expected, &rel) == 0) return S_WORD;
  int err = errno;
  if (err == EAGAIN) return S_CHANGED;
  if (err == EFAULT) return S_FAULT;
  if (err == ETIMEDOUT && !partial) return until == &w->deadline ? S_DEADLINE : S_SLICE;
  return S_AGAIN;
}

/* Sleeps until the wait ends, or `slice_end` passes (NULL: no slice).
 * Returns the result: RES_WAITING only when the slice ended. */
static int wait_in_kernel(struct waiter *w, const struct timespec *slice_end) {
  for (;;) {
    pthread_mutex_lock(&table_lock);
    if (w->result != RES_WAITING) {
      pthread_mutex_unlock(&table_lock);
      return w->result;
    }
    w->in_kernel = 1;
    pthread_mutex_unlock(&table_lock);
    int how = sleep_once(w, slice_end);
    pthread_mutex_lock(&table_lock);
    w->in_kernel = 0;
    if (how == S_WORD) {
      if (w->result == RES_WAITING) w->result = RES_OK;
      /* Marked already (a notify of this process, close, abort): the
       * kernel's wake was meant for another waiter. Pass it on. The address
       * is still mapped: close() waits for this waiter to stop being busy. */
      else sys_futex((void *)w->addr, FUTEX_WAKE, 1, NULL);
    } else if (w->result == RES_WAITING) {
      if (how == S_CHANGED) w->result = RES_OK;
      else if (how == S_DEADLINE) w->result = RES_TIMED_OUT;
      else if (how == S_FAULT) w->result = RES_FAULT;
    }
    int result = w->result;
    pthread_mutex_unlock(&table_lock);
    if (result != RES_WAITING || how == S_SLICE) return result;
  }
}

/* ---- where a typed array's word is ----------------------------------- */

enum { WORD_OK = 0, WORD_NOT_COWSHM = -1, WORD_PRIVATE = -2, WORD_RANGE = -3, WORD_TYPE = -4 };

struct word {
  uintptr_t addr;
  uint64_t dev, ino, off;
  int access;
};

/* The address of ta[index]: WORD_OK, or WORD_TYPE / WORD_RANGE. */
static int word_address(napi_env env, napi_value ta, double index, uintptr_t *addr) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, ta, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_int32_array)
    return WORD_TYPE;
  if (!(index >= 0) || index >= (double)length) return WORD_RANGE;
  *addr = (uintptr_t)data + (uintptr_t)index * 4;
  return *addr % 4 != 0 ? WORD_TYPE : WORD_OK;
}

static int word_in_slot(napi_env env, const struct cowshm_slot *s, uintptr_t addr, struct word *out);

/* Finds the mapping that holds ta[index] and the word's identity in the
 * region. Call with the registry lock held. */
static int locate_locked(napi_env env, napi_value ta, double index, struct word *out) {
  uintptr_t addr;
  int rc = word_address(env, ta, index, &addr);
  return rc != WORD_OK ? rc : word_in_slot(env, cowshm_slot_find(addr), addr, out);
}

/* locate_locked() without the registry lock when it can: a view of this
 * environment's, which only this thread maps or unmaps, stays as it is for
 * the whole call once found. Other threads may meanwhile rewrite other
 * slots, so what the search finds is confirmed the way the fault handler
 * confirms it (the same generation, still mapped, after the reads); anything
 * else (another environment's view, no view, a slot rewritten meanwhile)
 * takes the lock and looks again, so errors are the locked search's. */
static int locate(napi_env env, napi_value ta, double index, struct word *out) {
  uintptr_t addr;
  int rc = word_address(env, ta, index, &addr);
  if (rc != WORD_OK) return rc;
  uint32_t gen;
  struct cowshm_slot *s = cowshm_slot_find_gen(addr, &gen);
  if (s != NULL && s->env == env) {
    rc = word_in_slot(env, s, addr, out);
    atomic_thread_fence(memory_order_acquire); /* the reads above before the confirmation */
    if (rc == WORD_OK && cowshm_slot_holds(s, gen, addr)) return WORD_OK;
  }
  cowshm_registry_lock();
  rc = word_in_slot(env, cowshm_slot_find(addr), addr, out);
  cowshm_registry_unlock();
  return rc;
}

static int word_in_slot(napi_env env, const struct cowshm_slot *s, uintptr_t addr, struct word *out) {
  if (s == NULL || atomic_load(&s->state) != SLOT_MAPPED || s->env != env || addr + 4 > s->start + s->byte_length)
    return WORD_NOT_COWSHM;
  if (s->access != ACCESS_READ && s->access != ACCESS_WRITE) return WORD_PRIVATE;
  out->addr = addr;
  out->dev = s->dev;
  out->ino = s->ino;
  out->off = s->file_offset + (addr - s->start);
  out->access = s->access;
  return WORD_OK;
}

static void deadline_after(double ms, struct timespec *ts) {
  clock_gettime(CLOCK_MONOTONIC, ts);
  double whole = floor(ms / 1000);
  ts->tv_sec += (time_t)whole;
  ts->tv_nsec += (long)((ms - whole * 1000) * 1e6);
  if (ts->tv_nsec >= 1000000000L) {
    ts->tv_sec++;
    ts->tv_nsec -= 1000000000L;
  }
}

/* Files a wait: returns WORD_OK and fills w, RES_NOT_EQUAL when the word holds
 * another value, or a negative WORD_* code. Needs no registry lock, for the
 * reasons futex_wait_js gives: the view is this thread's (locate() finds no
 * other), only this thread unmaps it, and the call's arguments keep its
 * buffer alive, so it stays mapped until the call returns. A wait on `fr` is
 * filed as in the kernel already: no notify of this process looks for it in
 * the table (it leaves such waits to the kernel), and the caller submits it
 * before it returns, as the standard's waiter is waiting once waitAsync()
 * has returned. */
static int begin_wait(napi_env env, napi_value ta, double index, uint32_t value, double timeout_ms,
                      struct waiter *w, struct fring *fr) {
  struct word wd;
  int rc = locate(env, ta, index, &wd);
  if (rc != WORD_OK) return rc;
  memset(w, 0, sizeof *w);
  w->addr = wd.addr;
  w->dev = wd.dev;
  w->ino = wd.ino;
  w->off = wd.off;
  w->expected = value;
  w->fr = fr;
  /* Beyond ~31 years a deadline is no deadline. */
  if (timeout_ms < 1e12) {
    w->timed = 1;
    deadline_after(timeout_ms, &w->deadline);
  }
  pthread_mutex_lock(&table_lock);
  /* The mapping is open and this is its environment's thread: the read is safe. */
  uint32_t now = atomic_load((_Atomic uint32_t *)wd.addr);
  if (now != value) {
    pthread_mutex_unlock(&table_lock);
    return RES_NOT_EQUAL;
  }
  w->result = RES_WAITING;
  w->busy = 1;
  w->in_kernel = fr != NULL;
  w->id = next_id++;
  table_insert(w);
  pthread_mutex_unlock(&table_lock);
  return WORD_OK;
}

/* An environment's teardown drops a wait unsettled (no JS is left to settle
 * it); on its JS thread, in a cleanup hook, where references may still go. */
static void drop_unsettled(napi_env env, struct waiter *w) {
  if (w->array != NULL) napi_delete_reference(env, w->array);
  free(w);
}

/* Under table_lock: the waiter no longer touches its address. */
static void end_busy_locked(struct waiter *w) {
  w->busy = 0;
  pthread_cond_broadcast(&table_cond);
}

/* ---- the JS functions -------------------------------------------------- */

static int get_double(napi_env env, napi_value v, double *out) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    cowshm_throw_type(env, "cowshm internal error: expected a number");
    return 0;
  }
  return 1;
}

/* Whether the JS thread may still run JS: false once worker.terminate() (or
 * process exit in a worker) has been asked for. */
static int can_run_js(napi_env env, struct fenv *fe) {
  napi_value fn, global, result;
  if (fe == NULL || fe->noop == NULL) return 1;
  if (napi_get_reference_value(env, fe->noop, &fn) != napi_ok || fn == NULL) return 1;
  if (napi_get_global(env, &global) != napi_ok) return 0;
  return napi_call_function(env, global, fn, 0, NULL, &result) == napi_ok;
}

/* The JS functions are made with their environment's state as their data:
 * no lookup on the way to a wait or a wake. Also checks that `want` of the
 * `room` arguments were given, as cowshm_args does. */
static int futex_args(napi_env env, napi_callback_info info, size_t want, size_t room, napi_value *argv,
                      struct fenv **fe) {
  void *data = NULL;
  if (!cowshm_args_data(env, info, want, room, argv, &data)) return 0;
  *fe = data;
  return 1;
}

/* How one blocking sleep in the kernel ended. */
static int sleep_blocking(uintptr_t addr, uint32_t expected, const struct timespec *until) {
  long r = syscall(SYS_futex, (void *)addr, FUTEX_WAIT_BITSET, expected, until, NULL, FUTEX_BITSET_MATCH_ANY);
  if (r == 0) return S_WORD;
  int err = errno;
  if (err == EAGAIN) return S_CHANGED;
  if (err == ETIMEDOUT) return S_DEADLINE;
  if (err == EFAULT) return S_FAULT;
  return S_AGAIN; /* EINTR */
}

/* futexWait(ta, index, value, timeoutMs) -> result index (1 ok, 2 not-equal,
 * 3 timed-out, 7 the word's page is gone: the region was truncated), or a
 * negative WORD_* code for TS to explain. Blocks the calling thread; in a
 * worker, wakes every 200 ms to see whether it is being terminated (a native
 * call cannot be interrupted otherwise).
 *
 * A blocking wait is not filed in the table, and sleeps on the region's word
 * alone, as a C program's FUTEX_WAIT does. Nothing needs to find it there:
 *  - a notify of this process leaves to the kernel every waiter that is in
 *    it, and this one is in it from the moment the kernel compared the word.
 *    Before that, no JS of this thread can run (the call has not returned),
 *    and another thread's notify cannot tell this wait from one that has not
 *    begun: the wait begins, as the standard's would, when the kernel
 *    compares the word and queues it, atomically;
 *  - its view can be unmapped only by this thread (views belong to their
 *    environment: close(), the environment's end, and the finalizers of the
 *    buffer, which this call's arguments keep alive), and this thread is
 *    here; an environment's end asked for from another thread (terminate())
 *    is seen at the next slice;
 *  - an abort is for async waits.
 * The address stays mapped for the whole call, so passing it to the kernel
 * (which reads the word when it queues the wait) is safe; a page truncated
 * away by another process makes that read EFAULT, which ends the wait. */
static napi_value futex_wait_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  struct fenv *fe;
  double index, value_d, timeout_ms;
  if (!futex_args(env, info, 4, 4, argv, &fe) || !get_double(env, argv[1], &index) ||
      !get_double(env, argv[2], &value_d) || !get_double(env, argv[3], &timeout_ms))
    return NULL;
  uint32_t expected = (uint32_t)(int32_t)value_d;
  struct word wd;
  int rc = locate(env, argv[0], index, &wd);
  if (rc != WORD_OK) return cowshm_num(env, rc);
  /* The mapping is open and this is its environment's thread: the read is safe. */
  if (atomic_load((_Atomic uint32_t *)wd.addr) != expected) return cowshm_num(env, RES_NOT_EQUAL);
  /* Beyond ~31 years a deadline is no deadline. */
  struct timespec deadline;
  int timed = timeout_ms < 1e12;
  if (timed) deadline_after(timeout_ms, &deadline);
  /* Only a worker can be terminated under a wait: the process's main thread
   * sleeps without slices (no timer to arm and cancel on every wait). */
  int sliced = fe->worker;
  int result;
  for (;;) {
    const struct timespec *until = timed ? &deadline : NULL;
    struct timespec slice;
    if (sliced) {
      deadline_after(200, &slice);
      if (until == NULL || before(&slice, until)) until = &slice;
    }
    int how = sleep_blocking(wd.addr, expected, until);
    if (how == S_WORD || how == S_CHANGED) {
      result = RES_OK;
      break;
    }
    if (how == S_FAULT) {
      result = RES_FAULT;
      break;
    }
    if (how == S_DEADLINE && until == &deadline) {
      result = RES_TIMED_OUT;
      break;
    }
    if (how == S_DEADLINE && !can_run_js(env, fe))
      return NULL; /* the thread is being terminated: nothing to return to */
  }
  return cowshm_num(env, result);
}

static void *waiter_thread(void *arg) {
  for (;;) {
    pthread_mutex_lock(&table_lock);
    while (jobs_head == NULL) {
      idle_threads++;
      pthread_cond_wait(&job_cond, &table_lock);
      idle_threads--;
    }
    struct waiter *w = jobs_head;
    jobs_head = w->queue_next;
    if (jobs_head == NULL) jobs_tail = NULL;
    w->queue_next = NULL;
    pthread_mutex_unlock(&table_lock);

    wait_in_kernel(w, NULL);

    pthread_mutex_lock(&table_lock);
    table_remove(w);
    struct fenv *fe = w->fe;
    w->queue_next = fe->done;
    fe->done = w;
    int closing = fe->closing;
    /* Still busy: the environment's teardown waits for this call too. */
    pthread_mutex_unlock(&table_lock);
    if (!closing) napi_call_threadsafe_function(fe->tsfn, NULL, napi_tsfn_nonblocking);
    pthread_mutex_lock(&table_lock);
    end_busy_locked(w);
    pthread_mutex_unlock(&table_lock);
  }
  return NULL;
}

/* Under table_lock: hands a job to an idle thread, or starts one. */
static int queue_job_locked(struct waiter *w) {
  w->queue_next = NULL;
  if (jobs_tail != NULL) jobs_tail->queue_next = w;
  else jobs_head = w;
  jobs_tail = w;
  if (idle_threads > 0) {
    pthread_cond_signal(&job_cond);
    return 0;
  }
  pthread_attr_t attr;
  pthread_t t;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  /* Every signal blocked: the thread only sleeps in the kernel, and process
   * signals belong to the JS threads (the new thread inherits this mask). */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int err = pthread_create(&t, &attr, waiter_thread, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    /* Take the job back. */
    struct waiter **p = &jobs_head, *last = NULL;
    while (*p != NULL && *p != w) {
      last = *p;
      p = &(*p)->queue_next;
    }
    if (*p == w) *p = w->queue_next;
    jobs_tail = last;
    if (jobs_head == NULL) jobs_tail = NULL;
    return err;
  }
  return 0;
}

/* ---- async waits as io_uring requests ----------------------------------
 *
 * Where io_uring has IORING_OP_FUTEX_WAIT (Linux 6.7), an async wait is a
 * request on a ring of its environment: the kernel itself queues it on the
 * word (comparing the word as FUTEX_WAIT does) while waitAsync() is still
 * running, a FUTEX_WAKE from any process completes it, and the completion
 * makes the ring's descriptor readable for the event loop (a uv_poll_t). One
 * wake-up of the JS thread per wake, no thread in between. A timeout is a
 * linked IORING_OP_LINK_TIMEOUT, which cancels the request (-ECANCELED).
 *
 * Counting stays exact: a request queued on the word is woken by FUTEX_WAKE
 * and counted by it (the kernel counts io_uring waiters as it counts
 * sleeping threads), so notify() leaves these waiters to the kernel (they
 * are filed `in_kernel` from the start, and submitted before waitAsync()
 * returns: a notify of this thread comes after, one of another thread may
 * as well have come before the wait began). A request is either woken
 * or cancelled, never both (the kernel unqueues it under the hash bucket
 * lock in either case); one that was woken after it had been marked (abort,
 * close) passes the wake on, as a waiter thread does.
 *
 * close(): the kernel reads the word's address only when the request is
 * submitted; afterwards it holds the futex key, not the address. What still
 * needs the address is passing a wake on, so close() cancels the requests on
 * the view's range (IORING_OP_ASYNC_CANCEL) and reaps their completions
 * before it returns. Both the cancellation's and a wake's completion are
 * task work of the submitting thread, which runs before that thread returns
 * from io_uring_enter(2): when close() runs on the ring's own thread (the
 * view's environment, always so far), every completion is in the ring once
 * the cancellation is submitted.
 *
 * Completions reach the ring through task work that interrupts the JS
 * thread's epoll_wait (TWA_SIGNAL, the ring's default mode); libuv retries on
 * EINTR, and restartable syscalls restart.
 *
 * When io_uring is refused (io_uring_disabled=2, seccomp, ENOSYS, a kernel
 * without the op: EINVAL in the probe's completion), or COWSHM_NO_IO_URING=1
 * asks for it, async waits use the waiter threads. */

struct fring {
  struct uring ring;
  uv_poll_t poll;
  pthread_mutex_t lock;       /* every use of `ring`; taken before table_lock */
  pthread_t owner;            /* the environment's JS thread: the task whose requests these are */
  struct fenv *fe;            /* NULL once the environment is gone */
  napi_env env;
  size_t pending;             /* requests not yet settled: the poll handle is referenced while > 0 */
  napi_async_context actx;    /* for settling from the poll callback */
  napi_ref resource;          /* the callback scope's resource object, made once */
  napi_async_cleanup_hook_handle hook;
};

static void settle_list(napi_env env, struct fenv *fe, struct waiter *list, int own_scope);

/* Under fr->lock: takes every completion in the ring. Ends the waits they
 * belong to and puts them on *list (newest first). */
static void ring_reap_locked(struct fring *fr, struct waiter **list) {
  struct io_uring_cqe c;
  for (;;) {
    while (uring_cqe(&fr->ring, &c)) {
      if (c.user_data == 0) continue; /* a cancellation's or a linked timeout's own completion */
      struct waiter *w = (struct waiter *)(uintptr_t)c.user_data;
      pthread_mutex_lock(&table_lock);
      if (c.res == 0) {
        if (w->result == RES_WAITING) w->result = RES_OK;
        /* Woken after it was marked: the wake was meant for another waiter.
         * The address is still mapped (close() reaps before it unmaps),
         * unless the view was closed from another thread (orphan). */
        else if (!w->orphan) sys_futex((void *)w->addr, FUTEX_WAKE, 1, NULL);
      } else if (w->result == RES_WAITING) {
        if (c.res == -EAGAIN) w->result = RES_OK; /* the word changed before the request queued */
        else if (c.res == -ECANCELED) w->result = w->timed ? RES_TIMED_OUT : RES_CLOSED;
        else if (c.res == -EFAULT) w->result = RES_FAULT;
        else {
          w->result = RES_ERROR;
          w->err = -c.res;
        }
      }
      w->in_kernel = 0;
      table_remove(w);
      end_busy_locked(w);
      pthread_mutex_unlock(&table_lock);
      w->queue_next = *list;
      *list = w;
    }
    if (!uring_overflowed(&fr->ring) || uring_submit(&fr->ring, 0) != 0) break; /* flushed: look again */
  }
}

/* Under fr->lock: asks the kernel to cancel w's request (its completion then
 * says -ECANCELED, or 0 if a wake got there first). */
static int ring_cancel_locked(struct fring *fr, struct waiter *w) {
  struct io_uring_sqe *sqe = uring_sqe(&fr->ring);
  if (sqe == NULL) {
    int err = uring_submit(&fr->ring, 0);
    if (err != 0 || (sqe = uring_sqe(&fr->ring)) == NULL) return err ? err : EBUSY;
  }
  sqe->opcode = IORING_OP_ASYNC_CANCEL;
  sqe->fd = -1;
  sqe->addr = (uintptr_t)w;
  sqe->user_data = 0;
  return 0;
}

/* Under fr->lock: submits w's wait (filed by begin_wait). */
static int ring_submit_wait_locked(struct fring *fr, struct waiter *w) {
  struct io_uring_sqe *sqe = uring_sqe(&fr->ring);
  struct io_uring_sqe *timeout = sqe != NULL && w->timed ? uring_sqe(&fr->ring) : NULL;
  if (sqe == NULL || (w->timed && timeout == NULL)) {
    uring_withdraw(&fr->ring);
    return EBUSY; /* cannot happen: nothing stays queued between calls */
  }
  sqe->opcode = COWSHM_IORING_OP_FUTEX_WAIT;
  sqe->fd = COWSHM_FUTEX2_SIZE_U32; /* shared: the kernel keys the word by file and offset */
  sqe->addr = w->addr;
  sqe->off = w->expected;
  sqe->addr3 = COWSHM_FUTEX_BITSET_MATCH_ANY;
  sqe->user_data = (uintptr_t)w;
  if (timeout != NULL) {
    sqe->flags |= IOSQE_IO_LINK;
    w->uring_ts.tv_sec = w->deadline.tv_sec;
    w->uring_ts.tv_nsec = w->deadline.tv_nsec;
    timeout->opcode = IORING_OP_LINK_TIMEOUT;
    timeout->fd = -1;
    timeout->addr = (uintptr_t)&w->uring_ts;
    timeout->len = 1;
    timeout->timeout_flags = IORING_TIMEOUT_ABS; /* CLOCK_MONOTONIC, as w->deadline */
    timeout->user_data = 0;
  }
  return uring_submit(&fr->ring, 0);
}

static void ring_ready(uv_poll_t *h, int status, int events) {
  struct fring *fr = h->data;
  struct waiter *list = NULL;
  pthread_mutex_lock(&fr->lock);
  ring_reap_locked(fr, &list);
  struct fenv *fe = fr->fe;
  pthread_mutex_unlock(&fr->lock);
  if (list != NULL && fe != NULL) settle_list(fe->env, fe, list, 1);
}

static void ring_closed(uv_handle_t *h) {
  struct fring *fr = h->data;
  uring_exit(&fr->ring); /* the kernel cancels what is still queued */
  napi_remove_async_cleanup_hook(fr->hook);
  pthread_mutex_destroy(&fr->lock);
  free(fr);
}

/* A ring that never took a wait (the event loop refused it). */
static void ring_closed_unused(uv_handle_t *h) {
  struct fring *fr = h->data;
  uring_exit(&fr->ring);
  pthread_mutex_destroy(&fr->lock);
  free(fr);
}

/* Environment teardown: its requests are dropped unsettled (no JS is left
 * to settle them) and the ring goes once libuv has let go of the handle. */
static void ring_teardown(napi_async_cleanup_hook_handle hook, void *arg) {
  struct fring *fr = arg;
  pthread_mutex_lock(&fr->lock);
  pthread_mutex_lock(&table_lock);
  for (struct waiter *w = table_head, *n; w != NULL; w = n) {
    n = w->next;
    if (w->fr != fr) continue;
    table_remove(w);
    drop_unsettled(fr->env, w);
  }
  if (fr->fe != NULL) fr->fe->fr = NULL;
  fr->fe = NULL;
  pthread_mutex_unlock(&table_lock);
  /* Off every word now, on this thread (closing the ring would cancel them
   * too, but from a kernel worker, a moment later): a notify from now on
   * counts none of them. */
  struct io_uring_sqe *sqe = uring_sqe(&fr->ring);
  if (sqe != NULL) {
    sqe->opcode = IORING_OP_ASYNC_CANCEL;
    sqe->fd = -1;
    sqe->cancel_flags = IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY;
    sqe->user_data = 0;
    uring_submit(&fr->ring, 0);
  }
  pthread_mutex_unlock(&fr->lock);
  if (fr->actx != NULL) napi_async_destroy(fr->env, fr->actx);
  fr->actx = NULL;
  if (fr->resource != NULL) napi_delete_reference(fr->env, fr->resource);
  fr->resource = NULL;
  uv_close((uv_handle_t *)&fr->poll, ring_closed);
}

/* "WHAT failed with ECODE" (or "errno N" for a code not named here). */
static void say_failed(struct fenv *fe, const char *what, int err) {
  static const struct { int err; const char *name; } names[] = {
      {EPERM, "EPERM"},   {EACCES, "EACCES"}, {ENOSYS, "ENOSYS"}, {EINVAL, "EINVAL"},         {ENOMEM, "ENOMEM"},
      {EMFILE, "EMFILE"}, {ENFILE, "ENFILE"}, {EAGAIN, "EAGAIN"}, {EOPNOTSUPP, "EOPNOTSUPP"},
  };
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    if (names[i].err == err) {
      snprintf(fe->path_reason, sizeof fe->path_reason, "%s failed with %s", what, names[i].name);
      return;
    }
  }
  snprintf(fe->path_reason, sizeof fe->path_reason, "%s failed with errno %d", what, err);
}

/* Decides, once per environment, how its async waits wait. */
static int ring_start(napi_env env, struct fenv *fe) {
  if (fe->path != PATH_UNKNOWN) return fe->path;
  fe->path = PATH_THREADS;
  const char *no = getenv("COWSHM_NO_IO_URING");
  if (no != NULL && *no != '\0' && strcmp(no, "0") != 0) {
    snprintf(fe->path_reason, sizeof fe->path_reason, "COWSHM_NO_IO_URING=%s", no);
    return fe->path;
  }
  struct fring *fr = calloc(1, sizeof *fr);
  if (fr == NULL) {
    snprintf(fe->path_reason, sizeof fe->path_reason, "out of memory for a ring");
    return fe->path;
  }
  int err = uring_init(&fr->ring, 16, 1024);
  if (err != 0) {
    free(fr);
    say_failed(fe, "io_uring_setup(2)", err);
    return fe->path;
  }
  /* The op exists when a wait on a word that differs completes with EAGAIN;
   * kernels without it complete it with EINVAL. */
  uint32_t probe = 1;
  struct io_uring_sqe *sqe = uring_sqe(&fr->ring);
  sqe->opcode = COWSHM_IORING_OP_FUTEX_WAIT;
  sqe->fd = COWSHM_FUTEX2_SIZE_U32 | COWSHM_FUTEX2_PRIVATE;
  sqe->addr = (uintptr_t)&probe;
  sqe->off = 0;
  sqe->addr3 = COWSHM_FUTEX_BITSET_MATCH_ANY;
  sqe->user_data = 1;
  struct io_uring_cqe c = {0};
  err = uring_submit(&fr->ring, 1);
  if (err == 0 && !uring_cqe(&fr->ring, &c)) err = EAGAIN;
  if (err != 0 || c.res != -EAGAIN) {
    uring_exit(&fr->ring);
    free(fr);
    if (err != 0) say_failed(fe, "io_uring_enter(2)", err);
    else say_failed(fe, "IORING_OP_FUTEX_WAIT (Linux 6.7)", -c.res);
    return fe->path;
  }
  uv_loop_t *loop;
  napi_value name;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok ||
      napi_create_string_utf8(env, "cowshm waitAsync", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &fr->actx) != napi_ok || uv_poll_init(loop, &fr->poll, fr->ring.fd) != 0) {
    uring_exit(&fr->ring);
    free(fr);
    snprintf(fe->path_reason, sizeof fe->path_reason, "the event loop refused the ring");
    return fe->path;
  }
  fr->poll.data = fr;
  pthread_mutex_init(&fr->lock, NULL);
  fr->owner = pthread_self();
  fr->fe = fe;
  fr->env = env;
  if (uv_poll_start(&fr->poll, UV_READABLE, ring_ready) != 0) {
    /* The handle is initialised: libuv must let go of it before the ring goes. */
    uv_close((uv_handle_t *)&fr->poll, ring_closed_unused);
    napi_async_destroy(env, fr->actx);
    snprintf(fe->path_reason, sizeof fe->path_reason, "the event loop refused the ring");
    return fe->path;
  }
  uv_unref((uv_handle_t *)&fr->poll);
  napi_value resource;
  if (napi_create_object(env, &resource) != napi_ok || napi_create_reference(env, resource, 1, &fr->resource) != napi_ok)
    fr->resource = NULL; /* settles then run no callback scope of their own: see settle_list */
  napi_add_async_cleanup_hook(env, ring_teardown, fr, &fr->hook);
  fe->fr = fr;
  fe->path = PATH_RING;
  snprintf(fe->path_reason, sizeof fe->path_reason, "io_uring (IORING_OP_FUTEX_WAIT)");
  return fe->path;
}

/* Under the registry lock: ends (ERR_COWSHM_CLOSED) the requests of `fr` on
 * the slot's range and, on the ring's own thread, reaps their completions
 * (see above). Requests it could not reap are orphaned: they settle later
 * but never touch the address again. */
static void ring_close_range(struct fring *fr, struct cowshm_slot *s) {
  pthread_mutex_lock(&fr->lock);
  pthread_mutex_lock(&table_lock);
  for (struct waiter *w = table_head; w != NULL; w = w->next) {
    if (w->fr != fr || w->orphan || w->addr < s->start || w->addr - s->start >= s->len) continue;
    finish_locked(w, RES_CLOSED);
    ring_cancel_locked(fr, w); /* again if aborted already: the kernel says ENOENT */
  }
  pthread_mutex_unlock(&table_lock);
  uring_submit(&fr->ring, 0);
  struct waiter *list = NULL;
  if (pthread_equal(fr->owner, pthread_self())) ring_reap_locked(fr, &list);
  struct fenv *fe = fr->fe;
  pthread_mutex_lock(&table_lock);
  for (struct waiter *w = table_head; w != NULL; w = w->next)
    if (w->fr == fr && w->addr >= s->start && w->addr - s->start < s->len) w->orphan = 1;
  /* To settle from the JS thread, with the waiter threads' results. */
  while (list != NULL) {
    struct waiter *n = list->queue_next;
    if (fe != NULL) {
      list->queue_next = fe->done;
      fe->done = list;
    } else {
      free(list);
    }
    list = n;
  }
  int call = fe != NULL && fe->done != NULL && !fe->closing;
  pthread_mutex_unlock(&table_lock);
  pthread_mutex_unlock(&fr->lock);
  if (call) napi_call_threadsafe_function(fe->tsfn, NULL, napi_tsfn_nonblocking);
}

/* ---- settling ---------------------------------------------------------- */

/* A settled wait no longer keeps the event loop alive. */
static void settled_one(napi_env env, struct fenv *fe, struct waiter *w) {
  if (w->fr != NULL) {
    if (w->fr->pending > 0 && --w->fr->pending == 0) uv_unref((uv_handle_t *)&w->fr->poll);
  } else if (fe->pending_threads > 0 && --fe->pending_threads == 0) {
    napi_unref_threadsafe_function(env, fe->tsfn);
  }
  if (fe->pending > 0) fe->pending--;
  waiter_free(fe, w);
}

/* EFAULT (syscall 'futex') with the sentence atomics.wait (src/atomics.ts)
 * adds to it, in `*out`: 1, or 0 when not even the error could be made. */
static int fault_error(napi_env env, napi_value *out) {
  static const char why[] = " (the word's page is no longer in the region's file: it was truncated)";
  char msg[256];
  size_t len = 0;
  napi_value m;
  cowshm_throw_errno(env, EFAULT, "futex", NULL);
  if (napi_get_and_clear_last_exception(env, out) != napi_ok) return 0;
  if (napi_get_named_property(env, *out, "message", &m) == napi_ok &&
      napi_get_value_string_utf8(env, m, msg, sizeof msg - sizeof why, &len) == napi_ok) {
    memcpy(msg + len, why, sizeof why);
    if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m) == napi_ok)
      napi_set_named_property(env, *out, "message", m);
  }
  return 1;
}

/* Settles the wait's promise. A `final` wait's with what waitAsync's caller
 * gets: 'ok' or 'timed-out', or a rejection (ERR_COWSHM_CLOSED, the kernel's
 * error), so that no reaction of cowshm's own runs between this and the
 * caller's: one promise hop per wake. The others' (the locks', and waits
 * with an AbortSignal) with the result's name ('closed', 'aborted' too) for
 * their caller to turn into its own error. The kernel's errors reject both:
 * EFAULT as atomics.wait throws it, anything else as io_uring_enter's. */
static void settle(napi_env env, struct fenv *fe, struct waiter *w) {
  napi_value v;
  if (w->array != NULL) napi_delete_reference(env, w->array);
  w->array = NULL;
  if (w->result == RES_FAULT) {
    if (fault_error(env, &v)) napi_reject_deferred(env, w->deferred, v);
    return;
  }
  if (w->result == RES_ERROR || (w->final && w->result == RES_CLOSED)) {
    if (w->result == RES_ERROR) cowshm_throw_errno(env, w->err, "io_uring_enter", NULL);
    else cowshm_throw_code(env, "ERR_COWSHM_CLOSED", "The view this wait was on is closed");
    if (napi_get_and_clear_last_exception(env, &v) == napi_ok) napi_reject_deferred(env, w->deferred, v);
    return;
  }
  napi_value names;
  if ((fe->names != NULL && napi_get_reference_value(env, fe->names, &names) == napi_ok && names != NULL &&
       napi_get_element(env, names, (uint32_t)w->result, &v) == napi_ok) ||
      napi_create_string_utf8(env, result_names[w->result], NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_resolve_deferred(env, w->deferred, v);
}

/* Settles `list` (newest first) oldest first, as the waits were filed. From
 * a libuv callback (own_scope) it opens the scope that runs the promise
 * reactions when it closes. */
static void settle_list(napi_env env, struct fenv *fe, struct waiter *list, int own_scope) {
  struct waiter *rev = NULL;
  while (list != NULL) {
    struct waiter *n = list->queue_next;
    list->queue_next = rev;
    rev = list;
    list = n;
  }
  napi_handle_scope outer = NULL;
  napi_callback_scope cb = NULL;
  if (own_scope && napi_open_handle_scope(env, &outer) == napi_ok) {
    napi_value resource;
    if (fe->fr == NULL || napi_get_reference_value(env, fe->fr->resource, &resource) != napi_ok ||
        resource == NULL || napi_open_callback_scope(env, resource, fe->fr->actx, &cb) != napi_ok)
      cb = NULL;
  }
  int one = rev != NULL && rev->queue_next == NULL; /* the usual case: no scope per wait */
  while (rev != NULL) {
    struct waiter *n = rev->queue_next;
    napi_handle_scope scope = NULL;
    if (one || napi_open_handle_scope(env, &scope) == napi_ok) {
      settle(env, fe, rev);
      if (scope != NULL) napi_close_handle_scope(env, scope);
    }
    settled_one(env, fe, rev);
    rev = n;
  }
  if (cb != NULL) napi_close_callback_scope(env, cb);
  if (outer != NULL) napi_close_handle_scope(env, outer);
}

/* Settles every finished wait of the environment on its done list (its JS thread). */
static void drain(napi_env env, struct fenv *fe) {
  pthread_mutex_lock(&table_lock);
  struct waiter *list = fe->done;
  fe->done = NULL;
  /* Threads that put a wait on the list may still be returning from the
   * threadsafe call: wait until they let go of it. */
  for (struct waiter *w = list; w != NULL; w = w->queue_next)
    while (w->busy) pthread_cond_wait(&table_cond, &table_lock);
  pthread_mutex_unlock(&table_lock);
  settle_list(env, fe, list, 0);
}

static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  if (env == NULL) return; /* being torn down: the cleanup hook frees the waits */
  drain(env, context);
}

/* futexWaitAsync(ta, index, value, timeoutMs, final?) -> with final === true
 * the promise, which resolves 'ok' or 'timed-out' and rejects with
 * ERR_COWSHM_CLOSED when the view is closed; otherwise [promise, id], the
 * promise resolving 'ok', 'timed-out', 'closed' or (after futexCancel(id))
 * 'aborted'. Either rejects with EFAULT (syscall 'futex') when the word's
 * page is gone (the region was truncated). Or a number: 2 not-equal, or a
 * negative WORD_* code. */
static napi_value futex_wait_async_js(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  struct fenv *fe;
  double index, value_d, timeout_ms;
  bool final = false;
  if (!futex_args(env, info, 4, 5, argv, &fe) || !get_double(env, argv[1], &index) ||
      !get_double(env, argv[2], &value_d) || !get_double(env, argv[3], &timeout_ms))
    return NULL;
  /* A fifth argument that is not `true` (none: undefined) asks for the [promise, id] form. */
  if (napi_get_value_bool(env, argv[4], &final) != napi_ok) final = false;
  if (fe->closing) return cowshm_throw_type(env, "cowshm: this environment is shutting down");
  struct fring *fr = ring_start(env, fe) == PATH_RING ? fe->fr : NULL;
  struct waiter *w = waiter_new(fe);
  if (w == NULL) return cowshm_throw_errno(env, ENOMEM, "futex", NULL);
  napi_ref array;
  if (napi_create_reference(env, argv[0], 1, &array) != napi_ok) {
    waiter_free(fe, w);
    return cowshm_num(env, WORD_TYPE); /* not an object: not an Int32Array */
  }
  napi_value promise, pair, idv;
  int rc = begin_wait(env, argv[0], index, (uint32_t)(int32_t)value_d, timeout_ms, w, fr);
  if (rc != WORD_OK) {
    napi_delete_reference(env, array);
    waiter_free(fe, w);
    return cowshm_num(env, rc);
  }
  w->fe = fe;
  w->array = array;
  w->final = final;
  if (napi_create_promise(env, &w->deferred, &promise) != napi_ok) {
    pthread_mutex_lock(&table_lock);
    table_remove(w);
    pthread_mutex_unlock(&table_lock);
    napi_delete_reference(env, array);
    waiter_free(fe, w);
    cowshm_throw_napi_failure(env, "napi_create_promise", __FILE__, __LINE__);
    return NULL;
  }
  int err = 0;
  if (fr != NULL) {
    pthread_mutex_lock(&fr->lock);
    err = ring_submit_wait_locked(fr, w);
    pthread_mutex_unlock(&fr->lock);
    if (err != 0) {
      /* The ring refused this one (out of memory in the kernel, say): a thread waits for it. */
      pthread_mutex_lock(&table_lock);
      w->fr = NULL;
      atomic_fetch_add(&thread_waits, 1);
      w->in_kernel = 0;
      pthread_mutex_unlock(&table_lock);
    }
  }
  if (w->fr == NULL) {
    pthread_mutex_lock(&table_lock);
    err = queue_job_locked(w);
    if (err != 0) table_remove(w);
    pthread_mutex_unlock(&table_lock);
  }
  if (err != 0) {
    napi_value e = NULL;
    cowshm_throw_errno(env, err, "pthread_create", NULL);
    napi_get_and_clear_last_exception(env, &e);
    napi_reject_deferred(env, w->deferred, e);
    napi_delete_reference(env, array);
    waiter_free(fe, w);
    return promise; /* rejected: TS passes it on as it is */
  }
  fe->pending++;
  if (w->fr != NULL) {
    if (fr->pending++ == 0) uv_ref((uv_handle_t *)&fr->poll);
  } else if (fe->pending_threads++ == 0) {
    napi_ref_threadsafe_function(env, fe->tsfn);
  }
  /* Only the others need the id (to cancel the wait). */
  if (final) return promise;
  NAPI_OK(env, napi_create_array_with_length(env, 2, &pair));
  NAPI_OK(env, napi_create_double(env, w->id, &idv));
  NAPI_OK(env, napi_set_element(env, pair, 0, promise));
  NAPI_OK(env, napi_set_element(env, pair, 1, idv));
  return pair;
}

/* futexCancel(id): an AbortSignal fired; the wait's promise resolves 'aborted'. */
static napi_value futex_cancel_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct fenv *fe;
  double id;
  if (!futex_args(env, info, 1, 1, argv, &fe) || !get_double(env, argv[0], &id)) return NULL;
  struct fring *fr = fe->fr;
  if (fr != NULL) pthread_mutex_lock(&fr->lock);
  pthread_mutex_lock(&table_lock);
  struct waiter *request = NULL;
  for (struct waiter *w = table_head; w != NULL; w = w->next) {
    if (w->fe != fe || w->id != id || w->result != RES_WAITING) continue;
    finish_locked(w, RES_ABORTED);
    if (w->fr != NULL) request = w;
  }
  pthread_mutex_unlock(&table_lock);
  /* Its completion (-ECANCELED, or 0 if a wake came first) makes the ring
   * readable: the promise settles from the poll callback. If even the
   * cancellation cannot be submitted, the wait ends at its wake or timeout. */
  if (request != NULL && ring_cancel_locked(fr, request) == 0) uring_submit(&fr->ring, 0);
  if (fr != NULL) pthread_mutex_unlock(&fr->lock);
  return cowshm_undefined(env);
}

/* futexWake(ta, index, count) -> how many waiters were woken (or a negative
 * WORD_* code). This process's waiters first, oldest first; the rest of
 * `count` through the kernel, for other processes. */
static napi_value futex_wake_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  double index, count_d;
  if (!cowshm_args(env, info, 3, argv) || !get_double(env, argv[1], &index) || !get_double(env, argv[2], &count_d))
    return NULL;
  struct word wd;
  int rc = locate(env, argv[0], index, &wd);
  if (rc != WORD_OK) return cowshm_num(env, rc);
  uint64_t count = count_d >= (double)INT_MAX ? INT_MAX : (uint64_t)count_d;
  uint64_t woken = 0;
  /* Only waits on waiter threads can be filed and not yet in the kernel.
   * One filed before this call (in this thread, or in one that told this
   * one so) is counted here; one filed concurrently may as well have begun
   * after this notify, as on io_uring, whose requests the kernel queues. */
  if (atomic_load(&thread_waits) > 0) {
    pthread_mutex_lock(&table_lock);
    for (struct waiter *w = table_head; w != NULL && woken < count; w = w->next) {
      if (w->result == RES_WAITING && !w->in_kernel && w->off == wd.off && w->ino == wd.ino && w->dev == wd.dev) {
        finish_locked(w, RES_OK);
        woken++;
      }
    }
    pthread_mutex_unlock(&table_lock);
  }
  if (woken < count) {
    /* The view is this thread's: it stays mapped for the whole call. */
    long n = sys_futex((void *)wd.addr, FUTEX_WAKE, (uint32_t)(count - woken), NULL);
    if (n < 0) return cowshm_throw_errno(env, errno, "futex", NULL);
    woken += (uint64_t)n;
  }
  return cowshm_num(env, (double)woken);
}

/* futexWord(ta, index) -> the mapping's access (0 read, 1 write) or a negative WORD_* code. */
static napi_value futex_word_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  double index;
  if (!cowshm_args(env, info, 2, argv) || !get_double(env, argv[1], &index)) return NULL;
  struct word wd;
  cowshm_registry_lock();
  int rc = locate_locked(env, argv[0], index, &wd);
  cowshm_registry_unlock();
  return cowshm_num(env, rc == WORD_OK ? wd.access : rc);
}

/* futexPath() -> [how this environment's async waits wait: 'io_uring' or
 * 'threads', why]. Decides it if no wait has yet. */
static napi_value futex_path_js(napi_env env, napi_callback_info info) {
  struct fenv *fe;
  if (!futex_args(env, info, 0, 0, NULL, &fe)) return NULL;
  if (fe->closing) return cowshm_throw_type(env, "cowshm: this environment is shutting down");
  int path = ring_start(env, fe);
  napi_value pair, a, b;
  NAPI_OK(env, napi_create_array_with_length(env, 2, &pair));
  NAPI_OK(env, napi_create_string_utf8(env, path == PATH_RING ? "io_uring" : "threads", NAPI_AUTO_LENGTH, &a));
  NAPI_OK(env, napi_create_string_utf8(env, fe->path_reason, NAPI_AUTO_LENGTH, &b));
  NAPI_OK(env, napi_set_element(env, pair, 0, a));
  NAPI_OK(env, napi_set_element(env, pair, 1, b));
  return pair;
}

/* futexPending() -> waits of this environment not settled yet (for tests). */
static napi_value futex_pending_js(napi_env env, napi_callback_info info) {
  struct fenv *fe;
  if (!futex_args(env, info, 0, 0, NULL, &fe)) return NULL;
  return cowshm_num(env, (double)fe->pending);
}

/* Under the registry lock, before a mapping goes: end the waits on it and
 * wait until no thread passes its addresses to the kernel any more. */
void cowshm_futex_on_unmap(struct cowshm_slot *s) {
  /* Requests of a ring: cancelled and reaped (or orphaned) by it. */
  for (;;) {
    struct fring *fr = NULL;
    pthread_mutex_lock(&table_lock);
    for (struct waiter *w = table_head; w != NULL && fr == NULL; w = w->next)
      if (w->fr != NULL && !w->orphan && w->addr >= s->start && w->addr - s->start < s->len) fr = w->fr;
    pthread_mutex_unlock(&table_lock);
    if (fr == NULL) break;
    ring_close_range(fr, s);
  }
  pthread_mutex_lock(&table_lock);
  for (;;) {
    int busy = 0;
    for (struct waiter *w = table_head; w != NULL; w = w->next) {
      if (w->fr != NULL || w->addr < s->start || w->addr - s->start >= s->len) continue;
      finish_locked(w, RES_CLOSED);
      busy |= w->busy;
    }
    if (!busy) break;
    pthread_cond_wait(&table_cond, &table_lock);
  }
  pthread_mutex_unlock(&table_lock);
}

/* ---- per-environment state -------------------------------------------- */

static void fenv_finalize(napi_env env, void *data, void *hint) { free(data); }

/* Environment teardown: end this environment's waits, wait until no thread
 * holds one, and drop them unsettled (there is no JS left to settle them). */
static void fenv_cleanup(void *arg) {
  struct fenv *fe = arg;
  /* The ring's own hook (registered later, so run earlier) drops its
   * requests; should it not have run yet, it must not reach back here. */
  struct fring *fr = fe->fr;
  if (fr != NULL) {
    pthread_mutex_lock(&fr->lock);
    fr->fe = NULL;
    pthread_mutex_unlock(&fr->lock);
  }
  pthread_mutex_lock(&table_lock);
  fe->closing = 1;
  /* Jobs no thread has taken yet. */
  for (struct waiter **p = &jobs_head; *p != NULL;) {
    struct waiter *w = *p;
    if (w->fe == fe) {
      *p = w->queue_next;
      table_remove(w);
      w->busy = 0;
      drop_unsettled(fe->env, w);
    } else {
      p = &w->queue_next;
    }
  }
  jobs_tail = NULL;
  for (struct waiter *w = jobs_head; w != NULL; w = w->queue_next) jobs_tail = w;
  for (;;) {
    int busy = 0;
    for (struct waiter *w = table_head; w != NULL; w = w->next) {
      if (w->fe != fe || w->fr != NULL) continue;
      finish_locked(w, RES_CLOSED);
      busy |= w->busy;
    }
    for (struct waiter *w = fe->done; w != NULL; w = w->queue_next) busy |= w->busy;
    if (!busy) break;
    pthread_cond_wait(&table_cond, &table_lock);
  }
  struct waiter *list = fe->done;
  fe->done = NULL;
  pthread_mutex_unlock(&table_lock);
  while (list != NULL) {
    struct waiter *n = list->queue_next;
    drop_unsettled(fe->env, list);
    list = n;
  }
  if (fe->noop != NULL) napi_delete_reference(fe->env, fe->noop);
  fe->noop = NULL;
  if (fe->names != NULL) napi_delete_reference(fe->env, fe->names);
  fe->names = NULL;
  while (fe->spare != NULL) {
    struct waiter *w = fe->spare;
    fe->spare = w->queue_next;
    free(w);
  }
  fe->spares = 0;
  napi_release_threadsafe_function(fe->tsfn, napi_tsfn_abort); /* fenv_finalize frees fe */
}

static napi_value noop_js(napi_env env, napi_callback_info info) { return NULL; }

napi_value cowshm_init_futex(napi_env env, napi_value exports) {
  struct fenv *fe = calloc(1, sizeof *fe);
  if (fe == NULL) return cowshm_throw_errno(env, ENOMEM, "malloc", NULL);
  fe->env = env;
  napi_value name, noop;
  NAPI_OK(env, napi_create_string_utf8(env, "cowshm futex", NAPI_AUTO_LENGTH, &name));
  if (napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, fenv_finalize, fe, call_js, &fe->tsfn) !=
      napi_ok) {
    free(fe);
    cowshm_throw_napi_failure(env, "napi_create_threadsafe_function", __FILE__, __LINE__);
    return NULL;
  }
  napi_unref_threadsafe_function(env, fe->tsfn);
  NAPI_OK(env, napi_create_function(env, "noop", NAPI_AUTO_LENGTH, noop_js, NULL, &noop));
  NAPI_OK(env, napi_create_reference(env, noop, 1, &fe->noop));
  napi_value names;
  NAPI_OK(env, napi_create_array_with_length(env, sizeof result_names / sizeof *result_names, &names));
  for (uint32_t i = 0; i < sizeof result_names / sizeof *result_names; i++) {
    napi_value v;
    NAPI_OK(env, napi_create_string_utf8(env, result_names[i], NAPI_AUTO_LENGTH, &v));
    NAPI_OK(env, napi_set_element(env, names, i, v));
  }
  NAPI_OK(env, napi_create_reference(env, names, 1, &fe->names));
  /* This runs on the environment's own thread. */
  fe->worker = syscall(SYS_gettid) != getpid();
  NAPI_OK(env, napi_add_env_cleanup_hook(env, fenv_cleanup, fe));

  napi_property_descriptor props[] = {
      {"futexWait", NULL, futex_wait_js, NULL, NULL, NULL, napi_enumerable, fe},
      {"futexWaitAsync", NULL, futex_wait_async_js, NULL, NULL, NULL, napi_enumerable, fe},
      {"futexCancel", NULL, futex_cancel_js, NULL, NULL, NULL, napi_enumerable, fe},
      {"futexWake", NULL, futex_wake_js, NULL, NULL, NULL, napi_enumerable, fe},
      {"futexWord", NULL, futex_word_js, NULL, NULL, NULL, napi_enumerable, fe},
      {"futexPending", NULL, futex_pending_js, NULL, NULL, NULL, napi_enumerable, fe},
      {"futexPath", NULL, futex_path_js, NULL, NULL, NULL, napi_enumerable, fe},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
