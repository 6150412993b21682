/* SIGSEGV and SIGBUS: resolve snapshot write faults, explain faults in cowshm
 * ranges, and hand every other fault to the handler that was there before
 * (Node's and V8's WebAssembly trap handling among them).
 *
 * Everything on_fault reaches is async-signal-safe: no allocation, no locks,
 * no stdio.
 *
 * Keeping the handler. `process.on('SIGBUS')` makes libuv install its own
 * handler over ours, and removing the last such listener resets the signal to
 * SIG_DFL. libuv's handler only queues the signal for the event loop and
 * returns, so a protected write would re-execute forever; SIG_DFL would kill
 * the process at the next one. cowshm_signals_ensure() puts on_fault back in
 * front, chaining to whatever it replaced (a listener's handler) or, when it
 * replaced SIG_DFL, to the handler that was there when cowshm loaded. It runs
 * from process 'newListener' / 'removeListener' hooks (src/signals.ts) and at
 * every snapshot. */
#include "cowshm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

/* The handlers to chain to, per signal (0: SIGSEGV, 1: SIGBUS). Append-only:
 * an entry is written once, before its index is published with a release
 * store, and never changed, so the handler can read the published entry with
 * no lock while cowshm_signals_ensure() appends another. Entry 0 is the
 * handler cowshm found when it loaded. Distinct handlers are few (the
 * original, libuv's, an addon's): a full table keeps chaining to the last. */
#define MAX_PREV 16
static struct sigaction prevs[2][MAX_PREV];
static int nprev[2];            /* under ensure_mutex */
static _Atomic int prev_at[2];  /* the entry in use */
static pthread_once_t install_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t ensure_mutex = PTHREAD_MUTEX_INITIALIZER;

static int sig_index(int sig) { return sig == SIGBUS ? 1 : 0; }

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

/* Called from the handler just before it returns for a fault it will not
 * resolve (a cowshm range written the wrong way, or a foreign fault whose
 * previous action was the default).
 * SAFETY: sigaction(2) is async-signal-safe. The faulting instruction
 * re-executes on return and, now with the default action, ends the process
 * with the signal's usual status and core dump, as it would without cowshm. */
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
   * kill(2) is raised again.
   * SAFETY: raise(3) is async-signal-safe; with SA_NODEFER the signal is
   * not blocked here, so it is delivered, with the default action, before
   * raise returns. */
  restore_default(sig);
  if (si->si_code <= 0) raise(sig);
}

static void on_fault(int sig, siginfo_t *si, void *uctx) {
  /* SAFETY: everything called below only touches errno as a side effect;
   * the interrupted code must find it unchanged. */
  int saved_errno = errno;
  if (si->si_code > 0) {
    if (cowshm_snapshot_fault(sig, si, uctx)) {
      errno = saved_errno;
      return;
    }
    /* A fault in a cowshm range that is not a snapshot write ends the
     * process: say what was hit first.
     * SAFETY: the slot's label, offsets and access were written before it
     * was published and stay while it is mapped or closed; a slot reused at
     * this very moment can only make the report name the wrong view, never
     * fault (the label is a fixed array, always NUL-terminated). */
    const struct cowshm_slot *s = cowshm_slot_find((uintptr_t)si->si_addr);
    if (s != NULL) {
      report(sig, si, uctx, s);
      restore_default(sig);
      errno = saved_errno;
      return;
    }
  }
  /* SAFETY: the acquire load pairs with the release store in ensure(): the
   * entry it names was completely written before, and is never written
   * again (the table is append-only). */
  int k = sig_index(sig);
  chain(sig, si, uctx, &prevs[k][atomic_load_explicit(&prev_at[k], memory_order_acquire)]);
  errno = saved_errno;
}

/* SA_NODEFER: the signal stays unblocked while on_fault runs. A fault raised
 * inside it (a chained handler that faults, or a bug) then reaches on_fault
 * again and is reported or chained, instead of arriving while blocked, which
 * the kernel answers for a synchronous fault by killing the process with no
 * report. SAFETY: on_fault is reentrant: it keeps nothing between calls but
 * locals, and what it shares is read-only to it or updated atomically.
 * SA_ONSTACK: faults in threads that run on an alternate signal stack (V8's
 * stack-overflow handling) are handled there. */
static void ours(struct sigaction *sa) {
  memset(sa, 0, sizeof *sa);
  sa->sa_sigaction = on_fault;
  sa->sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa->sa_mask);
}

static int is_ours(const struct sigaction *sa) {
  return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_fault;
}

static int same_action(const struct sigaction *a, const struct sigaction *b) {
  if ((a->sa_flags & SA_SIGINFO) != (b->sa_flags & SA_SIGINFO)) return 0;
  return (a->sa_flags & SA_SIGINFO) ? a->sa_sigaction == b->sa_sigaction : a->sa_handler == b->sa_handler;
}

static void install(void) {
  struct sigaction sa;
  ours(&sa);
  sigaction(SIGSEGV, &sa, &prevs[0][0]);
  sigaction(SIGBUS, &sa, &prevs[1][0]);
  nprev[0] = nprev[1] = 1;
}

void cowshm_signals_install(void) { pthread_once(&install_once, install); }

static int ensure_one(int sig) {
  int k = sig_index(sig);
  struct sigaction cur, sa;
  if (sigaction(sig, NULL, &cur) != 0 || is_ours(&cur)) return 0;
  /* Someone replaced on_fault. SIG_DFL is what removing the last listener
   * leaves; chain to the handler from before cowshm loaded then. */
  int at = 0;
  if ((cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL) {
    at = -1;
    for (int i = 0; i < nprev[k]; i++)
      if (same_action(&prevs[k][i], &cur)) at = i;
    if (at < 0 && nprev[k] < MAX_PREV) {
      at = nprev[k]++;
      prevs[k][at] = cur;
    }
    if (at < 0) at = nprev[k] - 1; /* full: see MAX_PREV */
  }
  /* Publish the handler to chain to before on_fault can run again. */
  atomic_store_explicit(&prev_at[k], at, memory_order_release);
  ours(&sa);
  sigaction(sig, &sa, NULL);
  return 1;
}

int cowshm_signals_ensure(void) {
  cowshm_signals_install();
  pthread_mutex_lock(&ensure_mutex);
  int n = ensure_one(SIGSEGV) + ensure_one(SIGBUS);
  pthread_mutex_unlock(&ensure_mutex);
  return n;
}
