// Shared declarations for the posix-daemon addon.
#pragma once

#include <napi.h>

#include "pd.h"
#include <sys/types.h>
#include <unistd.h>
#include <uv.h>

#include <string>
#include <vector>

namespace pd {

// ---- errors (args.cc) ----
// A Node-style system error: "ENOENT: no such file or directory, execve '/x'"
// with code, errno (negative, as in Node), syscall and path.
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall, const char* path = nullptr);
// A TypeError carrying Node's ERR_INVALID_ARG_TYPE code.
Napi::Error ArgTypeError(Napi::Env env, const std::string& name, const char* expected);
Napi::Error ArgValueError(Napi::Env env, const std::string& name, const char* reason);

// ---- argument checks (args.cc): the TS layer validates first, these keep
// a direct call into the raw addon from ever aborting the process. ----
std::string CString(const Napi::Value& v, const std::string& name);   // string without NUL
int32_t Int(const Napi::Value& v, const std::string& name, int64_t min, int64_t max);
// o[key] as a bool, `def` when absent; the error names it `owner.key`.
bool OptBool(const Napi::Object& o, const char* key, const std::string& owner, bool def);
std::vector<std::string> CStringArray(const Napi::Value& v, const std::string& name);
std::vector<int> FdArray(const Napi::Value& v, const std::string& name, int min_fd);

// A NULL-terminated char* vector over owned strings. Built before fork() so
// the child never allocates.
class CStrings {
 public:
  explicit CStrings(std::vector<std::string> s);
  CStrings() : CStrings(std::vector<std::string>()) {}
  CStrings(CStrings&& o) noexcept;
  CStrings& operator=(CStrings&& o) noexcept;
  CStrings(const CStrings&) = delete;
  CStrings& operator=(const CStrings&) = delete;
  char** data() { return ptrs_.data(); }
  size_t size() const { return strings_.size(); }
 private:
  void Rebuild();
  std::vector<std::string> strings_;
  std::vector<char*> ptrs_;
};

// The process environment as "KEY=value" strings (what execve would pass).
std::vector<std::string> CurrentEnviron();

// ---- fds (fds.c): C++ forwarders for the parts not yet ported to C ----
inline int ScanFdLimit() { return pd_scan_fd_limit(); }
inline std::vector<int> OpenFds() {
  pd_intv v;
  if (!pd_open_fds(&v)) throw std::bad_alloc();
  std::vector<int> out(v.v, v.v + v.n);
  pd_intv_free(&v);
  return out;
}
inline bool FdIsOpen(int fd) { return pd_fd_is_open(fd); }
inline bool StdioWasNonblocking(int fd) { return pd_stdio_was_nonblocking(fd); }
inline void RecordStdioFlags() { pd_record_stdio_flags(); }
inline int CloexecAllExcept(const int* keep, size_t nkeep, int fd_limit) {
  return pd_cloexec_all_except(keep, nkeep, fd_limit);
}
inline int PidfdOpen(pid_t pid) { return pd_pidfd_open(pid); }
inline int PipeCloexec(int fds[2]) { return pd_pipe_cloexec(fds); }
inline int SetNonblocking(int fd, bool on) { return pd_set_nonblocking(fd, on); }
inline int WriteAll(int fd, const void* data, size_t size) { return pd_write_all(fd, data, size); }

// ---- libuv handles (loop.c): a C++ view of pd_loop_handle for the parts
// not yet ported to C ----
class LoopHandle {
 public:
  using Callback = void (*)(void* owner);
  static LoopHandle* Poll(Napi::Env env, int fd, Callback on_event, void* owner) {
    return Check(env, pd_loop_poll(env, fd, false, on_event, owner));
  }
  static LoopHandle* PollWritable(Napi::Env env, int fd, Callback on_event, void* owner) {
    return Check(env, pd_loop_poll(env, fd, true, on_event, owner));
  }
  static LoopHandle* Signal(Napi::Env env, int signum, Callback on_event, void* owner) {
    return Check(env, pd_loop_signal(env, signum, on_event, owner));
  }
  void OnTeardown(Callback cb) { pd_loop_on_teardown(c(), cb); }
  void Stop() { pd_loop_stop(c()); }
  void SetRef(bool on) { pd_loop_set_ref(c(), on); }
  int fd() const { return pd_loop_fd(reinterpret_cast<const pd_loop_handle*>(this)); }
  void Close() { pd_loop_close(c()); }

 private:
  pd_loop_handle* c() { return reinterpret_cast<pd_loop_handle*>(this); }
  static LoopHandle* Check(Napi::Env env, pd_loop_handle* h) {
    if (h == nullptr) {
      napi_value e;
      napi_get_and_clear_last_exception(env, &e);
      throw Napi::Error(env, e);
    }
    return reinterpret_cast<LoopHandle*>(h);
  }
};

// The state a JS object keeps for an fd of its own that a LoopHandle polls
// (ProcessHandle's pidfd, NotifySocket's socket): the fd, its poll, and
// whether the object pins itself (Ref) while it waits. `Self` is the
// ObjectWrap, whose Unref() ends the pin.
template <typename Self>
class PolledFd {
 protected:
  void Unpin() {
    if (!pinned_) return;
    pinned_ = false;
    static_cast<Self*>(this)->Unref();
  }

  // Closes the fd: through its poll when there is one (libuv closes it once
  // done with it), else directly.
  void ShutdownFd() {
    if (poll_ != nullptr) {
      poll_->Close();
      poll_ = nullptr;
    } else if (fd_ != -1) {
      close(fd_);
    }
    fd_ = -1;
  }

  // The environment ended with the poll open: it closed the poll and the fd.
  static void OnPollTeardown(void* owner) {
    auto* self = static_cast<Self*>(owner);
    self->poll_ = nullptr;
    self->fd_ = -1;
    self->Unpin();
  }

  int fd_ = -1;
  LoopHandle* poll_ = nullptr;
  bool pinned_ = false;
};

// ---- signals (fork.cc) ----
// Async-signal-safe: every catchable signal back to SIG_DFL. For a process
// about to exec, or one that runs no other code (a forked child, the init).
void ResetSignalDispositions();

// ---- calling JS from libuv callbacks ----
// No C++ exception may leave a libuv callback (that is std::terminate), and
// a poll handle can still fire once while Node tears the environment down
// at exit (FreeEnvironment runs the loop once more), when every N-API call
// fails: the event is then dropped, nobody is left to tell. `call` builds
// the arguments and makes the callback; an exception the JS callback
// itself threw goes to the process, as for any event-loop callback.
template <typename Call>
void CallFromLoop(Napi::Env env, Call&& call) noexcept {
  try {
    Napi::HandleScope scope(env);
    try {
      call();
    } catch (const Napi::Error& e) {
      Napi::Value error = e.Value();
      if (!error.IsEmpty() && !error.IsUndefined()) napi_fatal_exception(env, error);
    }
  } catch (...) {
  }
}

// ---- module parts ----
void InitFork(Napi::Env env, Napi::Object exports);
void InitExec(Napi::Env env, Napi::Object exports);
void InitInit(Napi::Env env, Napi::Object exports);   // init.cc
void InitPidfd(Napi::Env env, Napi::Object exports);  // pidfd.cc
void InitFiles(Napi::Env env, Napi::Object exports);  // files.cc
void InitNotify(Napi::Env env, Napi::Object exports);
void InitSockets(Napi::Env env, Napi::Object exports);
void InitInotify(Napi::Env env, Napi::Object exports);

}  // namespace pd
