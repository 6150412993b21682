/* Descriptors: the syscalls that create, open, size and close a region's fd.
 * Every call is retried on EINTR; every failure becomes a Node-style error. */
#include "cowshm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* The figures fstat(), fstatInto() and shmOpenStat() hand to JS, in this
 * order: [size, uid, gid, mode, dev, ino, nlink]. */
static void put_stat(double *v, const struct stat *st) {
  v[0] = (double)st->st_size;
  v[1] = st->st_uid;
  v[2] = st->st_gid;
  v[3] = st->st_mode;
  v[4] = (double)st->st_dev;
  v[5] = (double)st->st_ino;
  v[6] = (double)st->st_nlink;
}

/* The calls below that take only a descriptor accept one more, optional
 * argument: the segment name or path to name in an error. */
struct target {
  char buf[PATH_MAX + 1];
  const char *str; /* NULL when the caller gave none */
};

static int args_with_target(napi_env env, napi_callback_info info, size_t want, napi_value *argv,
                            struct target *t) {
  napi_value all[8];
  size_t argc = want + 1;
  if (want + 1 > sizeof all / sizeof *all || napi_get_cb_info(env, info, &argc, all, NULL, NULL) != napi_ok) {
    cowshm_throw_napi_failure(env, "napi_get_cb_info", __FILE__, __LINE__);
    return 0;
  }
  if (argc < want) {
    cowshm_throw_type(env, "cowshm internal error: too few arguments to a native function");
    return 0;
  }
  for (size_t i = 0; i < want; i++) argv[i] = all[i];
  t->str = NULL;
  napi_valuetype type = napi_undefined;
  if (argc > want && napi_typeof(env, all[want], &type) == napi_ok && type == napi_string) {
    size_t len;
    if (napi_get_value_string_utf8(env, all[want], t->buf, sizeof t->buf, &len) == napi_ok) t->str = t->buf;
  }
  return 1;
}

/* shmOpen(name, oflag, mode) -> fd. `name` comes without the leading '/'. */
static napi_value shm_open_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char name[NAME_MAX + 3]; /* '/', up to NAME_MAX bytes, NUL, and one byte to detect overlong names */
  int32_t oflag, mode;
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_str(env, argv[0], name + 1, sizeof name - 1) ||
      !cowshm_get_i32(env, argv[1], &oflag) || !cowshm_get_i32(env, argv[2], &mode))
    return NULL;
  name[0] = '/';
  int fd = RETRY(shm_open(name, oflag | O_CLOEXEC, (mode_t)mode));
  if (fd < 0) return cowshm_throw_errno(env, errno, "shm_open", name + 1);
  cowshm_env_track_fd(env, fd);
  return cowshm_num(env, fd);
}

/* shmOpenStat(name, oflag, float64Array) -> fd. Region.open in one call:
 * shm_open, then fstat into the array as fstatInto does, and the effective
 * uid at [7] for the owner check (read on every open, never cached: a process
 * may change it). A failed fstat closes the descriptor before throwing.
 * With an array of 9, it first tries the shared flock every cowshm holder
 * keeps on a segment (see src/segments.ts) and says at [8] whether it was
 * granted (0: a removal holds its exclusive lock; JS waits for it), so the
 * fstat, nlink included, is taken under the lock. */
static napi_value shm_open_stat_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char name[NAME_MAX + 3];
  int32_t oflag;
  napi_typedarray_type type;
  size_t length;
  void *data;
  struct stat st;
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_str(env, argv[0], name + 1, sizeof name - 1) ||
      !cowshm_get_i32(env, argv[1], &oflag))
    return NULL;
  if (napi_get_typedarray_info(env, argv[2], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_float64_array || length < 8 || data == NULL)
    return cowshm_throw_type(env, "cowshm internal error: shmOpenStat needs a Float64Array of 8");
  name[0] = '/';
  int fd = RETRY(shm_open(name, oflag | O_CLOEXEC, 0));
  if (fd < 0) return cowshm_throw_errno(env, errno, "shm_open", name + 1);
  int locked = 0;
  if (length >= 9) {
    if (RETRY(flock(fd, LOCK_SH | LOCK_NB)) == 0) {
      locked = 1;
    } else if (errno != EWOULDBLOCK) {
      int err = errno;
      close(fd);
      return cowshm_throw_errno(env, err, "flock", name + 1);
    }
  }
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return cowshm_throw_errno(env, err, "fstat", name + 1);
  }
  cowshm_env_track_fd(env, fd);
  double *v = data;
  put_stat(v, &st);
  v[7] = geteuid();
  if (length >= 9) v[8] = locked;
  return cowshm_num(env, fd);
}

