/* Write-protection backends for snapshots (snapshot.c is the engine).
 *
 * A backend knows how to make a range of a write mapping refuse writes, how
 * to let them through again, and which signal a refused write raises. The
 * engine never asks which backend it has: everything that differs between
 * them is in this table, in the manner of the kernel's userfaultfd selftests
 * (struct uffd_test_ops, one per memory type).
 *
 * Ranges are page aligned and lie inside one write mapping. Functions marked
 * "signal context" are called from the SIGSEGV/SIGBUS handler and must be
 * async-signal-safe; the others run under cowshm_registry_lock.
 *
 * A new kind of memory (hugetlb regions) or a new way of protecting (pushes
 * from another process) is a new table; the engine's invariants stay as they
 * are: copy into every live snapshot, then unprotect.
 */
#ifndef COWSHM_BACKEND_H
#define COWSHM_BACKEND_H

#include "cowshm.h"

struct cowshm_backend {
  const char *name;    /* Snapshot.backend: "userfaultfd" or "mprotect" */
  const char *syscall;      /* what an error protecting a new view names */
  const char *arm_call;     /* ... an error arming a region's views */
  const char *protect_call; /* ... an error protecting them */
  const char *enomem_hint;  /* why protect() fails with ENOMEM, or NULL */
  int signal;               /* what a write to a protected page raises */
  /* What to use for a file this backend cannot protect, or NULL. */
  const struct cowshm_backend *fallback;
  /* Whether this backend can protect mappings of fd: 1, 0, or -errno. */
  int (*usable_for)(int fd);
  /* The protection granularity for a region whose write mappings span
   * `bytes`: a power of two >= the page size, or 0 (with *why) if the
   * process cannot afford to protect them. */
  size_t (*chunk_size)(uint64_t bytes, char *why, size_t whysize);
  /* Signal context: whether this fault can be a write to a protected page. */
  int (*is_write_fault)(const siginfo_t *si, void *uctx);
  /* Prepare a whole write mapping for protection / undo that after the last
   * unprotect. Returns 0 or an errno. */
  int (*arm)(uintptr_t start, size_t len);
  void (*disarm)(uintptr_t start, size_t len);
  /* Returns 0 or an errno. */
  int (*protect)(uintptr_t start, size_t len);
  /* Signal context. Returns 0 or an errno. */
  int (*unprotect)(uintptr_t start, size_t len);
};

extern const struct cowshm_backend cowshm_uffd_backend;
extern const struct cowshm_backend cowshm_mprotect_backend;

/* What the userfaultfd probe (uffd.c) found; filled once, before any use. */
struct cowshm_uffd_probe {
  int ok;             /* the process-wide uffd is open and write protection works */
  int wp_unpopulated; /* UFFD_FEATURE_WP_UNPOPULATED was accepted */
  char reason[512];   /* a sentence for snapshotBackendReason and doctor */
};
/* Opens the process-wide uffd and proves that write protection of shmem works. */
void cowshm_uffd_probe(struct cowshm_uffd_probe *out);

/* The backend chosen for this process (backend.c), from the probe and
 * COWSHM_SNAPSHOT_BACKEND / COWSHM_MPROTECT_CHUNK. Decided once. */
struct cowshm_backend_choice {
  const struct cowshm_backend *ops;
  int error;          /* a forced backend that cannot work: its errno */
  char reason[1024];
  char forced[32];    /* COWSHM_SNAPSHOT_BACKEND, or "" */
  struct cowshm_uffd_probe uffd;
};
const struct cowshm_backend_choice *cowshm_backend_choose(void);
/* The backend whose protection raises `sig`, or NULL. Signal context. */
const struct cowshm_backend *cowshm_backend_for_signal(int sig);

#endif
