/* Baselines for bench/snapshot.bench.js, measured in the same run:
 *
 *   snapshot fork GIB RUNS   fork() of a process holding GIB of resident
 *                            private memory (what Redis and HyPer do to
 *                            snapshot): median seconds until fork returns.
 *   snapshot memcpy GIB RUNS copying GIB with memcpy, into fresh memory (a
 *                            real copy pays its page faults) and into warm memory.
 *   snapshot cow MIB [sequential]
 *                            the kernel's MAP_PRIVATE copy-on-write fault: a
 *                            private mapping of a populated memfd, one write
 *                            per 4 KiB page in random order (or in address
 *                            order with `sequential`); seconds per page.
 *   snapshot uffd MIB [CHUNK [sequential]]
 *                            the snapshot mechanism alone, in C: a userfaultfd
 *                            write-protected shared mapping whose SIGBUS
 *                            handler breaks COW in a private mapping
 *                            (MADV_POPULATE_WRITE) and un-protects the page;
 *                            same writes, seconds per page. The floor of what
 *                            any implementation of the mechanism can reach.
 *
 * Prints one JSON object on the last line. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static void *must_map(size_t len, int prot, int flags, int fd) {
  void *p = mmap(NULL, len, prot, flags, fd, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(1);
  }
  return p;
}

static int uffd = -1;
static char *uffd_view, *uffd_snap;
static size_t uffd_chunk = 4096; /* bytes copied and un-protected per fault */

static void on_sigbus(int sig, siginfo_t *si, void *uctx) {
  /* Chunks are aligned in the mapping (in the file), not in the address space. */
  uintptr_t page = (uintptr_t)uffd_view + (((uintptr_t)si->si_addr - (uintptr_t)uffd_view) & ~(uintptr_t)(uffd_chunk - 1));
  madvise(uffd_snap + (page - (uintptr_t)uffd_view), uffd_chunk, 23 /* MADV_POPULATE_WRITE */);
  struct uffdio_writeprotect wp = {.range = {.start = page, .len = uffd_chunk}, .mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE};
  ioctl(uffd, UFFDIO_WRITEPROTECT, &wp);
}

static size_t *shuffled(size_t pages) {
  size_t *order = malloc(pages * sizeof *order);
  for (size_t i = 0; i < pages; i++) order[i] = i;
  for (size_t i = pages - 1; i > 0; i--) {
    size_t j = rng() % (i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: snapshot fork|memcpy GIB RUNS | cow MIB\n");
    return 2;
  }
  const char *mode = argv[1];
  if (strcmp(mode, "fork") == 0 || strcmp(mode, "memcpy") == 0) {
    size_t len = (size_t)(atof(argv[2]) * (1ull << 30));
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    char *mem = must_map(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
    memset(mem, 1, len);
    double xs[64];
    if (runs > 64) runs = 64;
    if (strcmp(mode, "fork") == 0) {
      for (int i = 0; i < runs; i++) {
        double t0 = cpu_now();
        pid_t pid = fork();
        if (pid == 0) _exit(0);
        xs[i] = cpu_now() - t0;
        waitpid(pid, NULL, 0);
      }
      printf("{\"fork_s\": %.9f}\n", median(xs, runs));
    } else {
      double warm[64];
      for (int i = 0; i < runs; i++) {
        char *dst = must_map(len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
        double t0 = cpu_now();
        memcpy(dst, mem, len);
        xs[i] = cpu_now() - t0;
        t0 = cpu_now();
        memcpy(dst, mem, len);
        warm[i] = cpu_now() - t0;
        munmap(dst, len);
      }
      printf("{\"memcpy_fresh_s\": %.9f, \"memcpy_warm_s\": %.9f}\n", median(xs, runs), median(warm, runs));
    }
    return 0;
  }
  if (strcmp(mode, "cow") == 0) {
    size_t page = 4096, len = (size_t)atoi(argv[2]) << 20, pages = len / page;
    int fd = memfd_create("cow-baseline", 0);
    if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
      perror("memfd");
      return 1;
    }
    char *shared = must_map(len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd);
    memset(shared, 1, len);
    size_t *order = shuffled(pages);
    if (argc > 3 && strcmp(argv[3], "sequential") == 0)
      for (size_t i = 0; i < pages; i++) order[i] = i;
    double xs[5];
    for (int r = 0; r < 5; r++) {
      /* Populated read-only from the page cache: each first write is a COW fault. */
      volatile char *priv = must_map(len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
      /* MAP_POPULATE would pre-break COW on a writable private mapping. */
      if (madvise((void *)priv, len, MADV_POPULATE_READ) != 0) {
        perror("madvise");
        return 1;
      }
      double t0 = cpu_now();
      for (size_t i = 0; i < pages; i++) priv[order[i] * page + (order[i] & 4095)] = 2;
      xs[r] = (cpu_now() - t0) / pages;
      munmap((void *)priv, len);
    }
    printf("{\"cow_fault_s_per_page\": %.12f}\n", median(xs, 5));
    return 0;
  }
  if (strcmp(mode, "uffd") == 0) {
    size_t page = 4096, len = (size_t)atoi(argv[2]) << 20, pages = len / page;
    if (argc > 3) uffd_chunk = (size_t)atoi(argv[3]);
    if (uffd_chunk < page || (uffd_chunk & (uffd_chunk - 1)) != 0) return 2;
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
    if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) != 0) {
      printf("{\"uffd_s_per_page\": null}\n");
      return 0;
    }
    int fd = memfd_create("uffd-baseline", 0);
    if (fd < 0 || ftruncate(fd, (off_t)len) != 0) {
      perror("memfd");
      return 1;
    }
    uffd_view = must_map(len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd);
    memset(uffd_view, 1, len);
    struct uffdio_register reg = {.range = {.start = (uintptr_t)uffd_view, .len = len}, .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) {
      perror("UFFDIO_REGISTER");
      return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGBUS, &sa, NULL);
    size_t *order = shuffled(pages);
    if (argc > 4 && strcmp(argv[4], "sequential") == 0)
      for (size_t i = 0; i < pages; i++) order[i] = i;
    double xs[5];
    for (int r = 0; r < 5; r++) {
      uffd_snap = must_map(len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd);
      struct uffdio_writeprotect wp = {.range = {.start = (uintptr_t)uffd_view, .len = len}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
      if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) {
        perror("UFFDIO_WRITEPROTECT");
        return 1;
      }
      volatile char *v = uffd_view;
      double t0 = cpu_now();
      for (size_t i = 0; i < pages; i++) v[order[i] * page + (order[i] & 4095)] = 2;
      xs[r] = (cpu_now() - t0) / pages;
      munmap(uffd_snap, len);
    }
    printf("{\"uffd_s_per_page\": %.12f}\n", median(xs, 5));
    return 0;
  }
  fprintf(stderr, "unknown mode %s\n", mode);
  return 2;
}
