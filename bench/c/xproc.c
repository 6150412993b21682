/* Baselines for bench/xproc.bench.js (wall clock, as every figure there):
 *
 *   xproc pvw|hand MIB CHUNK  the cross-process snapshot mechanism alone: a
 *                             writer whose MAP_SHARED view of a populated
 *                             memfd is write-protected with userfaultfd
 *                             (SIGBUS), and a reader process (a fork() child)
 *                             holding a MAP_PRIVATE mapping, its snapshot. The
 *                             writer's first write to each CHUNK-byte chunk
 *                             (one write per 4 KiB page, random order) gets the
 *                             chunk's old bytes into the reader's mapping
 *                             before it lands: "pvw" with process_vm_writev(2)
 *                             from the SIGBUS handler, "hand" through a helper
 *                             thread in the reader (MADV_POPULATE_WRITE),
 *                             woken with a futex and waited for. Seconds per
 *                             4 KiB page; the reader then counts the pages of
 *                             its snapshot that changed (must be 0).
 *   xproc arm MIB WRITERS ROUNDS
 *                             arming, the floor of snapshot({ scope:
 *                             'processes' }): WRITERS processes each hold a
 *                             populated MAP_SHARED view of MIB, registered
 *                             with userfaultfd; "one": writer 0 alone
 *                             write-protects its view (one UFFDIO_WRITEPROTECT),
 *                             as an in-process snapshot does; "all": a futex
 *                             word in shared memory is bumped and every writer,
 *                             woken, write-protects its view and answers, and
 *                             the time until the last answer counts. Views are
 *                             un-protected between rounds (untimed). Median
 *                             seconds of each.
 *   xproc cow MIB             the kernel's own MAP_PRIVATE copy-on-write
 *                             fault: a private mapping of a populated memfd,
 *                             populated for reading, one write per 4 KiB page
 *                             in random order; seconds per page.
 *
 * This is design/probes/xproc_snapshot.c and kernel_cow.c with the bench's
 * output. Prints one JSON object on the last line. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/futex.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#define PAGE 4096

/* Shared between the writer and the reader (an anonymous shared page). */
struct ctl {
  _Atomic uint32_t req, ack;
  _Atomic uint64_t off, len, snap_addr;
  _Atomic int ready, done, reader_pid;
  _Atomic uint64_t mismatched;
};

static struct ctl *ctl;
static char *live, *snap;
static size_t len, chunk;
static int uffd, pvw;

static long futex(_Atomic uint32_t *w, int op, uint32_t v) { return syscall(SYS_futex, (uint32_t *)w, op, v, NULL, NULL, 0); }

static void on_sigbus(int sig, siginfo_t *si, void *uctx) {
  size_t off = ((uintptr_t)si->si_addr - (uintptr_t)live) & ~(chunk - 1), n = off + chunk > len ? len - off : chunk;
  if (pvw) {
    struct iovec l = {live + off, n}, r = {(void *)(uintptr_t)(atomic_load(&ctl->snap_addr) + off), n};
    if (syscall(SYS_process_vm_writev, atomic_load(&ctl->reader_pid), &l, 1, &r, 1, 0) != (ssize_t)n) _exit(4);
  } else {
    atomic_store(&ctl->off, off);
    atomic_store(&ctl->len, n);
    uint32_t s = atomic_fetch_add(&ctl->req, 1) + 1;
    futex(&ctl->req, FUTEX_WAKE, 1);
    /* Sleep only on the value just seen to differ from ours: a second load
     * could read the helper's answer, and FUTEX_WAIT on it would sleep past
     * the wake that came with it. */
    uint32_t a;
    for (int spin = 0; (a = atomic_load(&ctl->ack)) != s; spin++)
      if (spin > 2000) futex(&ctl->ack, FUTEX_WAIT, a);
  }
  struct uffdio_writeprotect wp = {.range = {(uintptr_t)live + off, n}, .mode = 0};
  while (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0)
    if (errno != EAGAIN) _exit(3);
}

