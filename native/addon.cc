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
  if (!pd_init_fork(env, exports)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  if (!pd_init_exec(env, exports)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  pd::InitWait(env, exports);
  pd::InitProc(env, exports);
  if (!pd_init_init(env, exports)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  if (!pd_init_pidfd(env, exports)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  if (!pd_init_files(env, exports)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  if (!pd_init_notify(env, exports)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  if (!pd_init_sockets(env, exports)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  if (!pd_init_inotify(env, exports)) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    throw Napi::Error(env, e);
  }
  return exports;
}

}  // namespace

NODE_API_MODULE(posix_daemon, Init)