static napi_value shm_unlink_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  char name[NAME_MAX + 3];
  if (!cowshm_args(env, info, 1, argv) || !cowshm_get_str(env, argv[0], name + 1, sizeof name - 1))
    return NULL;
  name[0] = '/';
  if (shm_unlink(name) != 0) return cowshm_throw_errno(env, errno, "shm_unlink", name + 1);
  return cowshm_undefined(env);
}

/* memfdCreate(name, hugeShift) -> fd, sealable. hugeShift 0: the system
 * page; otherwise log2 of a hugetlb page size (21 for 2 MiB, 30 for 1 GiB),
 * which memfd_create takes in the bits above MFD_HUGE_SHIFT. */
static napi_value memfd_create_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char name[250];
  int32_t huge;
  if (!cowshm_args(env, info, 2, argv) || !cowshm_get_str(env, argv[0], name, sizeof name) ||
      !cowshm_get_i32(env, argv[1], &huge))
    return NULL;
  if (huge < 0 || huge > 63) return cowshm_throw_range(env, "cowshm internal error: bad huge page shift");
  unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING | (huge ? MFD_HUGETLB | ((unsigned)huge << 26) : 0);
  int fd = memfd_create(name, flags);
  if (fd < 0) return cowshm_throw_errno(env, errno, "memfd_create", name);
  cowshm_env_track_fd(env, fd);
  return cowshm_num(env, fd);
}

/* addSeals(fd, seals): F_SEAL_SHRINK keeps other holders from truncating the
 * memfd under our mappings (which would turn reads into SIGBUS). */
static napi_value add_seals_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct target t;
  int32_t fd, seals;
  if (!args_with_target(env, info, 2, argv, &t) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_i32(env, argv[1], &seals))
    return NULL;
  if (fcntl(fd, F_ADD_SEALS, seals) != 0) return cowshm_throw_errno(env, errno, "fcntl", t.str);
  return cowshm_undefined(env);
}

/* open(path, flags, mode) -> fd. The caller chooses O_NOFOLLOW: it is wanted
 * for user paths and impossible for /proc/PID/fd/N links. */
static napi_value open_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  char path[PATH_MAX + 1];
  int32_t flags, mode;
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_str(env, argv[0], path, sizeof path) ||
      !cowshm_get_i32(env, argv[1], &flags) || !cowshm_get_i32(env, argv[2], &mode))
    return NULL;
  int fd = RETRY(open(path, flags | O_CLOEXEC, (mode_t)mode));
  if (fd < 0) return cowshm_throw_errno(env, errno, "open", path);
  cowshm_env_track_fd(env, fd);
  return cowshm_num(env, fd);
}

napi_value cowshm_close_fd(napi_env env, int fd) {
  cowshm_env_untrack_fd(env, fd);
  /* Linux releases the descriptor even when close fails with EINTR: never retry. */
  if (close(fd) != 0 && errno != EINTR) return cowshm_throw_errno(env, errno, "close", NULL);
  return cowshm_undefined(env);
}

static napi_value close_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int32_t fd;
  if (!cowshm_args(env, info, 1, argv) || !cowshm_get_i32(env, argv[0], &fd)) return NULL;
  return cowshm_close_fd(env, fd);
}

static napi_value ftruncate_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct target t;
  int32_t fd;
  uint64_t size;
  if (!args_with_target(env, info, 2, argv, &t) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &size))
    return NULL;
  if (RETRY(ftruncate(fd, (off_t)size)) != 0) return cowshm_throw_errno(env, errno, "ftruncate", t.str);
  return cowshm_undefined(env);
}

/* fallocate(fd, offset, length): allocate the pages now, so a full /dev/shm
 * reports ENOSPC here instead of SIGBUS on first touch. */
static napi_value fallocate_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct target t;
  int32_t fd;
  uint64_t off, len;
  if (!args_with_target(env, info, 3, argv, &t) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_u64(env, argv[1], &off) || !cowshm_get_u64(env, argv[2], &len))
    return NULL;
  if (RETRY(fallocate(fd, 0, (off_t)off, (off_t)len)) != 0)
    return cowshm_throw_errno(env, errno, "fallocate", t.str);
  return cowshm_undefined(env);
}

