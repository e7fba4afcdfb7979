// Entry point of the posix-daemon addon: registers each part's bindings.
#include "common.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Remember how stdio looked before anything (typically Node's lazy
  // process.stdout getter) switched it to non-blocking, so an exec can hand
  // the next image the mode the process was started with.
  pd::RecordStdioFlags();
  // First: every part's libuv handles are tracked per environment from here.
  pd::InitLoop(env);
  if (!pd_init_fork(env, exports)) return exports;  // its exception stays pending
  pd::InitExec(env, exports);
  pd::InitWait(env, exports);
  pd::InitProc(env, exports);
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