/* The reader's helper thread (handshake): populates the chunk asked for. */
static void *helper(void *arg) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t r;
    for (int spin = 0; (r = atomic_load(&ctl->req)) == seen; spin++) {
      if (atomic_load(&ctl->done)) return NULL;
      if (spin > 2000) futex(&ctl->req, FUTEX_WAIT, seen);
    }
    seen = r;
    if (madvise(snap + atomic_load(&ctl->off), atomic_load(&ctl->len), MADV_POPULATE_WRITE) != 0) _exit(5);
    atomic_store(&ctl->ack, r);
    futex(&ctl->ack, FUTEX_WAKE, 1);
  }
}

static uint32_t *shuffled(size_t n) {
  uint32_t *order = malloc(n * sizeof *order);
  if (order == NULL) die("malloc");
  for (size_t i = 0; i < n; i++) order[i] = (uint32_t)i;
  uint64_t x = 88172645463325252ull;
  for (size_t i = n - 1; i > 0; i--) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t j = x % (i + 1);
    uint32_t t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

static int populated_memfd(void) {
  int fd = memfd_create("xproc-baseline", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, (off_t)len) != 0) die("memfd");
  live = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (live == MAP_FAILED) die("mmap");
  memset(live, 1, len);
  return fd;
}

static int cow(void) {
  int fd = populated_memfd();
  size_t pages = len / PAGE;
  uint32_t *order = shuffled(pages);
  volatile char *priv = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  if (priv == MAP_FAILED) die("mmap");
  /* Mapped from the page cache for reading: each first write is a COW fault. */
  if (madvise((void *)priv, len, MADV_POPULATE_READ) != 0) die("madvise");
  double t0 = now();
  for (size_t i = 0; i < pages; i++) priv[(size_t)order[i] * PAGE] = 2;
  printf("{\"s_per_page\": %.12f}\n", (now() - t0) / pages);
  return 0;
}

/* Shared by the arming processes. */
struct arm_ctl {
  _Atomic uint32_t go, acks, ready;
  _Atomic int op; /* 1: protect, 0: un-protect */
  _Atomic uint32_t solo; /* bumped: writer 0 alone protects, times it, answers */
  _Atomic uint64_t solo_ns;
};

static uint64_t ns_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void arm_writer(struct arm_ctl *a, int fd, int index) {
  char *view = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1);
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
  struct uffdio_register reg = {.range = {(uintptr_t)view, len}, .mode = UFFDIO_REGISTER_MODE_WP};
  if (view == MAP_FAILED || u < 0 || ioctl(u, UFFDIO_API, &api) != 0 || ioctl(u, UFFDIO_REGISTER, &reg) != 0) _exit(8);
  atomic_fetch_add(&a->ready, 1);
  uint32_t seen = 0, solo_seen = 0;
  for (;;) {
    uint32_t g = atomic_load(&a->go), s = atomic_load(&a->solo);
    if (g == seen && s == solo_seen) {
      futex(&a->go, FUTEX_WAIT, g);
      continue;
    }
    int op = atomic_load(&a->op);
    if (op < 0) _exit(0);
    struct uffdio_writeprotect wp = {.range = {(uintptr_t)view, len}, .mode = op ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
    uint64_t t0 = ns_now();
    if ((g != seen || index == 0) && ioctl(u, UFFDIO_WRITEPROTECT, &wp) != 0) _exit(9);
    if (s != solo_seen) atomic_store(&a->solo_ns, ns_now() - t0);
    seen = g;
    solo_seen = s;
    atomic_fetch_add(&a->acks, 1);
    futex(&a->acks, FUTEX_WAKE, 1);
  }
}

static void arm_wait(struct arm_ctl *a, uint32_t acks) {
  uint32_t v;
  while ((v = atomic_load(&a->acks)) < acks) futex(&a->acks, FUTEX_WAIT, v);
}

