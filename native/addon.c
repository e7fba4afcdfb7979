/* Entry point of the posix-daemon addon: registers each part's bindings.
 * Plain C over N-API: no C++ runtime, so one source builds for glibc and
 * musl (issue 23). */
#include "pd.h"

static napi_value init(napi_env env, napi_value exports) {
  /* Remember how stdio looked before anything (typically Node's lazy
   * process.stdout getter) switched it to non-blocking, so an exec can hand
   * the next image the mode the process was started with. */
  pd_record_stdio_flags();
  /* First: every part's libuv handles are tracked per environment from here.
   * Each part leaves its exception pending and returns false. */
  if (!pd_loop_init(env) || !pd_init_fork(env, exports) || !pd_init_exec(env, exports) ||
      !pd_init_wait(env, exports) || !pd_init_proc(env, exports) || !pd_init_init(env, exports) ||
      !pd_init_pidfd(env, exports) || !pd_init_files(env, exports) || !pd_init_notify(env, exports) ||
      !pd_init_sockets(env, exports) || !pd_init_inotify(env, exports)) {
    return NULL;
  }
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
