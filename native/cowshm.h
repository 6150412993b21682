/*
 * cowshm native addon: shared declarations.
 *
 * The addon is deliberately small. It does only what JavaScript cannot:
 * the shm/memfd/fallocate/mmap syscalls, turning mappings into ArrayBuffers
 * that can be detached, and the SIGSEGV/SIGBUS handlers. Argument checking
 * happens in TypeScript before any of these functions are reached; the checks
 * here only guard memory safety.
 */
#ifndef COWSHM_H
#define COWSHM_H

#include <errno.h>
#include <node_api.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <sys/types.h>

/* ---- errors (errors.c) ------------------------------------------------- */

/* Every error the addon throws is made by JavaScript, by one of the two
 * factories src/native.ts hands over once at load (init): the class and the
 * wording are decided in one place (src/errors.ts) for JS and C alike. */
napi_value cowshm_init_js(napi_env env, napi_callback_info info);
/* A failed system call: a Node-style system error with err.code ('ENOENT'),
 * err.errno (negative, as in Node), err.syscall and err.path. Always returns
 * NULL for convenient tail calls. */
napi_value cowshm_throw_errno(napi_env env, int err, const char *syscall, const char *target);
/* A refusal with an ERR_* (or errno-named) code: src/errors.ts chooses its
 * class by the code. Returns NULL. */
napi_value cowshm_throw_code(napi_env env, const char *code, const char *msg);
/* ERR_OUT_OF_RANGE (RangeError) and ERR_INVALID_ARG_TYPE (TypeError). */
napi_value cowshm_throw_range(napi_env env, const char *msg);
napi_value cowshm_throw_type(napi_env env, const char *msg);

