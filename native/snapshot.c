/* Snapshots: point-in-time copies of a region, paid for page by page.
 *
 * A snapshot is a MAP_PRIVATE mapping of the region's file. Its untouched
 * pages are the region's own page-cache pages, so it costs nothing to make;
 * to freeze it, every write mapping (ACCESS_WRITE slot) of the region in this
 * process is write-protected, and the first write to a page goes through the
 * fault handler below, which makes the kernel copy the page into every live
 * snapshot (MADV_POPULATE_WRITE on the snapshot's private mapping breaks the
 * kernel's own copy-on-write) and then lets the write through.
 *
 * Two ways to write-protect:
 *  - userfaultfd: one process-wide uffd, features SIGBUS | WP_HUGETLBFS_SHMEM
 *    | WP_UNPOPULATED; write mappings are registered in WP mode and protected
 *    with UFFDIO_WRITEPROTECT. A write to a protected page raises a
 *    synchronous SIGBUS in the writing thread. No VMA splits.
 *  - mprotect: PROT_READ on write mappings, SIGSEGV on write, mprotect(RW) of
 *    the faulting chunk. Chunks split VMAs, so the chunk size is chosen per
 *    region to keep the VMA count far below vm.max_map_count.
 *
 * Concurrency. Snapshot creation, release, new mappings and prepareWrite run
 * under cowshm_registry_lock (one writer at a time). The fault handler takes
 * no lock and never allocates: the tables below are static, and what it
 * reads is published with atomics. The ordering that matters is between a
 * handler that un-protects a page and a writer that (re-)protects it:
 *
 *   handler: reads the live snapshots, copies the page into each, un-protects
 *   creator: publishes a new snapshot, then protects every write mapping
 *
 * If a handler read the table before the new snapshot was published and
 * un-protected its page after the creator protected it, the page would be
 * writable without the new snapshot holding a copy. A small grace-period
 * scheme (SRCU-like) rules this out: a handler runs its read-copy-unprotect
 * step inside a reader section counted in gp_readers[epoch & 1]; a writer,
 * after publishing, advances gp_epoch and waits until the readers of the old
 * epoch are gone (synchronize()). Handlers that start after the advance see
 * the new state; those that started before have finished, un-protect
 * included, before the writer protects anything. Releasing a snapshot uses
 * the same wait before its mapping goes, so no handler copies into memory
 * that is being unmapped. The waits are short: readers never block.
 */
#include "cowshm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

/* Kernel headers from before 6.3 / 5.14 lack these. */
/* 1 << 13 as in <linux/userfaultfd.h> since 6.4 (1 << 14 is UFFD_FEATURE_POISON). */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

enum backend { BACKEND_NONE = 0, BACKEND_UFFD = 1, BACKEND_MPROTECT = 2 };

#define MAX_DOMAINS 64
#define MAX_SNAPSHOTS 256

/* A region (dev, ino) with at least one live snapshot. */
struct domain {
  int used;        /* under the lock */
  uint64_t dev, ino;
  int backend;     /* BACKEND_UFFD or BACKEND_MPROTECT; fixed while used */
  size_t chunk;    /* protection granularity in bytes, power of two >= page */
  int nsnaps;      /* live snapshots; under the lock */
};

enum snap_state { SNAP_FREE = 0, SNAP_LIVE = 1, SNAP_GONE = 2 };

struct snapshot {
  _Atomic int state;
  int domain;
  uint64_t off, len;     /* file range covered, page aligned */
  uintptr_t addr;        /* the private mapping */
  _Atomic uint64_t *bits; /* one bit per page: set once the page's copy is complete */
  _Atomic size_t copied;
  _Atomic int error;     /* errno of a copy that failed in the handler */
  struct cowshm_slot *slot;
};

static struct domain domains[MAX_DOMAINS];
static struct snapshot snaps[MAX_SNAPSHOTS];
static _Atomic size_t snap_high;

/* Grace periods (see the top of the file). */
static _Atomic unsigned long gp_epoch;
static _Atomic long gp_readers[2];
/* Advanced before every (re-)protection, so a handler can tell a fresh
 * protection from a fault it cannot resolve (ENOSPC, truncation). */
static _Atomic unsigned long protect_gen;
/* Once protection has been armed, write faults in write mappings may be
 * stale (the protection went away before the handler ran). */
static _Atomic int ever_armed;

static int uffd = -1;
static int backend = BACKEND_NONE;
static int backend_error;              /* forced backend that cannot work: its errno */
static char backend_reason[1024];
static char uffd_reason[512];
static int uffd_ok, uffd_wp_shmem, uffd_wp_unpopulated;
static char forced[32];
/* COWSHM_MPROTECT_CHUNK: a fixed chunk size for the mprotect backend, so
 * tests can drive the process into vm.max_map_count on purpose. */
static size_t forced_chunk;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

static size_t ps(void) { return cowshm_page_size; }

/* ---- grace periods ------------------------------------------------------ */

