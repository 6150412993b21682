/* Waiting and waking on a word of a shared mapping, across processes.
 *
 * A futex on a MAP_SHARED mapping of a shmem/memfd/file region is keyed by
 * the kernel by file page and offset, so two processes that mapped the same
 * region at different addresses wait on the same word. Only the shared ops
 * are used on region words (never FUTEX_PRIVATE_FLAG).
 *
 * Every wait of this process is also filed in one process-wide table (under
 * `table_lock`), for three reasons the kernel cannot serve:
 *  - notify() from this process must reach a waitAsync() of this process that
 *    has returned but whose thread is not yet inside the kernel. Each waiter
 *    sleeps in futex_waitv() on two words: its own private `cancel` word
 *    (first) and the region's word. notify() first wakes, oldest first, the
 *    waiters of this process that are not in the kernel: it marks them and
 *    sets `cancel`, which they cannot miss (futex_waitv checks `cancel`
 *    before it queues on the region's word). The rest of `count` goes to the
 *    kernel, which wakes the waiters queued on the word, of this process and
 *    of others, in the order they queued; each is woken once and counted
 *    once, so the total is exact. (Marking a waiter that is in the kernel
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
 * Async waits sleep on threads of their own, never on libuv's pool: a
 * process-wide set of waiter threads, one per pending wait, kept when idle so
 * a wait costs a condition-variable handoff, not a thread creation. The
 * result reaches JavaScript through one threadsafe function per environment,
 * referenced only while that environment has waits pending.
 *
 * The kernel compares the word again whenever a waiter (re)enters it: if the
 * word no longer holds the expected value by then, the wait ends with 'ok'
 * (the word changed, which is what waiters wait for). A notify from another
 * process that changes nothing and lands in the microseconds between a
 * waitAsync() call and its thread entering the kernel is not seen; notifiers
 * change the word before they notify, as every futex user does.
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

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

enum { RES_WAITING = 0, RES_OK, RES_NOT_EQUAL, RES_TIMED_OUT, RES_CLOSED, RES_ABORTED };
/* What JS receives for each result, as an index into this list. */
static const char *const result_names[] = {"waiting", "ok", "not-equal", "timed-out", "closed", "aborted"};

struct fenv;

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
  double id;
  struct waiter *queue_next;  /* jobs not yet taken by a thread; then the environment's done list */
};

/* Per environment: its threadsafe function and the waits to settle. */
struct fenv {
  napi_env env;
  napi_threadsafe_function tsfn;
  size_t pending;              /* async waits not yet settled (JS thread only) */
  struct waiter *done;         /* finished, to settle on the JS thread (under table_lock) */
  int closing;
  napi_ref noop;               /* a JS function: calling it tells whether the thread is being terminated */
  struct fenv *next;
};

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t table_cond = PTHREAD_COND_INITIALIZER; /* a waiter stopped being busy */
static pthread_cond_t job_cond = PTHREAD_COND_INITIALIZER;   /* a job was queued */
static struct waiter *table_head, *table_tail;
static struct waiter *jobs_head, *jobs_tail;
static size_t idle_threads;
static double next_id = 1;
static _Atomic int have_waitv = -1; /* futex_waitv(2) (Linux 5.16): -1 not known yet */
static struct fenv *fenvs; /* every environment's state, under table_lock */

static long sys_futex(void *addr, int op, uint32_t val, const struct timespec *ts) {
  return syscall(SYS_futex, addr, op, val, ts, NULL, 0);
}

static void table_insert(struct waiter *w) {
  w->prev = table_tail;
  w->next = NULL;
  if (table_tail != NULL) table_tail->next = w;
  else table_head = w;
  table_tail = w;
}

