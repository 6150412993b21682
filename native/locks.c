/* File locks: the one way cowshm asks "is the owner of this still alive?".
 *
 * A pid cannot answer that: pids are reused, differ between pid namespaces,
 * and a worker thread ended by worker.terminate() dies while its pid lives
 * on. A lock the kernel holds for an open file description can: it goes when
 * the last descriptor of that description is closed, which the kernel does
 * for every holder that exits or is killed, in any namespace, and (for OFD
 * locks) when a worker closes its own descriptor. So an owner holds a lock,
 * and whoever wonders whether it is alive tries a non-blocking lock of its
 * own: success means the owner is gone.
 *
 * Two kinds, both bound to the open file description (not the process, as
 * classic fcntl() record locks are: those are dropped when *any* descriptor
 * of the file is closed by the process, and never conflict within it):
 * - ofdLock: fcntl(F_OFD_SETLK/F_OFD_SETLKW) on a byte range, shared or
 *   exclusive. Works on every local file system and on NFS.
 * - flock: flock(2) on the whole file, shared or exclusive. Used where the
 *   lock must be taken on a descriptor that already exists (a region's fd).
 */
#include "cowshm.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>

enum { LOCK_KIND_UNLOCK = 0, LOCK_KIND_SHARED = 1, LOCK_KIND_EXCLUSIVE = 2 };

static napi_value granted(napi_env env, int yes) {
  napi_value v = NULL;
  napi_get_boolean(env, yes ? true : false, &v);
  return v;
}

/* ofdLock(fd, start, length, kind, wait) -> boolean. kind: 0 unlock,
 * 1 shared, 2 exclusive; length 0 means "to the end of the file, however it
 * grows". Without `wait`, a conflicting lock returns false (EAGAIN/EACCES);
 * with it, the call sleeps until the lock is granted. */
static napi_value ofd_lock_js(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int32_t fd, kind, wait;
  uint64_t start, length;
  if (!cowshm_args(env, info, 5, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &start) || !cowshm_get_u64(env, argv[2], &length) ||
      !cowshm_get_i32(env, argv[3], &kind) || !cowshm_get_i32(env, argv[4], &wait))
    return NULL;
  if (kind < LOCK_KIND_UNLOCK || kind > LOCK_KIND_EXCLUSIVE || start > INT64_MAX || length > INT64_MAX)
    return cowshm_throw_range(env, "cowshm internal error: ofdLock arguments out of range");
  struct flock fl = {
      .l_type = kind == LOCK_KIND_UNLOCK ? F_UNLCK : kind == LOCK_KIND_SHARED ? F_RDLCK : F_WRLCK,
      .l_whence = SEEK_SET,
      .l_start = (off_t)start,
      .l_len = (off_t)length,
      .l_pid = 0, /* must be 0 for OFD locks */
  };
  /* A blocking wait is interrupted by signals (EINTR) and simply retried. */
  if (RETRY(fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &fl)) == 0) return granted(env, 1);
  if (!wait && (errno == EAGAIN || errno == EACCES)) return granted(env, 0);
  return cowshm_throw_errno(env, errno, "fcntl", NULL);
}

/* ofdHeld(fd, start, length) -> whether another open file description holds
 * a lock on any byte of the range (F_OFD_GETLK: tests without taking one, so
 * a probe never makes a free slot look taken to someone scanning it). Works
 * on a descriptor opened read-only. */
static napi_value ofd_held_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd;
  uint64_t start, length;
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &start) || !cowshm_get_u64(env, argv[2], &length))
    return NULL;
  if (start > INT64_MAX || length > INT64_MAX)
    return cowshm_throw_range(env, "cowshm internal error: ofdHeld arguments out of range");
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)start, .l_len = (off_t)length};
  if (fcntl(fd, F_OFD_GETLK, &fl) != 0) return cowshm_throw_errno(env, errno, "fcntl", NULL);
  return granted(env, fl.l_type != F_UNLCK);
}

/* flock(fd, kind, wait) -> boolean, with the same kinds as ofdLock. */
static napi_value flock_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, kind, wait;
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_i32(env, argv[1], &kind) || !cowshm_get_i32(env, argv[2], &wait))
    return NULL;
  if (kind < LOCK_KIND_UNLOCK || kind > LOCK_KIND_EXCLUSIVE)
    return cowshm_throw_range(env, "cowshm internal error: flock kind out of range");
  int op = kind == LOCK_KIND_UNLOCK ? LOCK_UN : kind == LOCK_KIND_SHARED ? LOCK_SH : LOCK_EX;
  if (!wait) op |= LOCK_NB;
  if (RETRY(flock(fd, op)) == 0) return granted(env, 1);
  if (!wait && errno == EWOULDBLOCK) return granted(env, 0);
  return cowshm_throw_errno(env, errno, "flock", NULL);
}

napi_value cowshm_init_locks(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"ofdLock", NULL, ofd_lock_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ofdHeld", NULL, ofd_held_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"flock", NULL, flock_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