/* seekData(fd, offset, hole) -> lseek(fd, offset, hole ? SEEK_HOLE : SEEK_DATA),
 * or -1 where lseek says ENXIO (no data at or after offset; for SEEK_HOLE, an
 * offset at or past the end). A file system without holes answers as if the
 * whole file were data. */
static napi_value seek_data_js(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t fd, hole;
  uint64_t off;
  if (!cowshm_args(env, info, 3, argv) || !cowshm_get_i32(env, argv[0], &fd) || !cowshm_get_u64(env, argv[1], &off) ||
      !cowshm_get_i32(env, argv[2], &hole))
    return NULL;
  off_t r = lseek(fd, (off_t)off, hole ? SEEK_HOLE : SEEK_DATA);
  if (r < 0 && errno != ENXIO) return cowshm_throw_errno(env, errno, "lseek", NULL);
  return cowshm_num(env, r < 0 ? -1 : (double)r);
}

/* fstat(fd) -> [size, uid, gid, mode, dev, ino, nlink] */
static napi_value fstat_js(napi_env env, napi_callback_info info) {
  napi_value argv[1], arr;
  struct target t;
  int32_t fd;
  struct stat st;
  if (!args_with_target(env, info, 1, argv, &t) || !cowshm_get_i32(env, argv[0], &fd)) return NULL;
  if (fstat(fd, &st) != 0) return cowshm_throw_errno(env, errno, "fstat", t.str);
  double v[7];
  put_stat(v, &st);
  NAPI_OK(env, napi_create_array_with_length(env, 7, &arr));
  for (uint32_t i = 0; i < 7; i++) NAPI_OK(env, napi_set_element(env, arr, i, cowshm_num(env, v[i])));
  return arr;
}

/* fstatInto(fd, float64Array): the same seven figures as fstat, written into
 * the caller's array. Building a fresh JS array costs twice the syscall; the
 * hot paths (Region.open, the Region constructor) reuse one array instead. */
static napi_value fstat_into_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  struct stat st;
  napi_typedarray_type type;
  size_t length;
  void *data;
  if (!cowshm_args(env, info, 2, argv) || !cowshm_get_i32(env, argv[0], &fd)) return NULL;
  if (napi_get_typedarray_info(env, argv[1], &type, &length, &data, NULL, NULL) != napi_ok ||
      type != napi_float64_array || length < 7 || data == NULL)
    return cowshm_throw_type(env, "cowshm internal error: fstatInto needs a Float64Array of 7");
  if (fstat(fd, &st) != 0) return cowshm_throw_errno(env, errno, "fstat", NULL);
  put_stat(data, &st);
  return cowshm_undefined(env);
}

static napi_value fchmod_js(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct target t;
  int32_t fd, mode;
  if (!args_with_target(env, info, 2, argv, &t) || !cowshm_get_i32(env, argv[0], &fd) ||
      !cowshm_get_i32(env, argv[1], &mode))
    return NULL;
  if (RETRY(fchmod(fd, (mode_t)mode)) != 0) return cowshm_throw_errno(env, errno, "fchmod", t.str);
  return cowshm_undefined(env);
}

static napi_value fsync_js(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct target t;
  int32_t fd;
  if (!args_with_target(env, info, 1, argv, &t) || !cowshm_get_i32(env, argv[0], &fd)) return NULL;
  if (RETRY(fsync(fd)) != 0) return cowshm_throw_errno(env, errno, "fsync", t.str);
  return cowshm_undefined(env);
}

napi_value cowshm_init_fd(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"shmOpen", NULL, shm_open_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shmOpenStat", NULL, shm_open_stat_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shmUnlink", NULL, shm_unlink_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"memfdCreate", NULL, memfd_create_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"addSeals", NULL, add_seals_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"open", NULL, open_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"close", NULL, close_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ftruncate", NULL, ftruncate_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fallocate", NULL, fallocate_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fstat", NULL, fstat_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fstatInto", NULL, fstat_into_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fchmod", NULL, fchmod_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"fsync", NULL, fsync_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seekData", NULL, seek_data_js, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  NAPI_OK(env, napi_define_properties(env, exports, sizeof props / sizeof *props, props));
  return exports;
}
