/* Baselines for bench/atomics.bench.js, the same work done from C:
 *   futex pingpong ROUNDS         two processes ping-pong a word of a shared
 *                                 memfd with FUTEX_WAIT/FUTEX_WAKE; seconds
 *                                 per round trip
 *   futex mutex OPS               pthread_mutex_lock + unlock of an
 *                                 uncontended process-shared robust mutex;
 *                                 seconds per pair
 *   futex contend PROCS OPS       PROCS processes each lock, increment a
 *                                 shared counter and unlock OPS times;
 *                                 seconds for all of it
 * Each prints one JSON object. */
#include "bench.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static long fx(_Atomic uint32_t *a, int op, uint32_t v) { return syscall(SYS_futex, a, op, v, NULL, NULL, 0); }

static void *shared(size_t size) {
  int fd = memfd_create("bench", 0);
  if (fd < 0) die("memfd_create");
  if (ftruncate(fd, (off_t)size) != 0) die("ftruncate");
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die("mmap");
  close(fd);
  return p;
}

static void pingpong(long n) {
  _Atomic uint32_t *w = shared(4096);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    for (long i = 0; i < n; i++) {
      uint32_t v;
      while ((v = atomic_load(w)) != (uint32_t)(2 * i + 1)) fx(w, FUTEX_WAIT, v);
      atomic_store(w, (uint32_t)(2 * i + 2));
      fx(w, FUTEX_WAKE, INT32_MAX);
    }
    _exit(0);
  }
  double t0 = now();
  for (long i = 0; i < n; i++) {
    atomic_store(w, (uint32_t)(2 * i + 1));
    fx(w, FUTEX_WAKE, INT32_MAX);
    uint32_t v;
    while ((v = atomic_load(w)) != (uint32_t)(2 * i + 2)) fx(w, FUTEX_WAIT, v);
  }
  double t = now() - t0;
  waitpid(pid, NULL, 0);
  printf("{\"seconds\": %.9g}\n", t / n);
}

static pthread_mutex_t *robust_mutex(void) {
  pthread_mutex_t *m = shared(4096);
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (pthread_mutex_init(m, &a) != 0) die("pthread_mutex_init");
  return m;
}

static void uncontended(long n) {
  pthread_mutex_t *m = robust_mutex();
  double t0 = now();
  for (long i = 0; i < n; i++) {
    if (pthread_mutex_lock(m) != 0) die("pthread_mutex_lock");
    pthread_mutex_unlock(m);
  }
  printf("{\"seconds\": %.9g}\n", (now() - t0) / n);
}

static void contend(int procs, long n) {
  pthread_mutex_t *m = robust_mutex();
  volatile int32_t *counter = (volatile int32_t *)((char *)m + 2048);
  _Atomic uint32_t *ready = (_Atomic uint32_t *)((char *)m + 3072), *go = ready + 1;
  *counter = 0;
  for (int p = 0; p < procs; p++) {
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      atomic_fetch_add(ready, 1);
      while (atomic_load(go) == 0) fx(go, FUTEX_WAIT, 0);
      for (long i = 0; i < n; i++) {
        if (pthread_mutex_lock(m) != 0) _exit(1);
        int32_t v = *counter;
        for (int j = 0; j < 50; j++) counter[1] = j; /* the same critical section as the JS side */
        *counter = v + 1;
        pthread_mutex_unlock(m);
      }
      _exit(0);
    }
  }
  /* Timed from the moment every process is ready, as the JS side is. */
  while (atomic_load(ready) != (uint32_t)procs) usleep(100);
  double t0 = now();
  atomic_store(go, 1);
  fx(go, FUTEX_WAKE, INT32_MAX);
  for (int p = 0; p < procs; p++) wait(NULL);
  double t = now() - t0;
  if (*counter != procs * n) {
    fprintf(stderr, "counter %d, expected %ld\n", *counter, procs * n);
    exit(1);
  }
  printf("{\"seconds\": %.9g}\n", t);
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "pingpong") == 0) pingpong(atol(argv[2]));
  else if (argc >= 3 && strcmp(argv[1], "mutex") == 0) uncontended(atol(argv[2]));
  else if (argc >= 4 && strcmp(argv[1], "contend") == 0) contend(atoi(argv[2]), atol(argv[3]));
  else {
    fprintf(stderr, "usage: %s pingpong ROUNDS | mutex OPS | contend PROCS OPS\n", argv[0]);
    return 2;
  }
  return 0;
}
