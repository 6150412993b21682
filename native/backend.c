/* The mprotect backend, and the choice of backend for this process.
 *
 * mprotect: PROT_READ on write mappings; a write raises SIGSEGV (SEGV_ACCERR)
 * and the engine makes the faulting chunk PROT_READ|PROT_WRITE again. Each
 * writable chunk splits the mapping's VMA, and vm.max_map_count (65530 by
 * default) bounds how many a process may have: the chunk size is chosen per
 * region so that the count stays far below it. Used where userfaultfd is
 * refused (containers' seccomp profiles, older kernels) and for files on disk.
 */
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* COWSHM_MPROTECT_CHUNK: a fixed chunk size for the mprotect backend, so
 * tests can drive the process into vm.max_map_count on purpose. */
static size_t forced_chunk;

static long read_long_file(const char *path, long fallback) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fallback;
  char buf[64];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return fallback;
  buf[n] = 0;
  return strtol(buf, NULL, 10);
}

static long count_maps(void) {
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  static char buf[1 << 16]; /* under the registry lock */
  long lines = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < n; i++) lines += buf[i] == '\n';
  close(fd);
  return lines;
}

static int mp_usable_for(int fd) { return 1; }

static size_t mp_chunk_size(uint64_t bytes, char *why, size_t whysize) {
  long max_maps = read_long_file("/proc/sys/vm/max_map_count", 65530);
  long in_use = count_maps();
  if (in_use < 0) in_use = 1000;
  /* A quarter of what is left, at most 16384: room for other regions, for
   * mappings made later, and for the rest of the process. */
  long budget = (max_maps - in_use) / 4;
  if (budget > 16384) budget = 16384;
  if (budget < 64) {
    snprintf(why, whysize,
             "this process is close to vm.max_map_count (%ld mappings left for write protection); "
             "raise vm.max_map_count or use fewer mappings",
             budget * 4);
    return 0;
  }
  if (forced_chunk != 0) return forced_chunk;
  size_t chunk = cowshm_page_size;
  /* Each chunk made writable can split off two VMAs at worst. */
  while (2 * (bytes / chunk) > (uint64_t)budget && chunk < ((size_t)1 << 30)) chunk <<= 1;
  return chunk;
}

/* The CPU says whether the access was a write where it can (x86-64); where it
 * cannot, any access fault in a write mapping is taken for one. */
static int mp_is_write_fault(const siginfo_t *si, void *uctx) {
  return si->si_code == SEGV_ACCERR && cowshm_fault_is_write(uctx) != 0;
}

static int mp_arm(uintptr_t start, size_t len) { return 0; }

/* mprotect(2) of the range: 0 or an errno. Signal context: a plain system
 * call, and errno is read at once. */
static int mp_set(uintptr_t start, size_t len, int prot) { return mprotect((void *)start, len, prot) == 0 ? 0 : errno; }

/* One call over the whole mapping re-merges the VMAs that chunks split. */
static void mp_disarm(uintptr_t start, size_t len) { mp_set(start, len, PROT_READ | PROT_WRITE); }

static int mp_protect(uintptr_t start, size_t len) { return mp_set(start, len, PROT_READ); }

/* SAFETY (signal context): see mp_set. It fails with ENOMEM once the split
 * would pass vm.max_map_count; the engine then unprotects the whole mapping,
 * which merges instead of splitting. */
static int mp_unprotect(uintptr_t start, size_t len) { return mp_set(start, len, PROT_READ | PROT_WRITE); }

const struct cowshm_backend cowshm_mprotect_backend = {
    .name = "mprotect",
    .syscall = "mprotect",
    .arm_call = "mprotect",
    .protect_call = "mprotect",
    .enomem_hint = "vm.max_map_count reached while write-protecting",
    .signal = SIGSEGV,
    .fallback = NULL,
    .usable_for = mp_usable_for,
    .chunk_size = mp_chunk_size,
    .is_write_fault = mp_is_write_fault,
    .arm = mp_arm,
    .disarm = mp_disarm,
    .protect = mp_protect,
    .unprotect = mp_unprotect,
};

/* ---- the choice ----------------------------------------------------------- */

static struct cowshm_backend_choice choice;
static pthread_once_t choose_once = PTHREAD_ONCE_INIT;

static void choose(void) {
  struct cowshm_backend_choice *c = &choice;
  const char *chunk = getenv("COWSHM_MPROTECT_CHUNK");
  if (chunk != NULL) {
    unsigned long long v = strtoull(chunk, NULL, 10);
    if (v >= cowshm_page_size && (v & (v - 1)) == 0) forced_chunk = (size_t)v;
  }
  const char *env = getenv("COWSHM_SNAPSHOT_BACKEND");
  if (env != NULL && env[0] != 0) {
    snprintf(c->forced, sizeof c->forced, "%s", env);
    if (strcmp(env, "mprotect") != 0 && strcmp(env, "userfaultfd") != 0) c->error = EINVAL;
  }
  cowshm_uffd_probe(&c->uffd);
  const char *why = c->uffd.reason;
  if (strcmp(c->forced, "mprotect") == 0) {
    c->ops = &cowshm_mprotect_backend;
    snprintf(c->reason, sizeof c->reason, "forced by COWSHM_SNAPSHOT_BACKEND=mprotect (userfaultfd: %s)", why);
  } else if (strcmp(c->forced, "userfaultfd") == 0) {
    c->ops = &cowshm_uffd_backend;
    if (c->uffd.ok) {
      snprintf(c->reason, sizeof c->reason, "forced by COWSHM_SNAPSHOT_BACKEND=userfaultfd: %s", why);
    } else {
      c->error = ENOSYS;
      snprintf(c->reason, sizeof c->reason, "forced by COWSHM_SNAPSHOT_BACKEND=userfaultfd, but it is unavailable: %s",
               why);
    }
  } else if (c->uffd.ok) {
    c->ops = &cowshm_uffd_backend;
    snprintf(c->reason, sizeof c->reason, "%s", why);
  } else {
    c->ops = &cowshm_mprotect_backend;
    snprintf(c->reason, sizeof c->reason, "mprotect fallback: %s", why);
  }
}

const struct cowshm_backend_choice *cowshm_backend_choose(void) {
  pthread_once(&choose_once, choose);
  return &choice;
}

const struct cowshm_backend *cowshm_backend_for_signal(int sig) {
  if (sig == cowshm_uffd_backend.signal) return &cowshm_uffd_backend;
  if (sig == cowshm_mprotect_backend.signal) return &cowshm_mprotect_backend;
  return NULL;
}