static unsigned long reader_enter(void) {
  for (;;) {
    unsigned long e = atomic_load(&gp_epoch);
    atomic_fetch_add(&gp_readers[e & 1], 1);
    if (atomic_load(&gp_epoch) == e) return e;
    atomic_fetch_sub(&gp_readers[e & 1], 1);
  }
}

static void reader_exit(unsigned long e) { atomic_fetch_sub(&gp_readers[e & 1], 1); }

/* Writers only (under the registry lock). */
static void synchronize(void) {
  unsigned long e = atomic_fetch_add(&gp_epoch, 1);
  while (atomic_load(&gp_readers[e & 1]) != 0) sched_yield();
}

/* ---- the userfaultfd probe ---------------------------------------------- */

static int uffd_open(int flags, char *why, size_t whysize) {
  int fd = -1, e1, e2;
  if (getenv("COWSHM_NO_USERFAULTFD") != NULL && strcmp(getenv("COWSHM_NO_USERFAULTFD"), "1") == 0) {
    /* What a container's seccomp profile does: the syscall fails with EPERM,
     * and there is no /dev/userfaultfd. */
    e1 = EPERM;
    e2 = ENOENT;
  } else {
    fd = (int)syscall(SYS_userfaultfd, flags);
    if (fd >= 0) return fd;
    e1 = errno;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
      fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
      e2 = errno;
      close(dev);
      if (fd >= 0) return fd;
    } else {
      e2 = errno;
    }
  }
  snprintf(why, whysize, "userfaultfd(2) failed with %s%s; /dev/userfaultfd: %s", strerrorname_np(e1) ? strerrorname_np(e1) : "?",
           e1 == EPERM ? " (a seccomp filter, or vm.unprivileged_userfaultfd=0 without UFFD_USER_MODE_ONLY support)" : "",
           strerrorname_np(e2) ? strerrorname_np(e2) : "?");
  return -1;
}

/* Opens the process-wide uffd and proves that write protection of shmem
 * works, without raising a signal: a protected page must refuse
 * MADV_POPULATE_WRITE with EFAULT, an unprotected one must accept it. */
static void probe_uffd(void) {
  int flags = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;
  int fd = uffd_open(flags, uffd_reason, sizeof uffd_reason);
  if (fd < 0) return;
  struct uffdio_api api = {.api = UFFD_API,
                           .features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
                                       UFFD_FEATURE_WP_UNPOPULATED};
  if (ioctl(fd, UFFDIO_API, &api) != 0) {
    /* Before 6.4 there is no WP_UNPOPULATED; shmem gets its markers anyway.
     * A failed UFFDIO_API leaves the descriptor unusable: open another. */
    close(fd);
    fd = uffd_open(flags, uffd_reason, sizeof uffd_reason);
    if (fd < 0) return;
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
      snprintf(uffd_reason, sizeof uffd_reason,
               "UFFDIO_API refused SIGBUS delivery with write-protection of shmem (%s): kernel older than 5.19?",
               strerrorname_np(errno));
      close(fd);
      return;
    }
  } else {
    uffd_wp_unpopulated = 1;
  }
  size_t p = ps();
  int mfd = memfd_create("cowshm-probe", MFD_CLOEXEC);
  void *m = MAP_FAILED;
  const char *step = "memfd_create";
  int err = 0;
  if (mfd < 0) goto fail;
  step = "ftruncate";
  if (ftruncate(mfd, (off_t)p) != 0) goto fail;
  step = "mmap";
  m = mmap(NULL, p, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (m == MAP_FAILED) goto fail;
  struct uffdio_register reg = {.range = {.start = (uintptr_t)m, .len = p}, .mode = UFFDIO_REGISTER_MODE_WP};
  step = "UFFDIO_REGISTER (write-protect mode, shmem)";
  if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) goto fail;
  struct uffdio_writeprotect wp = {.range = {.start = (uintptr_t)m, .len = p}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
  step = "UFFDIO_WRITEPROTECT";
  if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) != 0) goto fail;
  step = "a write to a protected page was not refused";
  errno = 0;
  if (madvise(m, p, MADV_POPULATE_WRITE) == 0 || errno != EFAULT) {
    if (errno == EINVAL) step = "MADV_POPULATE_WRITE (kernel older than 5.14)";
    goto fail;
  }
  wp.mode = 0;
  step = "UFFDIO_WRITEPROTECT (un-protect)";
  if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) != 0) goto fail;
  step = "a write to an un-protected page";
  if (madvise(m, p, MADV_POPULATE_WRITE) != 0) goto fail;
  munmap(m, p);
  close(mfd);
  uffd = fd;
  uffd_ok = 1;
  uffd_wp_shmem = 1;
  snprintf(uffd_reason, sizeof uffd_reason,
           "userfaultfd opened (UFFD_USER_MODE_ONLY); write-protection of shmem with SIGBUS delivery works%s",
           uffd_wp_unpopulated ? "" : " (without WP_UNPOPULATED)");
  return;
