/* Baselines for bench/mutex.bench.js, the same work done from C:
 *   mutex uncontended OPS          pthread_mutex_lock + unlock of an
 *                                  uncontended process-shared robust mutex;
 *                                  seconds per pair, in the fastest chunk
 *                                  of 20000 (as the JS side)
 *   mutex contend PROCS OPS KIND [STORES]
 *                                  PROCS processes each lock, increment a
 *                                  shared counter (with STORES, default 50,
 *                                  stores to a word in between) and unlock
 *                                  OPS times;
 *                                  seconds for all of it. KIND:
 *                                    pthread  a process-shared robust
 *                                             pthread mutex (glibc)
 *                                    cowshm   cowshm's Mutex protocol on one
 *                                             word (docs/api.md), the way
 *                                             src/mutex.ts runs it: what the
 *                                             protocol costs without JS
 *   mutex work OPS                 the critical section of `contend` alone,
 *                                  in one process, no lock; seconds per op,
 *                                  in the fastest chunk of 20000
 *   mutex rwlock PROCS OPS         PROCS processes, each OPS times: a write
 *                                  lock every 8th time, else a read lock,
 *                                  of a process-shared pthread_rwlock_t
 *                                  (not robust: glibc has no robust rwlock);
 *                                  seconds for all of it
 * Each prints one JSON object. */
#include "bench.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Keep in step with src/mutex.ts. */
#define WAITERS 0x80000000u
/* Uncontended figures are the fastest chunk of this many ops (bench/mutex.bench.js does the same). */
#define CHUNK 20000

static long fx(_Atomic uint32_t *a, int op, uint32_t v) { return syscall(SYS_futex, a, op, v, NULL, NULL, 0); }

/* Each contending process notes when it started and ended its share (as
 * CLOCK_MONOTONIC seconds) in its own pair of `spans`; a run lasts from the
 * first start to the last end. Timed so, neither side pays for the start
 * signal or the parent's wake-up, which take milliseconds on a loaded
 * machine (the JS side does the same). */
static double span(const double *spans, int procs) {
  double first = spans[0], last = spans[1];
  for (int p = 1; p < procs; p++) {
    if (spans[2 * p] < first) first = spans[2 * p];
    if (spans[2 * p + 1] > last) last = spans[2 * p + 1];
  }
  return last - first;
}

static void *shared(size_t size) {
  int fd = memfd_create("bench", 0);
  if (fd < 0) die("memfd_create");
  if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  close(fd);
  return p;
}

static pthread_mutex_t *robust_mutex(void *where) {
  pthread_mutex_t *m = where;
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (pthread_mutex_init(m, &a) != 0) die("pthread_mutex_init");
  return m;
}

static void uncontended(long n) {
  pthread_mutex_t *m = robust_mutex(shared(4096));
  long chunks = n / CHUNK > 0 ? n / CHUNK : 1, chunk = n / chunks;
  double best = 1e9;
  for (long c = 0; c < chunks; c++) {
    double t0 = now();
    for (long i = 0; i < chunk; i++) {
      if (pthread_mutex_lock(m) != 0) die("pthread_mutex_lock");
      pthread_mutex_unlock(m);
    }
    double t = (now() - t0) / chunk;
    if (t < best) best = t;
  }
  printf("{\"seconds\": %.9g}\n", best);
}

/* cowshm's protocol: CAS 0 -> T; contended, set bit 31 and FUTEX_WAIT (no
 * spinning, as src/mutex.ts); a lock taken after a FUTEX_WAIT that slept is
 * taken with bit 31 set, after one that found the word changed (EAGAIN)
 * without. Unlock: swap to 0, FUTEX_WAKE one if bit 31 was set. (The owner
 * test after a timed-out sleep never runs here: nobody dies.) */
static void cow_lock(_Atomic uint32_t *w, uint32_t t) {
  uint32_t v = 0;
  if (atomic_compare_exchange_strong(w, &v, t)) return;
  uint32_t slept = 0;
  for (;;) {
    v = atomic_load(w);
    if (v == 0) {
      if (atomic_compare_exchange_strong(w, &v, t | slept)) return;
      continue;
    }
    if (!(v & WAITERS)) {
      if (!atomic_compare_exchange_strong(w, &v, v | WAITERS)) continue;
      v |= WAITERS;
    }
    if (fx(w, FUTEX_WAIT, v) == 0) slept = WAITERS;
  }
}

static void cow_unlock(_Atomic uint32_t *w) {
  uint32_t v = atomic_exchange(w, 0);
  if (v & WAITERS) fx(w, FUTEX_WAKE, 1);
}