/* A failed napi_* call is a bug in the addon, not a user error. */
#define NAPI_OK(env, call)                                                   \
  do {                                                                       \
    if ((call) != napi_ok) {                                                 \
      cowshm_throw_napi_failure((env), #call, __FILE__, __LINE__);           \
      return NULL;                                                           \
    }                                                                        \
  } while (0)
void cowshm_throw_napi_failure(napi_env env, const char *what, const char *file, int line);

/* Runs a syscall again while it fails with EINTR; evaluates to its result. */
#define RETRY(expr)                                                          \
  ({                                                                         \
    long _r;                                                                 \
    do _r = (long)(expr);                                                    \
    while (_r == -1 && errno == EINTR);                                      \
    _r;                                                                      \
  })

/* Positional argument readers; each throws and returns false on a wrong type. */
int cowshm_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
/* cowshm_args with room for `room` arguments (at least `want` given) and the function's data. */
int cowshm_args_data(napi_env env, napi_callback_info info, size_t want, size_t room, napi_value *argv, void **data);
int cowshm_get_i32(napi_env env, napi_value v, int32_t *out);
int cowshm_get_u64(napi_env env, napi_value v, uint64_t *out);
int cowshm_get_str(napi_env env, napi_value v, char *buf, size_t size);
napi_value cowshm_num(napi_env env, double d);
napi_value cowshm_undefined(napi_env env);

/* ---- per-environment state (env.c) ------------------------------------- */

struct cowshm_env {
  napi_ref system_error;  /* (errno, syscall, target?) => Error, from init */
  napi_ref refusal;       /* (code, message) => Error, from init */
  int *fds; /* descriptors opened by this environment and not yet closed */
  size_t nfds, capfds;
  int main_thread;        /* said by JS at load: no teardown sentinel needed (mapping.c) */
  napi_ref sentinel;      /* the newest teardown sentinel (mapping.c) */
  uintptr_t sentinel_token, sentinels_made;
};
/* Makes this environment's state and its teardown hook; 0 with an exception pending. */
int cowshm_env_init(napi_env env);
struct cowshm_env *cowshm_env_get(napi_env env);
void cowshm_env_track_fd(napi_env env, int fd);
void cowshm_env_untrack_fd(napi_env env, int fd);

/* ---- the process-wide registry of mappings (registry.c) ----------------- */

/* Worker threads share one address space, and the signal handlers must know
 * every cowshm range, so the registry is process-wide. Its storage is static:
 * the signal handlers read it without locks or allocation. Writers hold
 * cowshm_registry_lock; a slot is published by a release store of `state`. */
#define COWSHM_MAX_SLOTS 16384

/* SLOT_CLOSED: the view was closed; the slot owns nothing any more (mapping.c
 * keeps the range reserved until its ArrayBuffer is collected) and stays only
 * to explain faults in the range, until cowshm_slot_alloc needs it. */
enum cowshm_state { SLOT_FREE = 0, SLOT_BUSY = 1, SLOT_MAPPED = 2, SLOT_CLOSED = 3 };
enum cowshm_access { ACCESS_READ = 0, ACCESS_WRITE = 1, ACCESS_COW = 2, ACCESS_SNAPSHOT = 3 };

struct cowshm_slot {
  _Atomic int state;
  _Atomic uint32_t gen; /* bumped on every reuse; part of the id JS holds */
  uintptr_t start;     /* page aligned */
  size_t len;          /* mapped length, a whole number of pages */
  size_t byte_length;  /* length of the ArrayBuffer, <= len */
  uint64_t file_offset;
  uint64_t dev, ino;   /* the region's identity: snapshots find write views by it */
  int access;          /* enum cowshm_access */
  double owner;        /* the JS Region's token: close() unmaps by it */
  napi_env env;        /* the environment that owns the ArrayBuffer */
  napi_ref ab_ref;     /* weak reference used to detach the ArrayBuffer */
  char label[112];     /* "region 'prices' (shm), view 3": for fault reports */
  int huge_shift;      /* log2 of the hugetlb page size, 0 for the system page */
  /* Owned by snapshot.c (under cowshm_registry_lock). */
  _Atomic int wp;      /* write protection armed on this mapping */
  void *snap;          /* for ACCESS_SNAPSHOT: the snapshot it belongs to */
};

extern struct cowshm_slot cowshm_slots[COWSHM_MAX_SLOTS];
extern _Atomic size_t cowshm_slot_high; /* slots [0, high) may be in use */

void cowshm_registry_lock(void);
void cowshm_registry_unlock(void);
/* Returns a slot in SLOT_BUSY state, or NULL when every slot is taken. */
struct cowshm_slot *cowshm_slot_alloc(void);
void cowshm_slot_publish(struct cowshm_slot *s);
void cowshm_slot_free(struct cowshm_slot *s);
double cowshm_slot_id(const struct cowshm_slot *s);
/* The slot for a JS id if it still belongs to that id (generation matches). */
struct cowshm_slot *cowshm_slot_by_id(double id);
/* Async-signal-safe: the mapped or closed slot that contains addr, or NULL. */
struct cowshm_slot *cowshm_slot_find(uintptr_t addr);
/* Async-signal-safe: the mapped slot that contains addr and its generation,
 * or NULL. The answer may be stale by the time it returns: confirm it with
 * cowshm_slot_holds() where the slot cannot be reused (snapshot.c). */
struct cowshm_slot *cowshm_slot_find_gen(uintptr_t addr, uint32_t *gen);
/* Async-signal-safe: whether s is still mapped, in generation gen, over addr. */
int cowshm_slot_holds(const struct cowshm_slot *s, uint32_t gen, uintptr_t addr);

/* ---- mappings (mapping.c) ---------------------------------------------- */

extern size_t cowshm_page_size;
napi_value cowshm_init_mapping(napi_env env, napi_value exports);
/* The `flags` of cowshm_mapping_create and mapView: MAP_FLAG_POPULATE, and in
 * the bits from MAP_FLAG_HUGE_SHIFT up, log2 of the region's hugetlb page size
 * (0: the system page). Private mappings of a hugetlb region are made with
 * MAP_NORESERVE: without it the kernel reserves their whole length from the
 * pool at mmap time, so a cow view or a snapshot would need a second pool as
 * large as the region; with it each copied huge page is taken when written. */
#define MAP_FLAG_POPULATE 1
#define MAP_FLAG_HUGE_SHIFT 8
#define MAP_FLAG_HUGE(flags) (((flags) >> MAP_FLAG_HUGE_SHIFT) & 63)
/* Maps fd and wraps the range in an external ArrayBuffer, which owns it from
 * then on (the lifetime rules are at the top of mapping.c). Returns the
 * ArrayBuffer and stores the slot id in *out_id. */
napi_value cowshm_mapping_create(napi_env env, int fd, uint64_t offset, size_t length, int access,
                                 const char *label, double owner, uint64_t dev, uint64_t ino,
                                 int flags, double *out_id);
/* Maps fd into a published slot without making its ArrayBuffer (viewBuffer
 * makes it when JS first asks): until then the slot owns the range, and
 * cowshm_mapping_close() unmaps it at once. Throws and returns NULL on failure. */
struct cowshm_slot *cowshm_mapping_map(napi_env env, int fd, uint64_t offset, size_t length, int access,
                                       const char *label, double owner, uint64_t dev, uint64_t ino, int flags);
/* What close() does for a view: detaches its ArrayBuffer (if one was made)
 * and unmaps the range, keeping a reservation while a buffer may point at it.
 * Returns 0, with an exception pending, only if the buffer can't be detached. */
int cowshm_mapping_close(napi_env env, double id);
/* Environment teardown: unmap everything that environment mapped. */
void cowshm_mapping_release_all(napi_env env);
/* Environment teardown, before release_all: takes an open mapping of env
 * (Node has detached its buffer by then) away from it, puts a PROT_NONE
 * reservation over it and hands the range to the caller, who unmaps it once
 * nothing can write into that address any more (a writer in another process
 * pushing into a cross-process snapshot: xproc.c). Returns 1 with the range
 * in *start and *len, or 0 when id is no open mapping of env. */
int cowshm_mapping_take(napi_env env, double id, uintptr_t *start, size_t *len);

/* ---- descriptors (fd.c) ------------------------------------------------ */

napi_value cowshm_init_fd(napi_env env, napi_value exports);
napi_value cowshm_init_locks(napi_env env, napi_value exports);
/* close() for JS: forgets fd in this environment, then closes it; throws on a
 * real failure. Returns undefined, or NULL with the error pending. */
napi_value cowshm_close_fd(napi_env env, int fd);

/* ---- snapshots held by other processes (snapshot.c, xproc.c) ----------- */
/* Signal context: copies file range [lo, hi) into a snapshot another process
 * holds, before a write lands. Returns 0 or an errno (the snapshot breaks). */
typedef int (*cowshm_push_fn)(void *ctx, uint64_t lo, uint64_t hi);
/* Write-protects this process's write views of (dev, ino) for a snapshot
 * whose copies are made by push, `chunk` bytes at a time at least (a power of
 * two >= the page; the backend's protection chunk if larger). NULL with *err
 * and *call on failure. */
void *cowshm_snapshot_remote_create(uint64_t dev, uint64_t ino, uint64_t size, size_t chunk, cowshm_push_fn push,
                                    void *ctx, int *err, const char **call);
void cowshm_snapshot_remote_release(void *handle);
napi_value cowshm_init_xproc(napi_env env, napi_value exports);

/* ---- signals (signals.c) ----------------------------------------------- */

void cowshm_signals_install(void);
/* Puts cowshm's handlers back in front where something replaced them (an
 * application's process.on('SIGBUS'), a reset to SIG_DFL), chaining to what
 * was there. Returns how many it re-installed. Not from signal context. */
int cowshm_signals_ensure(void);
/* Async-signal-safe helpers for reports. */
void cowshm_sigwrite(const char *s);
void cowshm_sigwrite_hex(uintptr_t v);
void cowshm_sigwrite_dec(uint64_t v);
/* Whether the faulting access was a write: 1 or 0 where the CPU tells, -1
 * where it does not. Async-signal-safe. */
int cowshm_fault_is_write(void *uctx);

/* ---- kernels (kernels.c) ----------------------------------------------- */

napi_value cowshm_init_kernels(napi_env env, napi_value exports);

/* ---- futex wait and wake (futex.c) ------------------------------------ */

napi_value cowshm_init_futex(napi_env env, napi_value exports);
/* Called under the registry lock before a mapping goes: ends the waits on
 * its words (they settle as closed) and returns once no waiter thread passes
 * an address in it to the kernel any more. */
void cowshm_futex_on_unmap(struct cowshm_slot *s);

/* ---- checkpoints (checkpoint.c) ---------------------------------------- */

napi_value cowshm_init_checkpoint(napi_env env, napi_value exports);

/* ---- snapshots (snapshot.c) -------------------------------------------- */

napi_value cowshm_init_snapshot(napi_env env, napi_value exports);
/* Called from the SIGSEGV/SIGBUS handler first: returns 1 when the fault was a
 * write to a write-protected page that it has resolved, so the faulting
 * instruction may be retried. Async-signal-safe. */
int cowshm_snapshot_fault(int sig, siginfo_t *si, void *uctx);
/* Called under the registry lock when a write mapping appears or goes away.
 * on_map returns 0, or an errno and the name of the call that failed. */
int cowshm_snapshot_on_map(struct cowshm_slot *s, const char **syscall);
void cowshm_snapshot_on_unmap(struct cowshm_slot *s);

#endif
