// Process facts and small process-level calls: sessions, groups, _exit,
// child subreaper, children of a process (macOS; Linux reads /proc in TS).
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#ifdef __APPLE__
#include <libproc.h>
#endif

#include "common.h"

namespace pd {
namespace {

Napi::Value Setsid(const Napi::CallbackInfo& info) {
  pid_t sid = setsid();
  if (sid == -1) throw ErrnoError(info.Env(), errno, "setsid");
  return Napi::Number::New(info.Env(), sid);
}

Napi::Value Getsid(const Napi::CallbackInfo& info) {
  pid_t pid = info[0].IsUndefined() ? 0 : Int(info[0], "pid", 0, INT32_MAX);
  pid_t sid = getsid(pid);
  if (sid == -1) throw ErrnoError(info.Env(), errno, "getsid");
  return Napi::Number::New(info.Env(), sid);
}

Napi::Value Getpgid(const Napi::CallbackInfo& info) {
  pid_t pid = info[0].IsUndefined() ? 0 : Int(info[0], "pid", 0, INT32_MAX);
  pid_t pgid = getpgid(pid);
  if (pgid == -1) throw ErrnoError(info.Env(), errno, "getpgid");
  return Napi::Number::New(info.Env(), pgid);
}

Napi::Value Exit(const Napi::CallbackInfo& info) {
  int code = info[0].IsUndefined() ? 0 : Int(info[0], "code", INT32_MIN, INT32_MAX);
  _exit(code & 0xff);
}

// PR_SET_CHILD_SUBREAPER: orphans below us are re-parented to us instead of
// init, so a double-forked daemon can still be waited on. Returns false
// where the platform has no such thing.
Napi::Value SetChildSubreaper(const Napi::CallbackInfo& info) {
  if (!info[0].IsBoolean()) throw ArgTypeError(info.Env(), "on", "of type boolean");
#ifdef __linux__
  if (prctl(PR_SET_CHILD_SUBREAPER, info[0].As<Napi::Boolean>().Value() ? 1 : 0, 0, 0, 0) == -1) {
    throw ErrnoError(info.Env(), errno, "prctl");
  }
  return Napi::Boolean::New(info.Env(), true);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Value IsChildSubreaper(const Napi::CallbackInfo& info) {
#ifdef __linux__
  int on = 0;
  if (prctl(PR_GET_CHILD_SUBREAPER, &on, 0, 0, 0) == -1) throw ErrnoError(info.Env(), errno, "prctl");
  return Napi::Boolean::New(info.Env(), on != 0);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

Napi::Value ChildPids(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t pid = Int(info[0], "pid", 1, INT32_MAX);
  Napi::Array out = Napi::Array::New(env);
#ifdef __APPLE__
  std::vector<pid_t> buf(256);
  for (;;) {
    int n = proc_listchildpids(pid, buf.data(), static_cast<int>(buf.size() * sizeof(pid_t)));
    if (n < 0) throw ErrnoError(env, errno, "proc_listchildpids");
    // Depending on the macOS version n is a count or a byte size.
    size_t count = static_cast<size_t>(n) > buf.size() ? n / sizeof(pid_t) : static_cast<size_t>(n);
    if (count < buf.size()) {
      for (size_t i = 0; i < count; i++) out.Set(static_cast<uint32_t>(i), buf[i]);
      break;
    }
    buf.resize(buf.size() * 2);
  }
#else
  (void)pid;
  throw ErrnoError(env, ENOSYS, "childPids");
#endif
  return out;
}

Napi::Value SetCloexec(const Napi::CallbackInfo& info) {
  int fd = Int(info[0], "fd", 0, INT32_MAX);
  if (!info[1].IsBoolean()) throw ArgTypeError(info.Env(), "on", "of type boolean");
  int flags = fcntl(fd, F_GETFD);
  if (flags == -1) throw ErrnoError(info.Env(), errno, "fcntl");
  int want = info[1].As<Napi::Boolean>().Value() ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
  if (want != flags && fcntl(fd, F_SETFD, want) == -1) throw ErrnoError(info.Env(), errno, "fcntl");
  return info.Env().Undefined();
}

Napi::Value GetFdFlags(const Napi::CallbackInfo& info) {
  int fd = Int(info[0], "fd", 0, INT32_MAX);
  int fdflags = fcntl(fd, F_GETFD);
  if (fdflags == -1) throw ErrnoError(info.Env(), errno, "fcntl");
  int fl = fcntl(fd, F_GETFL);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("cloexec", (fdflags & FD_CLOEXEC) != 0);
  o.Set("nonblocking", fl != -1 && (fl & O_NONBLOCK) != 0);
  return o;
}

// pipe(2), both ends close-on-exec: whoever hands an end to a child says so
// explicitly (keepFds), so no other program inherits it by accident.
Napi::Value Pipe(const Napi::CallbackInfo& info) {
  int fds[2];
  if (PipeCloexec(fds) == -1) throw ErrnoError(info.Env(), errno, "pipe");
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(0u, fds[0]);
  out.Set(1u, fds[1]);
  return out;
}

// fcntl(F_DUPFD_CLOEXEC): a close-on-exec duplicate at the lowest free fd
// >= minFd. Keeps a listening socket open while its server object lets go.
Napi::Value Dup(const Napi::CallbackInfo& info) {
  int fd = Int(info[0], "fd", 0, INT32_MAX);
  int min_fd = info[1].IsUndefined() ? 0 : Int(info[1], "minFd", 0, INT32_MAX);
  int r = fcntl(fd, F_DUPFD_CLOEXEC, min_fd);
  if (r == -1) throw ErrnoError(info.Env(), errno, "fcntl");
  return Napi::Number::New(info.Env(), r);
}

}  // namespace

void InitProc(Napi::Env env, Napi::Object exports) {
  exports.Set("setsid", Napi::Function::New(env, Setsid, "setsid"));
  exports.Set("getsid", Napi::Function::New(env, Getsid, "getsid"));
  exports.Set("getpgid", Napi::Function::New(env, Getpgid, "getpgid"));
  exports.Set("exit", Napi::Function::New(env, Exit, "exit"));
  exports.Set("setChildSubreaper", Napi::Function::New(env, SetChildSubreaper, "setChildSubreaper"));
  exports.Set("isChildSubreaper", Napi::Function::New(env, IsChildSubreaper, "isChildSubreaper"));
  exports.Set("childPids", Napi::Function::New(env, ChildPids, "childPids"));
  exports.Set("setCloexec", Napi::Function::New(env, SetCloexec, "setCloexec"));
  exports.Set("dup", Napi::Function::New(env, Dup, "dup"));
  exports.Set("pipe", Napi::Function::New(env, Pipe, "pipe"));
  exports.Set("getFdFlags", Napi::Function::New(env, GetFdFlags, "getFdFlags"));
}

}  // namespace pd