fail:
  err = errno;
  if (m != MAP_FAILED) munmap(m, p);
  if (mfd >= 0) close(mfd);
  close(fd);
  snprintf(uffd_reason, sizeof uffd_reason, "userfaultfd opened, but %s failed%s%s", step, err ? ": " : "",
           err ? strerrorname_np(err) : "");
}

static void probe(void) {
  const char *chunk = getenv("COWSHM_MPROTECT_CHUNK");
  if (chunk != NULL) {
    unsigned long long c = strtoull(chunk, NULL, 10);
    if (c >= ps() && (c & (c - 1)) == 0) forced_chunk = (size_t)c;
  }
  const char *env = getenv("COWSHM_SNAPSHOT_BACKEND");
  if (env != NULL && env[0] != 0) {
    snprintf(forced, sizeof forced, "%s", env);
    if (strcmp(env, "mprotect") != 0 && strcmp(env, "userfaultfd") != 0) {
      backend_error = EINVAL;
    }
  }
  probe_uffd();
  if (forced[0] != 0 && strcmp(forced, "mprotect") == 0) {
    backend = BACKEND_MPROTECT;
    snprintf(backend_reason, sizeof backend_reason, "forced by COWSHM_SNAPSHOT_BACKEND=mprotect (userfaultfd: %s)",
             uffd_reason);
  } else if (forced[0] != 0 && strcmp(forced, "userfaultfd") == 0) {
    backend = BACKEND_UFFD;
    if (uffd_ok) {
      snprintf(backend_reason, sizeof backend_reason, "forced by COWSHM_SNAPSHOT_BACKEND=userfaultfd: %s", uffd_reason);
    } else {
      backend_error = ENOSYS;
      snprintf(backend_reason, sizeof backend_reason,
               "forced by COWSHM_SNAPSHOT_BACKEND=userfaultfd, but it is unavailable: %s", uffd_reason);
    }
  } else if (uffd_ok) {
    backend = BACKEND_UFFD;
    snprintf(backend_reason, sizeof backend_reason, "%s", uffd_reason);
  } else {
    backend = BACKEND_MPROTECT;
    snprintf(backend_reason, sizeof backend_reason, "mprotect fallback: %s", uffd_reason);
  }
}

/* ---- helpers ------------------------------------------------------------ */

static int uffd_protect(uintptr_t start, size_t len, int on) {
  struct uffdio_writeprotect wp = {.range = {.start = start, .len = len},
                                   .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : UFFDIO_WRITEPROTECT_MODE_DONTWAKE};
  return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : errno;
}

static int uffd_register(uintptr_t start, size_t len) {
  struct uffdio_register reg = {.range = {.start = start, .len = len}, .mode = UFFDIO_REGISTER_MODE_WP};
  return ioctl(uffd, UFFDIO_REGISTER, &reg) == 0 ? 0 : errno;
}

static void uffd_unregister(uintptr_t start, size_t len) {
  struct uffdio_range r = {.start = start, .len = len};
  /* Fails only for ranges that are not registered: nothing to undo then. */
  ioctl(uffd, UFFDIO_UNREGISTER, &r);
}

static int is_write_slot_of(const struct cowshm_slot *s, const struct domain *d) {
  return atomic_load(&s->state) == SLOT_MAPPED && s->access == ACCESS_WRITE && s->dev == d->dev &&
         s->ino == d->ino;
}

static int find_domain(uint64_t dev, uint64_t ino) {
  for (int i = 0; i < MAX_DOMAINS; i++)
    if (domains[i].used && domains[i].dev == dev && domains[i].ino == ino) return i;
  return -1;
}

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

/* Marks pages [first, first + n) of a snapshot copied; returns how many were new. */
static size_t mark_copied(struct snapshot *sn, size_t first, size_t n) {
  size_t added = 0;
  for (size_t i = first; i < first + n; i++) {
    uint64_t bit = (uint64_t)1 << (i & 63);
    uint64_t old = atomic_fetch_or(&sn->bits[i >> 6], bit);
    if (!(old & bit)) added++;
  }
  if (added) atomic_fetch_add(&sn->copied, added);
  return added;
}

static int all_copied(struct snapshot *sn, size_t first, size_t n) {
  for (size_t i = first; i < first + n; i++)
    if (!(atomic_load_explicit(&sn->bits[i >> 6], memory_order_acquire) & ((uint64_t)1 << (i & 63)))) return 0;
  return 1;
}

/* Copies file range [lo, hi) into every live snapshot of domain d that has
 * not copied it yet. Async-signal-safe; runs inside a reader section (or
 * under the registry lock). */
