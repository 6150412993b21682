/* Baseline for bench/hugetlb.bench.js: the snapshot mechanism on hugetlb
 * pages, in C, with nothing around it.
 *
 *   hugetlb snap MIB RUNS
 *
 * A memfd of MIB MiB on 2 MiB hugetlb pages, every page resident, mapped
 * shared and registered with userfaultfd in write-protect mode. Each run
 * takes a snapshot (a MAP_PRIVATE | MAP_NORESERVE mapping of the memfd, then
 * UFFDIO_WRITEPROTECT of the shared mapping), then writes one byte into each
 * huge page in random order; the SIGBUS handler copies the huge page into the
 * snapshot (MADV_POPULATE_WRITE) and un-protects it. Prints the median CPU
 * seconds to take the snapshot and per first write (one per huge page), and
 * how many snapshot pages differ from the data at the snapshot (must be 0).
 * Needs a pool of about 2 × MIB / 2 free pages. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/memfd.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "bench.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define HUGE ((size_t)2 << 20)

static int uffd = -1;
static char *live, *snap;
static volatile long faults;

static void on_sigbus(int sig, siginfo_t *si, void *uctx) {
  (void)sig;
  (void)uctx;
  uintptr_t page = (uintptr_t)si->si_addr & ~(uintptr_t)(HUGE - 1);
  if (madvise(snap + (page - (uintptr_t)live), HUGE, MADV_POPULATE_WRITE) != 0) _exit(3);
  struct uffdio_writeprotect wp = {.range = {.start = page, .len = HUGE}, .mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE};
  if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) _exit(4);
  faults++;
}

int main(int argc, char **argv) {
  if (argc != 4 || strcmp(argv[1], "snap") != 0) {
    fprintf(stderr, "usage: hugetlb snap MIB RUNS\n");
    return 2;
  }
  size_t len = (size_t)atoi(argv[2]) << 20, pages = len / HUGE;
  int runs = atoi(argv[3]);
  if (runs < 1 || runs > 64 || pages == 0) return 2;
  int fd = memfd_create("hugetlb-baseline", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
  if (fd < 0) die("memfd_create");
  if (ftruncate(fd, (off_t)len) != 0) die("ftruncate");
  if (fallocate(fd, 0, 0, (off_t)len) != 0) die("fallocate (is the pool large enough?)");
  live = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (live == MAP_FAILED) die("mmap");
  memset(live, 1, len);
  uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | 1 /* UFFD_USER_MODE_ONLY */);
  struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM};
  if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) != 0) die("userfaultfd");
  struct uffdio_register reg = {.range = {.start = (uintptr_t)live, .len = len}, .mode = UFFDIO_REGISTER_MODE_WP};
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) die("UFFDIO_REGISTER");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  if (sigaction(SIGBUS, &sa, NULL) != 0) die("sigaction");

  size_t *order = malloc(pages * sizeof *order);
  if (order == NULL) die("malloc");
  for (size_t i = 0; i < pages; i++) order[i] = i;
  for (size_t i = pages - 1; i > 0; i--) {
    size_t j = rng() % (i + 1), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  double take[64], first[64];
  size_t bad = 0;
  for (int r = 0; r < runs; r++) {
    char before = (char)(r + 1);
    memset(live, before, len);
    double t0 = cpu_now();
    snap = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    if (snap == MAP_FAILED) die("mmap (snapshot)");
    struct uffdio_writeprotect wp = {.range = {.start = (uintptr_t)live, .len = len}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
    if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) != 0) die("UFFDIO_WRITEPROTECT");
    take[r] = cpu_now() - t0;
    volatile char *v = live;
    faults = 0;
    t0 = cpu_now();
    for (size_t i = 0; i < pages; i++) v[order[i] * HUGE + (order[i] & 4095)] = (char)(before + 100);
    first[r] = (cpu_now() - t0) / (double)pages;
    if ((size_t)faults != pages) {
      fprintf(stderr, "hugetlb: %ld faults for %zu pages\n", faults, pages);
      return 1;
    }
    for (size_t p = 0; p < len; p += 4096)
      if (snap[p] != before) bad++;
    munmap(snap, len);
  }
  printf("{\"snapshot_s\": %.9f, \"first_write_s_per_huge_page\": %.9f, \"mismatched\": %zu}\n", median(take, runs),
         median(first, runs), bad);
  return 0;
}