static void table_remove(struct waiter *w) {
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
      else if (how == S_FAULT) w->result = RES_CLOSED;
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

/* Finds the mapping that holds ta[index] and the word's identity in the
 * region. Call with the registry lock held. */
static int locate_locked(napi_env env, napi_value ta, double index, struct word *out) {
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (napi_get_typedarray_info(env, ta, &type, &length, &data, NULL, NULL) != napi_ok || type != napi_int32_array)
    return WORD_TYPE;
  if (!(index >= 0) || index >= (double)length) return WORD_RANGE;
  uintptr_t addr = (uintptr_t)data + (uintptr_t)index * 4;
  if (addr % 4 != 0) return WORD_TYPE;
  struct cowshm_slot *s = cowshm_slot_find(addr);
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
 * another value, or a negative WORD_* code. */
static int begin_wait(napi_env env, napi_value ta, double index, uint32_t value, double timeout_ms,
                      struct waiter *w) {
  struct word wd;
  cowshm_registry_lock();
  int rc = locate_locked(env, ta, index, &wd);
  if (rc != WORD_OK) {
    cowshm_registry_unlock();
    return rc;
  }
  memset(w, 0, sizeof *w);
  w->addr = wd.addr;
  w->dev = wd.dev;
  w->ino = wd.ino;
  w->off = wd.off;
  w->expected = value;
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
    cowshm_registry_unlock();
    return RES_NOT_EQUAL;
  }
  w->result = RES_WAITING;
  w->busy = 1;
  table_insert(w);
  pthread_mutex_unlock(&table_lock);
  cowshm_registry_unlock();
  return WORD_OK;
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

static struct fenv *fenv_of(napi_env env);

/* futexWait(ta, index, value, timeoutMs) -> result index (1 ok, 2 not-equal,
 * 3 timed-out), or a negative WORD_* code for TS to explain. Blocks the
 * calling thread; wakes every 200 ms to see whether its worker is being
 * terminated (a native call cannot be interrupted otherwise). */
static napi_value futex_wait_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  double index, value_d, timeout_ms;
  if (!cowshm_args(env, info, 4, argv) || !get_double(env, argv[1], &index) || !get_double(env, argv[2], &value_d) ||
      !get_double(env, argv[3], &timeout_ms))
    return NULL;
  struct waiter w;
  int rc = begin_wait(env, argv[0], index, (uint32_t)(int32_t)value_d, timeout_ms, &w);
  if (rc != WORD_OK) return cowshm_num(env, rc);
  struct fenv *fe = fenv_of(env);
  int result;
  for (;;) {
    struct timespec slice;
    deadline_after(200, &slice);
    result = wait_in_kernel(&w, &slice);
    if (result != RES_WAITING) break;
    if (!can_run_js(env, fe)) {
      result = RES_ABORTED;
      break;
    }
  }
  pthread_mutex_lock(&table_lock);
  table_remove(&w);
  end_busy_locked(&w);
  pthread_mutex_unlock(&table_lock);
  if (result == RES_ABORTED) return NULL; /* the thread is being terminated: nothing to return to */
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

static napi_value settle(napi_env env, struct waiter *w);

/* Settles every finished async wait of the environment (its JS thread). */
static void drain(napi_env env, struct fenv *fe) {
  pthread_mutex_lock(&table_lock);
  struct waiter *list = fe->done;
  fe->done = NULL;
  /* Threads that put a wait on the list may still be returning from the
   * threadsafe call: wait until they let go of it. */
  for (struct waiter *w = list; w != NULL; w = w->queue_next)
    while (w->busy) pthread_cond_wait(&table_cond, &table_lock);
  pthread_mutex_unlock(&table_lock);
  /* Oldest first, as they were filed (the list is newest first). */
  struct waiter *rev = NULL;
  while (list != NULL) {
    struct waiter *n = list->queue_next;
    list->queue_next = rev;
    rev = list;
    list = n;
  }
  while (rev != NULL) {
    struct waiter *n = rev->queue_next;
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) == napi_ok) {
      settle(env, rev);
      napi_close_handle_scope(env, scope);
    }
    free(rev);
    if (fe->pending > 0 && --fe->pending == 0) napi_unref_threadsafe_function(env, fe->tsfn);
    rev = n;
  }
}

static napi_value settle(napi_env env, struct waiter *w) {
  napi_value v;
  if (napi_create_string_utf8(env, result_names[w->result], NAPI_AUTO_LENGTH, &v) == napi_ok)
    napi_resolve_deferred(env, w->deferred, v);
  return NULL;
}

static void call_js(napi_env env, napi_value js_cb, void *context, void *data) {
  if (env == NULL) return; /* being torn down: the cleanup hook frees the waits */
  drain(env, context);
}

/* futexWaitAsync(ta, index, value, timeoutMs) -> [promise, id] or a number
 * (2 not-equal, or a negative WORD_* code). The promise resolves with 'ok',
 * 'timed-out', 'closed' (the view was closed) or 'aborted'. */
static napi_value futex_wait_async_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  double index, value_d, timeout_ms;
  if (!cowshm_args(env, info, 4, argv) || !get_double(env, argv[1], &index) || !get_double(env, argv[2], &value_d) ||
      !get_double(env, argv[3], &timeout_ms))
    return NULL;
  struct fenv *fe = fenv_of(env);
  if (fe == NULL || fe->closing) return cowshm_throw_type(env, "cowshm: this environment is shutting down");
  struct waiter *w = malloc(sizeof *w);
  if (w == NULL) return cowshm_throw_errno(env, ENOMEM, "futex", NULL);
  int rc = begin_wait(env, argv[0], index, (uint32_t)(int32_t)value_d, timeout_ms, w);
  if (rc != WORD_OK) {
    free(w);
    return cowshm_num(env, rc);
  }
  napi_value promise, pair, idv;
  w->fe = fe;
  if (napi_create_promise(env, &w->deferred, &promise) != napi_ok) {
    pthread_mutex_lock(&table_lock);
    table_remove(w);
    pthread_mutex_unlock(&table_lock);
    free(w);
    cowshm_throw_napi_failure(env, "napi_create_promise", __FILE__, __LINE__);
    return NULL;
  }
  pthread_mutex_lock(&table_lock);
  w->id = next_id++;
  int err = queue_job_locked(w);
  if (err != 0) table_remove(w);
  pthread_mutex_unlock(&table_lock);
  if (err != 0) {
    napi_value e = NULL;
    cowshm_throw_errno(env, err, "pthread_create", NULL);
    napi_get_and_clear_last_exception(env, &e);
    napi_reject_deferred(env, w->deferred, e);
    free(w);
    return promise; /* rejected: TS passes it on as it is */
  }
  if (fe->pending++ == 0) napi_ref_threadsafe_function(env, fe->tsfn);
  NAPI_OK(env, napi_create_array_with_length(env, 2, &pair));
  NAPI_OK(env, napi_create_double(env, w->id, &idv));
  NAPI_OK(env, napi_set_element(env, pair, 0, promise));
  NAPI_OK(env, napi_set_element(env, pair, 1, idv));
  return pair;
}