static int copy_into_snapshots(int d, uint64_t lo, uint64_t hi) {
  int copies = 0;
  size_t high = atomic_load(&snap_high);
  for (size_t i = 0; i < high; i++) {
    struct snapshot *sn = &snaps[i];
    if (atomic_load_explicit(&sn->state, memory_order_acquire) != SNAP_LIVE || sn->domain != d) continue;
    uint64_t a = lo > sn->off ? lo : sn->off;
    uint64_t b = hi < sn->off + sn->len ? hi : sn->off + sn->len;
    if (a >= b) continue;
    size_t first = (size_t)((a - sn->off) / ps()), n = (size_t)((b - a) / ps());
    if (all_copied(sn, first, n)) continue;
    /* The kernel's own COW: idempotent, so a thread racing us on the same
     * page at worst repeats a no-op. The bits are set only after the copy
     * is complete, so "bit set" always means "copy done". */
    if (madvise((void *)(sn->addr + (a - sn->off)), (size_t)(b - a), MADV_POPULATE_WRITE) != 0) {
      int expected = 0;
      atomic_compare_exchange_strong(&sn->error, &expected, errno);
    }
    mark_copied(sn, first, n);
    copies++;
  }
  return copies;
}

/* ---- the fault handler --------------------------------------------------- */

/* Copy, then un-protect, the chunk around `page` of write mapping s.
 * Returns how many snapshots needed a copy. */
static int resolve(struct cowshm_slot *s, int d, uintptr_t page) {
  struct domain *dom = &domains[d];
  uint64_t fo = s->file_offset + (page - s->start);
  uint64_t c0 = fo & ~((uint64_t)dom->chunk - 1), c1 = c0 + dom->chunk;
  uint64_t vlo = s->file_offset, vhi = s->file_offset + s->len;
  uint64_t lo = c0 > vlo ? c0 : vlo, hi = c1 < vhi ? c1 : vhi;
  int copies = copy_into_snapshots(d, c0, c1);
  uintptr_t start = s->start + (uintptr_t)(lo - vlo);
  size_t len = (size_t)(hi - lo);
  if (dom->backend == BACKEND_UFFD) {
    uffd_protect(start, len, 0);
    return copies;
  }
  if (mprotect((void *)start, len, PROT_READ | PROT_WRITE) == 0) return copies;
  /* Out of VMAs after all (vm.max_map_count): give this whole mapping its
   * copies now, and make it writable in one piece, which merges its VMAs
   * instead of splitting them. Slow, but exact, and no crash. */
  copy_into_snapshots(d, vlo, vhi);
  mprotect((void *)s->start, s->len, PROT_READ | PROT_WRITE);
  return copies;
}

int cowshm_snapshot_fault(int sig, siginfo_t *si, void *uctx) {
  if (!atomic_load_explicit(&ever_armed, memory_order_relaxed)) return 0;
  if (sig == SIGSEGV) {
    if (si->si_code != SEGV_ACCERR || cowshm_fault_is_write(uctx) == 0) return 0;
  } else if (sig != SIGBUS) {
    return 0;
  }
  uintptr_t addr = (uintptr_t)si->si_addr;
  uintptr_t page = addr & ~(uintptr_t)(ps() - 1);
  struct cowshm_slot *s = cowshm_slot_find(addr);
  if (s == NULL || s->access != ACCESS_WRITE) return 0;

  for (int attempt = 0; attempt < 1000; attempt++) {
    unsigned long e = reader_enter();
    unsigned long gen = atomic_load(&protect_gen);
    int wp = atomic_load_explicit(&s->wp, memory_order_acquire);
    if (atomic_load(&s->state) != SLOT_MAPPED || wp < 0) {
      /* The mapping is going away: not ours to fix. */
      reader_exit(e);
      return 0;
    }
    int dbackend = wp > 0 ? domains[wp - 1].backend : BACKEND_NONE;
    if (sig == SIGBUS && dbackend == BACKEND_MPROTECT) {
      reader_exit(e); /* mprotect raises SIGSEGV: this SIGBUS is a real one */
      return 0;
    }
    if (sig == SIGSEGV && dbackend == BACKEND_UFFD) {
      reader_exit(e);
      return 0;
    }
    int copies = 0;
    if (wp > 0) {
      copies = resolve(s, wp - 1, page);
    } else if (sig == SIGSEGV) {
      /* Protection was removed between the fault and now (the last snapshot
       * went); a write mapping is meant to be writable. */
      mprotect((void *)page, ps(), PROT_READ | PROT_WRITE);
    } else if (uffd >= 0) {
      uffd_protect(page, ps(), 0);
    }
    reader_exit(e);
    if (sig == SIGSEGV) return 1;
    /* The first write to a page after a snapshot copies it: that fault was
     * ours, and the retry will succeed, unless the page is also beyond the
     * file's end or /dev/shm is full. Those faults come back, and then there
     * is nothing left to copy. */
    if (copies > 0) return 1;
    /* Nothing to copy: maybe a write through a second view of a page already
     * copied, maybe a real SIGBUS. Make the page writable here: if the kernel
     * refuses because it would SIGBUS, and nobody protected anything
     * meanwhile, the fault is real. */
    if (madvise((void *)page, ps(), MADV_POPULATE_WRITE) == 0) return 1;
    if (errno != EFAULT) return 1;
    if (atomic_load(&protect_gen) == gen) return 0;
  }
  return 1;
}