static int arm(int writers, int rounds) {
  struct arm_ctl *a = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED) die("mmap");
  int fd = populated_memfd();
  munmap(live, len);
  pid_t pids[16];
  if (writers < 1 || writers > 16 || rounds < 1 || rounds > 64) return 2;
  for (int i = 0; i < writers; i++)
    if ((pids[i] = fork()) == 0) arm_writer(a, fd, i);
  while (atomic_load(&a->ready) < (uint32_t)writers) usleep(1000);
  double one[64], all[64];
  uint32_t acks = 0;
  for (int r = 0; r < rounds; r++) {
    /* One: writer 0 alone, timed inside it. */
    atomic_store(&a->op, 1);
    atomic_fetch_add(&a->solo, 1);
    futex(&a->go, FUTEX_WAKE, INT32_MAX);
    arm_wait(a, acks += (uint32_t)writers); /* the others answer without protecting */
    one[r] = atomic_load(&a->solo_ns) / 1e9;
    atomic_store(&a->op, 0);
    atomic_fetch_add(&a->go, 1);
    futex(&a->go, FUTEX_WAKE, INT32_MAX);
    arm_wait(a, acks += (uint32_t)writers);
    usleep(20000);
    /* All: woken together, the last answer counts. */
    atomic_store(&a->op, 1);
    double t0 = now();
    atomic_fetch_add(&a->go, 1);
    futex(&a->go, FUTEX_WAKE, INT32_MAX);
    arm_wait(a, acks += (uint32_t)writers);
    all[r] = now() - t0;
    atomic_store(&a->op, 0);
    atomic_fetch_add(&a->go, 1);
    futex(&a->go, FUTEX_WAKE, INT32_MAX);
    arm_wait(a, acks += (uint32_t)writers);
    usleep(20000);
  }
  atomic_store(&a->op, -1);
  atomic_fetch_add(&a->go, 1);
  futex(&a->go, FUTEX_WAKE, INT32_MAX);
  for (int i = 0; i < writers; i++) waitpid(pids[i], NULL, 0);
  printf("{\"one_s\": %.9f, \"all_s\": %.9f}\n", median(one, rounds), median(all, rounds));
  return 0;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 3) {
    fprintf(stderr, "usage: xproc pvw|hand MIB CHUNK | arm MIB WRITERS ROUNDS | cow MIB\n");
    return 2;
  }
  len = (size_t)atoi(argv[2]) << 20;
  if (strcmp(argv[1], "cow") == 0) return cow();
  if (strcmp(argv[1], "arm") == 0) return arm(argc > 3 ? atoi(argv[3]) : 3, argc > 4 ? atoi(argv[4]) : 5);
  pvw = strcmp(argv[1], "pvw") == 0;
  chunk = argc > 3 ? (size_t)atoi(argv[3]) : PAGE;
  if ((!pvw && strcmp(argv[1], "hand") != 0) || chunk < PAGE || (chunk & (chunk - 1)) != 0 || len == 0) return 2;
  ctl = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (ctl == MAP_FAILED) die("mmap");
  int fd = populated_memfd();
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    snap = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (snap == MAP_FAILED) _exit(6);
    atomic_store(&ctl->snap_addr, (uintptr_t)snap);
    atomic_store(&ctl->reader_pid, getpid());
    pthread_t t;
    if (!pvw && pthread_create(&t, NULL, helper, NULL) != 0) _exit(7);
    atomic_store(&ctl->ready, 1);
    while (!atomic_load(&ctl->done)) usleep(1000);
    if (!pvw) pthread_join(t, NULL);
    size_t bad = 0;
    for (size_t i = 0; i < len; i += PAGE) bad += snap[i] != 1;
    atomic_store(&ctl->mismatched, bad);
    _exit(0);
  }
  while (!atomic_load(&ctl->ready)) usleep(100);
  uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
  if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) != 0) die("userfaultfd");
  struct uffdio_register reg = {.range = {(uintptr_t)live, len}, .mode = UFFDIO_REGISTER_MODE_WP};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) die("UFFDIO_REGISTER");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGBUS, &sa, NULL);
  struct uffdio_writeprotect wp = {.range = {(uintptr_t)live, len}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
  double t0 = now();
  if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) die("UFFDIO_WRITEPROTECT");
  double protect = now() - t0;
  size_t pages = len / PAGE;
  uint32_t *order = shuffled(pages);
  t0 = now();
  for (size_t i = 0; i < pages; i++) live[(size_t)order[i] * PAGE] = 2;
  double per_page = (now() - t0) / pages;
  atomic_store(&ctl->done, 1);
  futex(&ctl->req, FUTEX_WAKE, 1);
  int status;
  if (waitpid(pid, &status, 0) != pid) die("waitpid");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "xproc: the reader failed (status %d)\n", status);
    return 1;
  }
  printf("{\"s_per_page\": %.12f, \"protect_s\": %.9f, \"mismatched\": %llu}\n", per_page, protect,
         (unsigned long long)atomic_load(&ctl->mismatched));
  return 0;
}