static void contend(int procs, long n, const char *kind, int stores) {
  char *base = shared(8192);
  double *spans = (double *)(base + 4096);
  int cow = strcmp(kind, "cowshm") == 0;
  if (!cow && strcmp(kind, "pthread") != 0) {
    fprintf(stderr, "unknown kind %s\n", kind);
    exit(2);
  }
  pthread_mutex_t *m = cow ? NULL : robust_mutex(base);
  _Atomic uint32_t *word = (_Atomic uint32_t *)(base + 1024);
  volatile int32_t *counter = (volatile int32_t *)(base + 2048);
  _Atomic uint32_t *ready = (_Atomic uint32_t *)(base + 3072), *go = ready + 1;
  *counter = 0;
  for (int p = 0; p < procs; p++) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      uint32_t token = (uint32_t)p + 1;
      atomic_fetch_add(ready, 1);
      while (atomic_load(go) == 0) fx(go, FUTEX_WAIT, 0);
      spans[2 * p] = now();
      for (long i = 0; i < n; i++) {
        if (cow) cow_lock(word, token);
        else if (pthread_mutex_lock(m) != 0) _exit(1);
        int32_t v = *counter;
        for (int j = 0; j < stores; j++) counter[1] = j; /* the same critical section as the JS side */
        *counter = v + 1;
        if (cow) cow_unlock(word);
        else pthread_mutex_unlock(m);
      }
      spans[2 * p + 1] = now();
      _exit(0);
    }
  }
  while (atomic_load(ready) != (uint32_t)procs) usleep(100);
  atomic_store(go, 1);
  fx(go, FUTEX_WAKE, INT32_MAX);
  for (int p = 0; p < procs; p++) wait(NULL);
  double t = span(spans, procs);
  if (*counter != procs * n) {
    fprintf(stderr, "counter %d, expected %ld\n", *counter, procs * n);
    exit(1);
  }
  printf("{\"seconds\": %.9g}\n", t);
}

static void work(long n) {
  volatile int32_t *counter = (volatile int32_t *)((char *)shared(4096) + 2048);
  long chunks = n / CHUNK > 0 ? n / CHUNK : 1, chunk = n / chunks;
  double best = 1e9;
  for (long c = 0; c < chunks; c++) {
    double t0 = now();
    for (long i = 0; i < chunk; i++) {
      int32_t v = *counter;
      for (int j = 0; j < 50; j++) counter[1] = j;
      *counter = v + 1;
    }
    double t = (now() - t0) / chunk;
    if (t < best) best = t;
  }
  printf("{\"seconds\": %.9g}\n", best);
}

static void rwlock(int procs, long n) {
  char *base = shared(8192);
  double *spans = (double *)(base + 4096);
  pthread_rwlock_t *l = (pthread_rwlock_t *)base;
  pthread_rwlockattr_t a;
  pthread_rwlockattr_init(&a);
  pthread_rwlockattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (pthread_rwlock_init(l, &a) != 0) die("pthread_rwlock_init");
  volatile int32_t *counter = (volatile int32_t *)(base + 2048);
  _Atomic uint32_t *ready = (_Atomic uint32_t *)(base + 3072), *go = ready + 1;
  for (int p = 0; p < procs; p++) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      atomic_fetch_add(ready, 1);
      while (atomic_load(go) == 0) fx(go, FUTEX_WAIT, 0);
      spans[2 * p] = now();
      int32_t sink = 0;
      for (long i = 0; i < n; i++) {
        if (i % 8 == 0) {
          pthread_rwlock_wrlock(l);
          int32_t v = *counter;
          for (int j = 0; j < 50; j++) counter[1] = j;
          *counter = v + 1;
        } else {
          pthread_rwlock_rdlock(l);
          for (int j = 0; j < 50; j++) sink += counter[j & 7];
        }
        pthread_rwlock_unlock(l);
      }
      spans[2 * p + 1] = now();
      _exit(sink == 42 ? 3 : 0);
    }
  }
  while (atomic_load(ready) != (uint32_t)procs) usleep(100);
  atomic_store(go, 1);
  fx(go, FUTEX_WAKE, INT32_MAX);
  for (int p = 0; p < procs; p++) wait(NULL);
  double t = span(spans, procs);
  long writes = (n + 7) / 8 * procs;
  if (*counter != writes) {
    fprintf(stderr, "counter %d, expected %ld\n", *counter, writes);
    exit(1);
  }
  printf("{\"seconds\": %.9g}\n", t);
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "uncontended") == 0) uncontended(atol(argv[2]));
  else if (argc >= 5 && strcmp(argv[1], "contend") == 0) contend(atoi(argv[2]), atol(argv[3]), argv[4], argc >= 6 ? atoi(argv[5]) : 50);
  else if (argc >= 3 && strcmp(argv[1], "work") == 0) work(atol(argv[2]));
  else if (argc >= 4 && strcmp(argv[1], "rwlock") == 0) rwlock(atoi(argv[2]), atol(argv[3]));
  else {
    fprintf(stderr, "usage: %s uncontended OPS | contend PROCS OPS pthread|cowshm [STORES] | work OPS | rwlock PROCS OPS\n", argv[0]);
    return 2;
  }
  return 0;
}