/* ---- writers (under the registry lock) ------------------------------------ */

static int protect_slot(struct cowshm_slot *s, struct domain *dom) {
  if (dom->backend == BACKEND_UFFD) return uffd_protect(s->start, s->len, 1);
  return mprotect((void *)s->start, s->len, PROT_READ) == 0 ? 0 : errno;
}

static void unprotect_slot(struct cowshm_slot *s, struct domain *dom) {
  if (dom->backend == BACKEND_UFFD) {
    uffd_protect(s->start, s->len, 0);
    uffd_unregister(s->start, s->len);
  } else {
    /* One call over the whole mapping re-merges the VMAs chunks split. */
    mprotect((void *)s->start, s->len, PROT_READ | PROT_WRITE);
  }
}

/* Removes all protection of a domain with no live snapshot left. */
static void disarm(int d) {
  struct domain *dom = &domains[d];
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++)
    if (atomic_load(&cowshm_slots[i].wp) == d + 1) atomic_store(&cowshm_slots[i].wp, 0);
  synchronize();
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (is_write_slot_of(s, dom)) unprotect_slot(s, dom);
  }
  dom->used = 0;
}

static void snapshot_free(struct snapshot *sn) {
  free((void *)sn->bits);
  sn->bits = NULL;
  sn->slot = NULL;
  atomic_store(&sn->state, SNAP_FREE);
}

/* Ends a snapshot: handlers stop copying into it before its mapping goes. */
static void snapshot_release_locked(struct snapshot *sn) {
  int d = sn->domain;
  atomic_store(&sn->state, SNAP_GONE);
  if (--domains[d].nsnaps == 0)
    disarm(d); /* synchronizes */
  else
    synchronize();
  if (sn->slot != NULL) sn->slot->snap = NULL;
  snapshot_free(sn);
}

int cowshm_snapshot_on_map(struct cowshm_slot *s, const char **syscall) {
  if (s->access != ACCESS_WRITE) return 0;
  int d = find_domain(s->dev, s->ino);
  if (d < 0 || domains[d].nsnaps == 0) return 0;
  struct domain *dom = &domains[d];
  /* Both userfaultfd steps (UFFDIO_REGISTER, UFFDIO_WRITEPROTECT) are ioctls. */
  *syscall = dom->backend == BACKEND_UFFD ? "ioctl" : "mprotect";
  /* Nobody writes through this mapping yet (JS has not seen it), so it can
   * be armed without waiting for handlers. */
  if (dom->backend == BACKEND_UFFD) {
    int err = uffd_register(s->start, s->len);
    if (err != 0) return err;
  }
  atomic_store(&s->wp, d + 1);
  atomic_fetch_add(&protect_gen, 1);
  int err = protect_slot(s, dom);
  if (err != 0) {
    atomic_store(&s->wp, 0);
    if (dom->backend == BACKEND_UFFD) uffd_unregister(s->start, s->len);
    return err;
  }
  return 0;
}

void cowshm_snapshot_on_unmap(struct cowshm_slot *s) {
  if (s->access == ACCESS_SNAPSHOT) {
    if (s->snap != NULL) snapshot_release_locked(s->snap);
    return;
  }
  if (s->access != ACCESS_WRITE || !atomic_load(&ever_armed)) return;
  /* No handler may touch the range once the caller replaces it. */
  atomic_store(&s->wp, -1);
  synchronize();
}

/* ---- creating a snapshot --------------------------------------------------- */

static size_t choose_chunk(const struct domain *dom, size_t region_size, long *budget_out) {
  long max_maps = read_long_file("/proc/sys/vm/max_map_count", 65530);
  long in_use = count_maps();
  if (in_use < 0) in_use = 1000;
  /* A quarter of what is left, at most 16384: room for other regions, for
   * mappings made later, and for the rest of the process. */
  long budget = (max_maps - in_use) / 4;
  if (budget > 16384) budget = 16384;
  if (budget_out) *budget_out = budget;
  if (budget < 64) return 0;
  size_t total = 0;
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++)
    if (is_write_slot_of(&cowshm_slots[i], dom)) total += cowshm_slots[i].len;
  /* Views mapped later are likely the size of the region: count one. */
  total += region_size;
  size_t chunk = ps();
  /* Each chunk made writable can split off two VMAs at worst. */
  while (2 * (total / chunk) > (size_t)budget && chunk < ((size_t)1 << 30)) chunk <<= 1;
  return chunk;
}

/* snapshotCreate(fd, offset, length, label, owner, dev, ino, regionSize)
 *   -> [ArrayBuffer, id, chunkSize, backend] */
