// Entry point of the posix-daemon addon: registers each part's bindings.
#include "common.h"
#include "pd.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Remember how stdio looked before anything (typically Node's lazy
  // process.stdout getter) switched it to non-blocking, so an exec can hand
  // the next image the mode the process was started with.
  pd_record_stdio_flags();
  // First: every part's libuv handles are tracked per environment from here.
  if (!pd_loop_init(env)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  pd::InitFork(env, exports);
  pd::InitExec(env, exports);
  // Ported parts (C) leave their exception pending and return false.
  if (!pd_init_wait(env, exports)) throw env.GetAndClearPendingException();
  if (!pd_init_proc(env, exports)) throw env.GetAndClearPendingException();
  pd::InitInit(env, exports);
  pd::InitPidfd(env, exports);
  pd::InitFiles(env, exports);
  pd::InitNotify(env, exports);
  pd::InitSockets(env, exports);
  pd::InitInotify(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(posix_daemon, Init)
