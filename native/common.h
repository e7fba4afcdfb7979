// Shared declarations for the posix-daemon addon.
#pragma once

#include <napi.h>
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

// ---- fds (fds.cc) ----
// Highest fd worth probing one by one: the highest open fd plus headroom (at
// least the soft RLIMIT_NOFILE), or the hard limit when fds can't be listed.
// Not capped at the soft limit: fds above a lowered limit stay open.
// Computed in the parent, used by the child's last-resort loop; where
// close_range(CLOSE_RANGE_CLOEXEC) works (probed once) that loop is never
// reached, and this is just the soft limit, without listing the fds.
int ScanFdLimit();
// Open fds, from /proc/self/fd (Linux) or /dev/fd (macOS), else a probe loop
// up to the hard RLIMIT_NOFILE.
std::vector<int> OpenFds();
bool FdIsOpen(int fd);
// Was fd 0..2 non-blocking when the addon was loaded (before Node, in the
// common case, switched a pipe or tty to O_NONBLOCK)?
bool StdioWasNonblocking(int fd);
void RecordStdioFlags();

// Async-signal-safe: mark every fd >= 3 close-on-exec except `keep` (sorted
// ascending), and clear close-on-exec on the kept ones: close_range, else
// (Linux < 5.11) a getdents64 listing of /proc/self/fd, else a loop up to
// fd_limit. Returns 0 or errno.
int CloexecAllExcept(const int* keep, size_t nkeep, int fd_limit);

// ---- small fd syscalls (fds.cc), async-signal-safe: usable between fork()
// and execve() ----
// pidfd_open(2): an fd that refers to process `pid` for good (Linux >= 5.3,
// close-on-exec). -1 with errno (ENOSYS where the platform has none).
int PidfdOpen(pid_t pid);
// pipe(2) with both ends close-on-exec: atomically with pipe2 on Linux;
// elsewhere pipe + fcntl (another thread's fork+exec in between could
// inherit the ends there; in a forked child there is no other thread).
// -1 with errno.
int PipeCloexec(int fds[2]);
// Sets or clears O_NONBLOCK (a no-op when already so). Returns the previous
// file status flags, or -1 with errno.
int SetNonblocking(int fd, bool on);
// write(2) until all of `data` is written, across EINTR and short writes.
// Returns 0, or the errno of the write that failed.
int WriteAll(int fd, const void* data, size_t size);

// ---- libuv handles owned by the addon (loop.cc) ----
// A uv_poll_t on an fd, or a uv_signal_t, used by a JS object:
// - allocated apart from that object: libuv owns it from init until its
//   close callback, which may come after the object was collected;
// - the fd it polls is its own and is closed in that close callback;
// - when its environment ends (a worker finishes or is terminated) with the
//   handle still open, an async cleanup hook (N-API 8) closes it and holds
//   the teardown until every close callback of the environment's handles
//   has run. Only then may Node unload the addon: a close callback left for
//   a later loop turn would run in unmapped code (issue 16, item 1).
class LoopHandle {
 public:
  using Callback = void (*)(void* owner);
  // Polls `fd` for readability. Takes the fd: it is closed on failure too.
  static LoopHandle* Poll(Napi::Env env, int fd, Callback on_event, void* owner);
  // Polls `fd` for writability (a connected datagram socket whose peer's
  // queue has room again). Takes the fd the same way.
  static LoopHandle* PollWritable(Napi::Env env, int fd, Callback on_event, void* owner);
  // Watches `signum` through libuv's signal handling.
  static LoopHandle* Signal(Napi::Env env, int signum, Callback on_event, void* owner);
  // Called instead of any further event when the environment ends with the
  // handle open: the hook closes the handle itself, the owner must forget it
  // (and drop what keeps its JS object alive). No JavaScript may run.
  void OnTeardown(Callback cb) { on_teardown_ = cb; }
  void Stop();             // no more events; stays open (and its fd with it)
  void SetRef(bool on);    // uv_ref / uv_unref
  int fd() const { return fd_; }
  // No callback after this; libuv's close callback closes the fd and frees
  // the handle. The pointer must not be used again.
  void Close();

  struct State;  // per environment
 private:
  LoopHandle(State* state, int fd, bool poll, Callback on_event, void* owner)
      : poll_(poll), fd_(fd), on_event_(on_event), owner_(owner), state_(state) {}
  static LoopHandle* Open(Napi::Env env, int fd, int signum, int events, Callback on_event, void* owner);
  static void Closed(uv_handle_t* h);
  static void OnPoll(uv_poll_t* h, int status, int events);
  static void OnSignal(uv_signal_t* h, int signum);
  static void TearDown(napi_async_cleanup_hook_handle hook, void* arg);
  uv_handle_t* handle() { return &uv_.handle; }

  union {
    uv_handle_t handle;
    uv_poll_t poll;
    uv_signal_t signal;
  } uv_;
  bool poll_;
  int fd_;
  Callback on_event_;
  Callback on_teardown_ = nullptr;
  void* owner_;
  State* state_;
  friend void InitLoop(Napi::Env env);
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

// Per-environment bookkeeping for LoopHandle. Called first from the addon's
// Init, before any part can open a handle.
void InitLoop(Napi::Env env);

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
