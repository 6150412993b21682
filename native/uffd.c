/* userfaultfd: the probe that decides whether it can be used, and the
 * write-protection backend built on it.
 *
 * One process-wide uffd, opened with UFFD_USER_MODE_ONLY (allowed to
 * unprivileged users), with the features SIGBUS | WP_HUGETLBFS_SHMEM |
 * WP_UNPOPULATED: write mappings are registered in WP mode, protected with
 * UFFDIO_WRITEPROTECT, and a write to a protected page raises a synchronous
 * SIGBUS in the writing thread. No VMA splits, no handler thread.
 */
#include "backend.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
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

/* Set once by the probe, before any snapshot exists; read-only afterwards
 * (from signal context too). */
static int uffd = -1;

/* ---- the probe ----------------------------------------------------------- */

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
static void probe(struct cowshm_uffd_probe *out) {
  char *uffd_reason = out->reason;
  int flags = O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY;
  int fd = uffd_open(flags, uffd_reason, sizeof out->reason);
  if (fd < 0) return;
  struct uffdio_api api = {.api = UFFD_API,
                           .features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
                                       UFFD_FEATURE_WP_UNPOPULATED};
  if (ioctl(fd, UFFDIO_API, &api) != 0) {
    /* Before 6.4 there is no WP_UNPOPULATED; shmem gets its markers anyway.
     * A failed UFFDIO_API leaves the descriptor unusable: open another. */
    close(fd);
    fd = uffd_open(flags, uffd_reason, sizeof out->reason);
    if (fd < 0) return;
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_SIGBUS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
      snprintf(uffd_reason, sizeof out->reason,
               "UFFDIO_API refused SIGBUS delivery with write-protection of shmem (%s): kernel older than 5.19?",
               strerrorname_np(errno));
      close(fd);
      return;
    }
  } else {
    out->wp_unpopulated = 1;
  }
  size_t p = cowshm_page_size;
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
  out->ok = 1;
  snprintf(uffd_reason, sizeof out->reason,
           "userfaultfd opened (UFFD_USER_MODE_ONLY); write-protection of shmem with SIGBUS delivery works%s",
           out->wp_unpopulated ? "" : " (without WP_UNPOPULATED)");
  return;
fail:
  err = errno;
  if (m != MAP_FAILED) munmap(m, p);
  if (mfd >= 0) close(mfd);
  close(fd);
  snprintf(uffd_reason, sizeof out->reason, "userfaultfd opened, but %s failed%s%s", step, err ? ": " : "",
           err ? strerrorname_np(err) : "");
}

void cowshm_uffd_probe(struct cowshm_uffd_probe *out) {
  memset(out, 0, sizeof *out);
  probe(out);
}

/* ---- the backend ---------------------------------------------------------- */

/* userfaultfd write-protects shmem and hugetlbfs only: regular files on disk
 * take the mprotect backend. */
static int usable_for(int fd) {
  struct statfs sf;
  if (uffd < 0) return 0;
  if (fstatfs(fd, &sf) != 0) return -errno;
  return (unsigned long)sf.f_type == TMPFS_MAGIC || (unsigned long)sf.f_type == HUGETLBFS_MAGIC;
}

/* Protection is per page: no VMA is split, so there is no budget to keep. */
static size_t chunk_size(uint64_t bytes, char *why, size_t whysize) { return cowshm_page_size; }

/* SIGBUS delivery (UFFD_FEATURE_SIGBUS) is also how the kernel reports a page
 * past the end of the file, or no space in /dev/shm: the engine tells those
 * apart by whether anything was left to resolve. */
static int is_write_fault(const siginfo_t *si, void *uctx) { return 1; }

static int arm(uintptr_t start, size_t len) {
  struct uffdio_register reg = {.range = {.start = start, .len = len}, .mode = UFFDIO_REGISTER_MODE_WP};
  return ioctl(uffd, UFFDIO_REGISTER, &reg) == 0 ? 0 : errno;
}

static int writeprotect(uintptr_t start, size_t len, int on) {
  struct uffdio_writeprotect wp = {.range = {.start = start, .len = len},
                                   .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : UFFDIO_WRITEPROTECT_MODE_DONTWAKE};
  return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) == 0 ? 0 : errno;
}

static int protect(uintptr_t start, size_t len) { return writeprotect(start, len, 1); }

/* SAFETY (signal context): ioctl(2) is a plain system call; uffd is never
 * written after the probe; no SIGBUS thread waits on the uffd (DONTWAKE). An
 * unprotect of a range that is not registered, or with no uffd open (a stale
 * SIGBUS after the last snapshot went), fails harmlessly. */
static int unprotect(uintptr_t start, size_t len) {
  if (uffd < 0) return EBADF;
  return writeprotect(start, len, 0);
}

static void disarm(uintptr_t start, size_t len) {
  writeprotect(start, len, 0);
  struct uffdio_range r = {.start = start, .len = len};
  /* Fails only for ranges that are not registered: nothing to undo then. */
  ioctl(uffd, UFFDIO_UNREGISTER, &r);
}

const struct cowshm_backend cowshm_uffd_backend = {
    .name = "userfaultfd",
    .syscall = "ioctl", /* UFFDIO_REGISTER and UFFDIO_WRITEPROTECT */
    .arm_call = "UFFDIO_REGISTER",
    .protect_call = "UFFDIO_WRITEPROTECT",
    .enomem_hint = NULL,
    .signal = SIGBUS,
    .fallback = &cowshm_mprotect_backend,
    .usable_for = usable_for,
    .chunk_size = chunk_size,
    .is_write_fault = is_write_fault,
    .arm = arm,
    .disarm = disarm,
    .protect = protect,
    .unprotect = unprotect,
};
