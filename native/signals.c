/* SIGSEGV and SIGBUS: resolve snapshot write faults, explain faults in cowshm
 * ranges, and hand every other fault to the handler that was there before
 * (Node's and V8's WebAssembly trap handling among them).
 *
 * Everything here is async-signal-safe: no allocation, no locks, no stdio. */
#include "cowshm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static struct sigaction prev_segv, prev_bus;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

void cowshm_sigwrite(const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, s, n);
    if (w <= 0) {
      if (w < 0 && errno == EINTR) continue;
      return;
    }
    s += w;
    n -= (size_t)w;
  }
}

void cowshm_sigwrite_hex(uintptr_t v) {
  char buf[2 + 16 + 1];
  char *p = buf + sizeof buf - 1;
  *p = 0;
  do {
    *--p = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v != 0);
  *--p = 'x';
  *--p = '0';
  cowshm_sigwrite(p);
}

void cowshm_sigwrite_dec(uint64_t v) {
  char buf[21];
  char *p = buf + sizeof buf - 1;
  *p = 0;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  cowshm_sigwrite(p);
}

int cowshm_fault_is_write(void *uctx) {
#if defined(__x86_64__)
  const ucontext_t *uc = uctx;
  return (uc->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
  (void)uctx;
  return -1;
#endif
}

static void restore_default(int sig) {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(sig, &dfl, NULL);
}

/* Copies the first line of a small sysfs file into buf (async-signal-safe:
 * open, read and close only); "?" when it can't be read. */
static void read_line(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  ssize_t n = fd < 0 ? -1 : read(fd, buf, size - 1);
  if (fd >= 0) close(fd);
  if (n <= 0) n = 0;
  buf[n] = 0;
  for (ssize_t i = 0; i < n; i++)
    if (buf[i] == '\n') buf[i] = 0;
  if (buf[0] == 0) strcpy(buf, "?");
}

/* A write into a private mapping of a hugetlb region (a cow view or a
 * snapshot's buffer) that found no free huge page for its copy: the kernel
 * raises SIGBUS, as it can neither wait for a page nor fail the store. Says
 * which pool ran dry and how to grow it. */
static void report_pool(const struct cowshm_slot *s) {
  char dir[96] = "/sys/kernel/mm/hugepages/hugepages-", path[160], total[32], free_[32];
  char kb[24];
  char *p = kb + sizeof kb - 1;
  uint64_t v = ((uint64_t)1 << s->huge_shift) / 1024;
  *p = 0;
  do *--p = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  strcat(dir, p);
  strcat(dir, "kB/");
  strcpy(path, dir);
  strcat(path, "nr_hugepages");
  read_line(path, total, sizeof total);
  strcpy(path, dir);
  strcat(path, "free_hugepages");
  read_line(path, free_, sizeof free_);
  cowshm_sigwrite("cowshm: no free huge page for the private copy this access needs: each huge page first written "
                  "through a copy-on-write view or a snapshot's buffer takes one page from the pool (");
  cowshm_sigwrite(dir);
  cowshm_sigwrite(": ");
  cowshm_sigwrite(total);
  cowshm_sigwrite(" pages, ");
  cowshm_sigwrite(free_);
  cowshm_sigwrite(" free); raise ");
  cowshm_sigwrite(dir);
  cowshm_sigwrite("nr_hugepages (/proc/sys/vm/nr_hugepages for the default size)\n");
}

static void report(int sig, siginfo_t *si, void *uctx, const struct cowshm_slot *s) {
  static const char *access_names[] = {"read", "write", "cow", "snapshot"};
  uintptr_t addr = (uintptr_t)si->si_addr;
  int write = cowshm_fault_is_write(uctx);
  int closed = atomic_load(&s->state) == SLOT_CLOSED;
  int pool = !closed && sig == SIGBUS && s->huge_shift != 0 && s->access >= ACCESS_COW;
  cowshm_sigwrite("\ncowshm: fatal ");
  cowshm_sigwrite(write == 1 ? "write to " : write == 0 ? "read from " : "access to ");
  if (closed) {
    cowshm_sigwrite("a closed view of ");
  } else if (sig == SIGBUS && !pool) {
    cowshm_sigwrite("a page past the end of the file behind ");
  } else {
    cowshm_sigwrite("a view with access '");
    cowshm_sigwrite(access_names[s->access & 3]);
    cowshm_sigwrite("' of ");
  }
  cowshm_sigwrite(s->label);
  cowshm_sigwrite(" at view offset ");
  cowshm_sigwrite_dec(addr - s->start);
  cowshm_sigwrite(" (region offset ");
  cowshm_sigwrite_dec(s->file_offset + (addr - s->start));
  cowshm_sigwrite(", address ");
  cowshm_sigwrite_hex(addr);
  cowshm_sigwrite(")\n");
  if (closed)
    cowshm_sigwrite("cowshm: native code kept a pointer into a view after close()\n");
  else if (pool)
    report_pool(s);
  else if (sig == SIGBUS)
    cowshm_sigwrite("cowshm: another process truncated the region, or /dev/shm ran out of space "
                    "for a region created with reserve: false\n");
  else if (write == 1 && s->access == ACCESS_READ)
    cowshm_sigwrite("cowshm: map the region with { access: 'write' } or { access: 'cow' } to write to it\n");
}

static void chain(int sig, siginfo_t *si, void *uctx, const struct sigaction *prev) {
  if (prev->sa_flags & SA_SIGINFO) {
    if (prev->sa_sigaction != NULL) {
      prev->sa_sigaction(sig, si, uctx);
      return;
    }
  } else if (prev->sa_handler == SIG_IGN) {
    return;
  } else if (prev->sa_handler != SIG_DFL && prev->sa_handler != NULL) {
    prev->sa_handler(sig);
    return;
  }
  /* Default action: reinstate it; a hardware fault then re-executes and
   * terminates the process as it would have without us; a signal sent by
   * kill(2) is raised again. */
  restore_default(sig);
  if (si->si_code <= 0) raise(sig);
}

static void on_fault(int sig, siginfo_t *si, void *uctx) {
  int saved_errno = errno;
  if (si->si_code > 0) {
    if (cowshm_snapshot_fault(sig, si, uctx)) {
      errno = saved_errno;
      return;
    }
    const struct cowshm_slot *s = cowshm_slot_find((uintptr_t)si->si_addr);
    if (s != NULL) {
      report(sig, si, uctx, s);
      restore_default(sig);
      errno = saved_errno;
      return;
    }
  }
  chain(sig, si, uctx, sig == SIGBUS ? &prev_bus : &prev_segv);
  errno = saved_errno;
}

static void install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &prev_segv);
  sigaction(SIGBUS, &sa, &prev_bus);
}

void cowshm_signals_install(void) { pthread_once(&install_once, install); }