static napi_value create_js(napi_env env, napi_callback_info info) {
  napi_value argv[8];
  int32_t fd;
  uint64_t off, length, dev, ino, region_size;
  double owner;
  char label[256];
  if (!cowshm_args(env, info, 8, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &off) || !cowshm_get_u64(env, argv[2], &length) ||
      !cowshm_get_str(env, argv[3], label, sizeof label) || !cowshm_get_u64(env, argv[5], &dev) ||
      !cowshm_get_u64(env, argv[6], &ino) || !cowshm_get_u64(env, argv[7], &region_size))
    return NULL;
  NAPI_OK(env, napi_get_value_double(env, argv[4], &owner));
  if (length == 0 || off % ps() != 0) return cowshm_throw_range(env, "cowshm internal error: bad snapshot range");
  if (backend_error != 0) return cowshm_throw_errno(env, backend_error, "userfaultfd", backend_reason);

  int want_backend = backend;
  if (want_backend == BACKEND_UFFD) {
    /* userfaultfd write-protects shmem and hugetlbfs only: regular files on
     * disk take the mprotect path. */
    struct statfs sf;
    if (fstatfs(fd, &sf) != 0) return cowshm_throw_errno(env, errno, "fstatfs", label);
    if ((unsigned long)sf.f_type != TMPFS_MAGIC && (unsigned long)sf.f_type != HUGETLBFS_MAGIC)
      want_backend = BACKEND_MPROTECT;
  }

  double id;
  napi_value ab = cowshm_mapping_create(env, fd, off, (size_t)length, ACCESS_SNAPSHOT, label, owner, dev, ino, 0, &id);
  if (ab == NULL) return NULL;
  struct cowshm_slot *slot = cowshm_slot_by_id(id);
  size_t len = slot->len;
  size_t npages = len / ps();
  _Atomic uint64_t *bits = calloc((npages + 63) / 64, sizeof *bits);
  if (bits == NULL) {
    cowshm_mapping_close(env, id);
    return cowshm_throw_errno(env, ENOMEM, "snapshot", label);
  }

  int err = 0;
  const char *what = "snapshot";
  char detail[256] = "";
  cowshm_registry_lock();
  int d = find_domain(dev, ino);
  int fresh = d < 0;
  struct snapshot *sn = NULL;
  if (fresh) {
    for (int i = 0; i < MAX_DOMAINS; i++)
      if (!domains[i].used) {
        d = i;
        break;
      }
    if (d < 0) {
      err = EMFILE;
      snprintf(detail, sizeof detail, "at most %d regions can have live snapshots at once", MAX_DOMAINS);
      goto out;
    }
    struct domain *dom = &domains[d];
    memset(dom, 0, sizeof *dom);
    dom->dev = dev;
    dom->ino = ino;
    dom->backend = want_backend;
    dom->chunk = ps();
    if (want_backend == BACKEND_MPROTECT) {
      long budget = 0;
      dom->chunk = choose_chunk(dom, (size_t)region_size, &budget);
      if (forced_chunk != 0 && dom->chunk != 0) dom->chunk = forced_chunk;
      if (dom->chunk == 0) {
        err = ENOMEM;
        what = "mprotect";
        snprintf(detail, sizeof detail,
                 "this process is close to vm.max_map_count (%ld mappings left for write protection); "
                 "raise vm.max_map_count or use fewer mappings",
                 budget * 4);
        goto out;
      }
    }
    /* Register every write mapping before any is protected. */
    if (want_backend == BACKEND_UFFD) {
      size_t high = atomic_load(&cowshm_slot_high);
      for (size_t i = 0; i < high && err == 0; i++) {
        struct cowshm_slot *s = &cowshm_slots[i];
        if (!is_write_slot_of(s, dom)) continue;
        err = uffd_register(s->start, s->len);
        if (err != 0) {
          what = "UFFDIO_REGISTER";
          for (size_t j = 0; j < i; j++)
            if (is_write_slot_of(&cowshm_slots[j], dom)) uffd_unregister(cowshm_slots[j].start, cowshm_slots[j].len);
        }
      }
      if (err != 0) goto out;
    }
    dom->used = 1;
  }
  struct domain *dom = &domains[d];
  for (size_t i = 0; i < MAX_SNAPSHOTS; i++) {
    if (atomic_load(&snaps[i].state) != SNAP_FREE) continue;
    sn = &snaps[i];
    if (i >= atomic_load(&snap_high)) atomic_store(&snap_high, i + 1);
    break;
  }
  if (sn == NULL) {
    err = EMFILE;
    snprintf(detail, sizeof detail, "at most %d snapshots can be live at once; release some", MAX_SNAPSHOTS);
    if (fresh && dom->nsnaps == 0) {
      /* Nothing is protected yet; only the registrations go. */
      size_t high = atomic_load(&cowshm_slot_high);
      if (dom->backend == BACKEND_UFFD)
        for (size_t i = 0; i < high; i++)
          if (is_write_slot_of(&cowshm_slots[i], dom)) uffd_unregister(cowshm_slots[i].start, cowshm_slots[i].len);
      dom->used = 0;
    }
    goto out;
  }
  sn->domain = d;
  sn->off = off;
  sn->len = len;
  sn->addr = slot->start;
  sn->bits = bits;
  bits = NULL;
  atomic_store(&sn->copied, 0);
  atomic_store(&sn->error, 0);
  sn->slot = slot;
  slot->snap = sn;
  dom->nsnaps++;
  atomic_store(&ever_armed, 1);
  /* Publish, arm the write mappings, wait out handlers that might not have
   * seen the new snapshot, then protect. */
  atomic_store_explicit(&sn->state, SNAP_LIVE, memory_order_release);
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++)
    if (is_write_slot_of(&cowshm_slots[i], dom)) atomic_store(&cowshm_slots[i].wp, d + 1);
  synchronize();
  atomic_fetch_add(&protect_gen, 1);
  for (size_t i = 0; i < high && err == 0; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (!is_write_slot_of(s, dom)) continue;
    err = protect_slot(s, dom);
    if (err != 0) {
      what = dom->backend == BACKEND_UFFD ? "UFFDIO_WRITEPROTECT" : "mprotect";
      if (err == ENOMEM && dom->backend == BACKEND_MPROTECT)
        snprintf(detail, sizeof detail, "vm.max_map_count reached while write-protecting %s", s->label);
    }
  }
  if (err != 0) snapshot_release_locked(sn); /* un-protects what was protected */
