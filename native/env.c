/* Per-environment state. The addon is loaded once per process but
 * initialised once per environment (the main thread and every worker); each
 * keeps its own error factories and descriptors, and releases what it
 * opened when it ends. */
#include "cowshm.h"

#include <stdlib.h>
#include <unistd.h>

static void env_cleanup(void *arg) {
  napi_env env = arg;
  struct cowshm_env *e = cowshm_env_get(env);
  /* Mappings first: their ArrayBuffers die with the environment. */
  cowshm_mapping_release_all(env);
  if (e == NULL) return;
  for (size_t i = 0; i < e->nfds; i++) close(e->fds[i]);
  e->nfds = 0;
}

static void env_free(napi_env env, void *data, void *hint) {
  struct cowshm_env *e = data;
  free(e->fds);
  free(e);
}

int cowshm_env_init(napi_env env) {
  struct cowshm_env *e = calloc(1, sizeof *e);
  if (e == NULL) {
    napi_throw_error(env, "ENOMEM", "cowshm: out of memory while loading");
    return 0;
  }
  if (napi_set_instance_data(env, e, env_free, NULL) != napi_ok) {
    free(e); /* not Node's yet: env_free will never see it */
    cowshm_throw_napi_failure(env, "napi_set_instance_data", __FILE__, __LINE__);
    return 0;
  }
  /* From here on env_free owns e, whatever happens. */
  if (napi_add_env_cleanup_hook(env, env_cleanup, env) != napi_ok) {
    cowshm_throw_napi_failure(env, "napi_add_env_cleanup_hook", __FILE__, __LINE__);
    return 0;
  }
  return 1;
}

struct cowshm_env *cowshm_env_get(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok) return NULL;
  return data;
}

void cowshm_env_track_fd(napi_env env, int fd) {
  struct cowshm_env *e = cowshm_env_get(env);
  if (e == NULL) return;
  if (e->nfds == e->capfds) {
    size_t cap = e->capfds ? e->capfds * 2 : 16;
    int *fds = realloc(e->fds, cap * sizeof *fds);
    if (fds == NULL) return; /* untracked: closed by the Region's finalizer instead */
    e->fds = fds;
    e->capfds = cap;
  }
  e->fds[e->nfds++] = fd;
}

void cowshm_env_untrack_fd(napi_env env, int fd) {
  struct cowshm_env *e = cowshm_env_get(env);
  if (e == NULL) return;
  for (size_t i = 0; i < e->nfds; i++) {
    if (e->fds[i] == fd) {
      e->fds[i] = e->fds[--e->nfds];
      return;
    }
  }
}
