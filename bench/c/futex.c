/* Baselines for bench/atomics.bench.js, the same work done from C:
 *   futex pingpong ROUNDS [WARMUP] two processes ping-pong a word of a shared
 *                                 memfd with FUTEX_WAIT/FUTEX_WAKE; seconds
 *                                 per round trip, timed after WARMUP untimed
 *                                 ones (default 0)
 *   futex uring ROUNDS [WARMUP]   the same ping-pong with waitAsync's
 *                                 mechanism and nothing else: each side waits
 *                                 with an IORING_OP_FUTEX_WAIT request on a
 *                                 ring of its own (native/uring.c, the
 *                                 addon's code) and sleeps in epoll_wait on
 *                                 the ring's descriptor, as the event loop
 *                                 does; wakes with FUTEX_WAKE
 *   futex uring-self ROUNDS       one process: queue a wait, wake it, take
 *                                 its completion through epoll (the cycle of
 *                                 waitAsync, notify and await in one thread)
 * It prints one JSON object. (The locks' baselines: bench/c/mutex.c.) */
#include "bench.h"

#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* The addon's own ring code, compiled in (bench/lib.js builds one file). */
#include "../../native/uring.c"

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

/* One side's ring, and the epoll set its "event loop" sleeps in. */
struct side {
  struct uring ring;
  int ep;
};

static void side_init(struct side *s) {
  errno = uring_init(&s->ring, 16, 1024);
  if (errno != 0) die("io_uring_setup");
  s->ep = epoll_create1(EPOLL_CLOEXEC);
  if (s->ep < 0) die("epoll_create1");
  struct epoll_event e = {.events = EPOLLIN};
  if (epoll_ctl(s->ep, EPOLL_CTL_ADD, s->ring.fd, &e) != 0) die("epoll_ctl");
}

/* Queues a wait on *w while it holds v, as futexWaitAsync does (shared futex). */
static void queue_wait(struct side *s, _Atomic uint32_t *w, uint32_t v) {
  struct io_uring_sqe *q = uring_sqe(&s->ring);
  if (q == NULL) die("uring_sqe");
  q->opcode = COWSHM_IORING_OP_FUTEX_WAIT;
  q->fd = COWSHM_FUTEX2_SIZE_U32;
  q->addr = (uintptr_t)w;
  q->off = v;
  q->addr3 = COWSHM_FUTEX_BITSET_MATCH_ANY;
  q->user_data = 1;
  errno = uring_submit(&s->ring, 0);
  if (errno != 0) die("io_uring_enter");
}

/* Sleeps in epoll_wait until the ring holds the completion, and takes it. */
static void reap(struct side *s) {
  struct io_uring_cqe c;
  while (!uring_cqe(&s->ring, &c)) {
    struct epoll_event e;
    if (epoll_wait(s->ep, &e, 1, -1) < 0 && errno != EINTR) die("epoll_wait");
  }
  if (c.res != 0 && c.res != -EAGAIN) {
    errno = -c.res;
    die("IORING_OP_FUTEX_WAIT");
  }
}

/* Waits until *w holds `want`, as the bench's loops do: with FUTEX_WAIT
 * (no ring), or as its waitAsync loop does, on the ring. */
static void await_value(struct side *s, _Atomic uint32_t *w, uint32_t want) {
  uint32_t v;
  while ((v = atomic_load(w)) != want) {
    if (s == NULL) {
      fx(w, FUTEX_WAIT, v);
      continue;
    }
    queue_wait(s, w, v);
    reap(s);
  }
}

/* Two processes ping-pong the word: the child answers odd values with the next even one. */
static void pingpong(long n, long warm, int uring) {
  _Atomic uint32_t *w = shared(4096);
  pid_t pid = fork();
  if (pid < 0) die("fork");
  struct side ring, *s = NULL;
  if (uring) {
    side_init(&ring); /* after the fork: each process its own ring */
    s = &ring;
  }
  if (pid == 0) {
    for (long i = 0; i < warm + n; i++) {
      await_value(s, w, (uint32_t)(2 * i + 1));
      atomic_store(w, (uint32_t)(2 * i + 2));
      fx(w, FUTEX_WAKE, INT32_MAX);
    }
    _exit(0);
  }
  double t0 = now();
  for (long i = 0; i < warm + n; i++) {
    if (i == warm) t0 = now();
    atomic_store(w, (uint32_t)(2 * i + 1));
    fx(w, FUTEX_WAKE, INT32_MAX);
    await_value(s, w, (uint32_t)(2 * i + 2));
  }
  double t = now() - t0;
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the peer failed");
  printf("{\"seconds\": %.9g}\n", t / n);
}

static void uring_self(long n) {
  _Atomic uint32_t *w = shared(4096);
  struct side s;
  side_init(&s);
  double t0 = now();
  for (long i = 0; i < n; i++) {
    queue_wait(&s, w, 0);
    if (fx(w, FUTEX_WAKE, 1) != 1) die("FUTEX_WAKE woke no request");
    reap(&s);
  }
  printf("{\"seconds\": %.9g}\n", (now() - t0) / n);
}

int main(int argc, char **argv) {
  long n = argc >= 3 ? atol(argv[2]) : 0, warm = argc >= 4 ? atol(argv[3]) : 0;
  if (argc >= 3 && strcmp(argv[1], "pingpong") == 0) pingpong(n, warm, 0);
  else if (argc >= 3 && strcmp(argv[1], "uring") == 0) pingpong(n, warm, 1);
  else if (argc >= 3 && strcmp(argv[1], "uring-self") == 0) uring_self(n);
  else {
    fprintf(stderr, "usage: %s pingpong|uring ROUNDS [WARMUP] | uring-self ROUNDS\n", argv[0]);
    return 2;
  }
  return 0;
}
