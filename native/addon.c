/* Module entry: per-environment state first (env.c), then every part of the
 * addon adds its functions to the exports. */
#include "cowshm.h"

#include <dlfcn.h>
#include <pthread.h>

/* The addon is never unloaded. Node closes an addon when the environment
 * that loaded it ends, so a worker that alone loaded it took its code away
 * when it ended (the process then died of SIGSEGV in a thread of ours); but
 * its signal handlers stay installed, a thread of its own may still be
 * running (xproc.c's reaper), and its process-wide state (the registry,
 * xproc.c's tables) must outlive any one environment. A second reference
 * with RTLD_NODELETE keeps it all for the process's life. */
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