out:
  cowshm_registry_unlock();
  free((void *)bits);
  if (err != 0) {
    /* The snapshot's (unreturned) buffer is closed like any view: now, not
     * at the next GC. */
    cowshm_mapping_close(env, id);
    char msg[512];
    snprintf(msg, sizeof msg, "%s%s%s", label, detail[0] ? ": " : "", detail);
    return cowshm_throw_errno(env, err, what, msg);
  }
  napi_value arr;
  NAPI_OK(env, napi_create_array_with_length(env, 4, &arr));
  NAPI_OK(env, napi_set_element(env, arr, 0, ab));
  NAPI_OK(env, napi_set_element(env, arr, 1, cowshm_num(env, id)));
  NAPI_OK(env, napi_set_element(env, arr, 2, cowshm_num(env, (double)dom->chunk)));
  napi_value name;
  NAPI_OK(env, napi_create_string_utf8(env, dom->backend == BACKEND_UFFD ? "userfaultfd" : "mprotect",
                                       NAPI_AUTO_LENGTH, &name));
  NAPI_OK(env, napi_set_element(env, arr, 3, name));
  return arr;
}

/* ---- queries ------------------------------------------------------------- */

static struct snapshot *snap_of(napi_env env, napi_value idv) {
  double id;
  if (napi_get_value_double(env, idv, &id) != napi_ok) return NULL;
  struct cowshm_slot *s = cowshm_slot_by_id(id);
  if (s == NULL || s->access != ACCESS_SNAPSHOT || s->snap == NULL) {
    cowshm_throw_code(env, "ERR_COWSHM_CLOSED", "the snapshot is released");
    return NULL;
  }
  return s->snap;
}

/* snapshotStats(id) -> [copiedPages, error errno or 0] */
static napi_value stats_js(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr;
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  cowshm_registry_lock();
  struct snapshot *sn = snap_of(env, argv[0]);
  size_t copied = sn ? atomic_load(&sn->copied) : 0;
  int error = sn ? atomic_load(&sn->error) : 0;
  cowshm_registry_unlock();
  if (sn == NULL) return NULL;
  NAPI_OK(env, napi_create_array_with_length(env, 2, &arr));
  NAPI_OK(env, napi_set_element(env, arr, 0, cowshm_num(env, (double)copied)));
  NAPI_OK(env, napi_set_element(env, arr, 1, cowshm_num(env, (double)error)));
  return arr;
}

/* snapshotChanged(id) -> Uint32Array of page indexes copied so far */
static napi_value changed_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!cowshm_args(env, info, 1, argv)) return NULL;
  cowshm_registry_lock();
  struct snapshot *sn = snap_of(env, argv[0]);
  if (sn == NULL) {
    cowshm_registry_unlock();
    return NULL;
  }
  size_t npages = (size_t)(sn->len / ps());
  size_t count = 0;
  for (size_t w = 0; w < (npages + 63) / 64; w++) count += (size_t)__builtin_popcountll(atomic_load(&sn->bits[w]));
  /* Pages copied while we scan are left out, never half-counted. */
  uint32_t *tmp = malloc((count ? count : 1) * sizeof *tmp);
  size_t n = 0;
  for (size_t w = 0; tmp != NULL && w < (npages + 63) / 64; w++) {
    uint64_t v = atomic_load(&sn->bits[w]);
    while (v != 0 && n < count) {
      tmp[n++] = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(v));
      v &= v - 1;
    }
  }
  cowshm_registry_unlock();
  if (tmp == NULL) return cowshm_throw_errno(env, ENOMEM, "malloc", NULL);
  napi_value ab, arr;
  void *data = NULL;
  if (napi_create_arraybuffer(env, n * sizeof(uint32_t), &data, &ab) != napi_ok) {
    free(tmp);
    cowshm_throw_napi_failure(env, "napi_create_arraybuffer", __FILE__, __LINE__);
    return NULL;
  }
  if (n) memcpy(data, tmp, n * sizeof(uint32_t));
  free(tmp);
  NAPI_OK(env, napi_create_typedarray(env, napi_uint32_array, n, ab, 0, &arr));
  return arr;
}