/* futexCancel(id): an AbortSignal fired; the wait's promise resolves 'aborted'. */
static napi_value futex_cancel_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  double id;
  if (!cowshm_args(env, info, 1, argv) || !get_double(env, argv[0], &id)) return NULL;
  struct fenv *fe = fenv_of(env);
  pthread_mutex_lock(&table_lock);
  for (struct waiter *w = table_head; w != NULL; w = w->next)
    if (w->fe == fe && w->id == id) finish_locked(w, RES_ABORTED);
  pthread_mutex_unlock(&table_lock);
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
  cowshm_registry_lock();
  int rc = locate_locked(env, argv[0], index, &wd);
  if (rc != WORD_OK) {
    cowshm_registry_unlock();
    return cowshm_num(env, rc);
  }
  uint64_t count = count_d >= (double)INT_MAX ? INT_MAX : (uint64_t)count_d;
  uint64_t woken = 0;
  pthread_mutex_lock(&table_lock);
  for (struct waiter *w = table_head; w != NULL && woken < count; w = w->next) {
    if (w->result == RES_WAITING && !w->in_kernel && w->off == wd.off && w->ino == wd.ino && w->dev == wd.dev) {
      finish_locked(w, RES_OK);
      woken++;
    }
  }
  pthread_mutex_unlock(&table_lock);
  if (woken < count) {
    long n = sys_futex((void *)wd.addr, FUTEX_WAKE, (uint32_t)(count - woken), NULL);
    if (n < 0) {
      int err = errno;
      cowshm_registry_unlock();
      return cowshm_throw_errno(env, err, "futex", NULL);
    }
    woken += (uint64_t)n;
  }
  cowshm_registry_unlock();
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

/* futexPending() -> waits of this environment not settled yet (for tests). */
static napi_value futex_pending_js(napi_env env, napi_callback_info info) {
  struct fenv *fe = fenv_of(env);
  return cowshm_num(env, fe == NULL ? 0 : (double)fe->pending);
}

/* Under the registry lock, before a mapping goes: end the waits on it and
 * wait until no thread passes its addresses to the kernel any more. */
void cowshm_futex_on_unmap(struct cowshm_slot *s) {
  pthread_mutex_lock(&table_lock);
  for (;;) {
    int busy = 0;
    for (struct waiter *w = table_head; w != NULL; w = w->next) {
      if (w->addr < s->start || w->addr - s->start >= s->len) continue;
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

static struct fenv *fenv_of(napi_env env) {
  pthread_mutex_lock(&table_lock);
  struct fenv *fe = fenvs;
  while (fe != NULL && fe->env != env) fe = fe->next;
  pthread_mutex_unlock(&table_lock);
  return fe;
}

/* Environment teardown: end this environment's waits, wait until no thread
 * holds one, and drop them unsettled (there is no JS left to settle them). */
static void fenv_cleanup(void *arg) {
  struct fenv *fe = arg;
  pthread_mutex_lock(&table_lock);
  fe->closing = 1;
  for (struct fenv **p = &fenvs; *p != NULL; p = &(*p)->next) {
    if (*p == fe) {
      *p = fe->next;
      break;
    }
  }
  /* Jobs no thread has taken yet. */
  for (struct waiter **p = &jobs_head; *p != NULL;) {
    struct waiter *w = *p;
    if (w->fe == fe) {
      *p = w->queue_next;
      table_remove(w);
      w->busy = 0;
      free(w);
    } else {
      p = &w->queue_next;
    }
  }
  jobs_tail = NULL;
  for (struct waiter *w = jobs_head; w != NULL; w = w->queue_next) jobs_tail = w;
  for (;;) {
    int busy = 0;
    for (struct waiter *w = table_head; w != NULL; w = w->next) {
      if (w->fe != fe) continue;
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
    free(list);
    list = n;
  }
  if (fe->noop != NULL) napi_delete_reference(fe->env, fe->noop);
  fe->noop = NULL;
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
  pthread_mutex_lock(&table_lock);
  fe->next = fenvs;
  fenvs = fe;
  pthread_mutex_unlock(&table_lock);
  NAPI_OK(env, napi_add_env_cleanup_hook(env, fenv_cleanup, fe));

  napi_property_descriptor props[] = {
      {"futexWait", NULL, futex_wait_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"futexWaitAsync", NULL, futex_wait_async_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"futexCancel", NULL, futex_cancel_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"futexWake", NULL, futex_wake_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"futexWord", NULL, futex_word_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"futexPending", NULL, futex_pending_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
