// File-level calls Node's fs lacks: flock(2) for PID files, dup2(2) for
// reopening log files over stdout/stderr.
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include "common.h"

namespace pd {
namespace {

// flock(fd, op): op is "ex", "sh" or "un", always non-blocking (a PID file
// lock is a question, never a wait). Returns true when taken, false when
// another open file description holds a conflicting lock (EWOULDBLOCK).
Napi::Value Flock(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Int(info[0], "fd", 0, INT32_MAX);
  std::string op = CString(info[1], "operation");
  int how;
  if (op == "ex") how = LOCK_EX | LOCK_NB;
  else if (op == "sh") how = LOCK_SH | LOCK_NB;
  else if (op == "un") how = LOCK_UN;
  else throw ArgValueError(env, "operation", "must be 'ex', 'sh' or 'un'");
  int r;
  do {
    r = flock(fd, how);
  } while (r == -1 && errno == EINTR);
  if (r == -1) {
    if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
    throw ErrnoError(env, errno, "flock");
  }
  return Napi::Boolean::New(env, true);
}

// dup2(from, to) for to in 0..2 only: replacing stdio is what log reopening
// needs, and nothing else in this library should replace an fd it does not
// own. The result is not close-on-exec (stdio is inherited by design).
Napi::Value Dup2Stdio(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int from = Int(info[0], "fd", 0, INT32_MAX);
  int to = Int(info[1], "target", 1, 2);
  int r;
  do {
    r = dup2(from, to);
  } while (r == -1 && (errno == EINTR || errno == EBUSY));
  if (r == -1) throw ErrnoError(env, errno, "dup2");
  return env.Undefined();
}

}  // namespace

void InitFiles(Napi::Env env, Napi::Object exports) {
  exports.Set("flock", Napi::Function::New(env, Flock, "flock"));
  exports.Set("dup2Stdio", Napi::Function::New(env, Dup2Stdio, "dup2Stdio"));
}

}  // namespace pd
