// Shared declarations for the posix-daemon addon.
#pragma once

#include <napi.h>
#include <sys/types.h>

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
// Computed in the parent, used by the child's last-resort loop.
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
void InitWait(Napi::Env env, Napi::Object exports);
void InitProc(Napi::Env env, Napi::Object exports);
void InitInit(Napi::Env env, Napi::Object exports);   // init.cc
void InitPidfd(Napi::Env env, Napi::Object exports);  // pidfd.cc
void InitFiles(Napi::Env env, Napi::Object exports);  // files.cc
void InitNotify(Napi::Env env, Napi::Object exports);
void InitSockets(Napi::Env env, Napi::Object exports);
void InitInotify(Napi::Env env, Napi::Object exports);

}  // namespace pd