/* prepareWrite(dev, ino, offset, length): copy the range into every live
 * snapshot of the region and un-protect it in every write mapping, so the
 * kernel itself (read(2) into a view) can write there. */
static napi_value prepare_js(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint64_t dev, ino, off, len;
  if (!cowshm_args(env, info, 4, argv) || !cowshm_get_u64(env, argv[0], &dev) ||
      !cowshm_get_u64(env, argv[1], &ino) || !cowshm_get_u64(env, argv[2], &off) ||
      !cowshm_get_u64(env, argv[3], &len))
    return NULL;
  if (len == 0) return cowshm_undefined(env);
  cowshm_registry_lock();
  int d = find_domain(dev, ino);
  if (d < 0 || domains[d].nsnaps == 0) {
    cowshm_registry_unlock();
    return cowshm_undefined(env);
  }
  struct domain *dom = &domains[d];
  uint64_t lo = off & ~((uint64_t)dom->chunk - 1);
  uint64_t hi = (off + len + dom->chunk - 1) & ~((uint64_t)dom->chunk - 1);
  /* Under the lock no snapshot can appear or go, so no reader section is
   * needed against writers; handlers racing us only repeat idempotent work. */
  copy_into_snapshots(d, lo, hi);
  int err = 0;
  const char *label = "";
  size_t high = atomic_load(&cowshm_slot_high);
  for (size_t i = 0; i < high; i++) {
    struct cowshm_slot *s = &cowshm_slots[i];
    if (!is_write_slot_of(s, dom) || atomic_load(&s->wp) != d + 1) continue;
    uint64_t vlo = s->file_offset, vhi = s->file_offset + s->len;
    uint64_t a = lo > vlo ? lo : vlo, b = hi < vhi ? hi : vhi;
    if (a >= b) continue;
    uintptr_t start = s->start + (uintptr_t)(a - vlo);
    if (dom->backend == BACKEND_UFFD)
      err = uffd_protect(start, (size_t)(b - a), 0);
    else if (mprotect((void *)start, (size_t)(b - a), PROT_READ | PROT_WRITE) != 0)
      err = errno;
    if (err != 0) {
      label = s->label;
      break;
    }
  }
  const char *call = dom->backend == BACKEND_UFFD ? "ioctl" : "mprotect";
  cowshm_registry_unlock();
  if (err != 0) return cowshm_throw_errno(env, err, call, label);
  return cowshm_undefined(env);
}

/* snapshotInfo() -> { backend, reason, forced, userfaultfd, userfaultfdReason,
 *                     wpShmem, wpUnpopulated, error } */
static napi_value info_js(napi_env env, napi_callback_info info) {
  napi_value o, v;
  NAPI_OK(env, napi_create_object(env, &o));
#define SET_STR(key, str)                                                          \
  NAPI_OK(env, napi_create_string_utf8(env, (str), NAPI_AUTO_LENGTH, &v));         \
  NAPI_OK(env, napi_set_named_property(env, o, key, v))
#define SET_BOOL(key, b)                                                           \
  NAPI_OK(env, napi_get_boolean(env, (b) ? true : false, &v));                     \
  NAPI_OK(env, napi_set_named_property(env, o, key, v))
  SET_STR("backend", backend == BACKEND_UFFD ? "userfaultfd" : "mprotect");
  SET_STR("reason", backend_reason);
  SET_STR("forced", forced);
  SET_BOOL("userfaultfd", uffd_ok);
  SET_STR("userfaultfdReason", uffd_reason);
  SET_BOOL("wpShmem", uffd_wp_shmem);
  SET_BOOL("wpUnpopulated", uffd_wp_unpopulated);
  NAPI_OK(env, napi_set_named_property(env, o, "error", cowshm_num(env, backend_error)));
#undef SET_STR
#undef SET_BOOL
  return o;
}

napi_value cowshm_init_snapshot(napi_env env, napi_value exports) {
  pthread_once(&probe_once, probe);
  napi_property_descriptor props[] = {
      {"snapshotCreate", NULL, create_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"snapshotStats", NULL, stats_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"snapshotChanged", NULL, changed_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"prepareWrite", NULL, prepare_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"snapshotInfo", NULL, info_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
