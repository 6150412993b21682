/* Module entry: per-environment state first (env.c), then every part of the
 * addon adds its functions to the exports. */
#include "cowshm.h"

#include <dlfcn.h>
#include <pthread.h>

/* The addon is never unloaded. Node closes an addon when the last
 * environment that loaded it ends, so a worker that loaded it alone takes it
 * away when it exits; but its signal handlers stay installed, and threads of
 * its own (xproc.c's, futex.c's) may outlive that environment. A second
 * reference with RTLD_NODELETE keeps its code and its process-wide state
 * (the registry, the xproc tables) for the process's life. */
static void pin(void) {
  Dl_info info;
  if (dladdr((void *)pin, &info) != 0 && info.dli_fname != NULL)
    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

NAPI_MODULE_INIT() {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, pin);
  if (!cowshm_env_init(env)) return NULL;
  cowshm_signals_install();

  napi_value fn;
  NAPI_OK(env, napi_create_function(env, "init", NAPI_AUTO_LENGTH, cowshm_init_js, NULL, &fn));
  NAPI_OK(env, napi_set_named_property(env, exports, "init", fn));
  if (cowshm_init_fd(env, exports) == NULL) return NULL;
  if (cowshm_init_locks(env, exports) == NULL) return NULL;
  if (cowshm_init_mapping(env, exports) == NULL) return NULL;
  if (cowshm_init_kernels(env, exports) == NULL) return NULL;
  if (cowshm_init_snapshot(env, exports) == NULL) return NULL;
  if (cowshm_init_checkpoint(env, exports) == NULL) return NULL;
  if (cowshm_init_xproc(env, exports) == NULL) return NULL;
  if (cowshm_init_futex(env, exports) == NULL) return NULL;
  return exports;
}
