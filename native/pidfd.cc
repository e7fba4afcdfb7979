// A handle on a process that is not (necessarily) our child: a pidfd.
//
// A PID is only a number; once its process is gone and reaped, the kernel
// may give it to an unrelated process, and kill(pid) would hit that one. A
// pidfd (Linux >= 5.3) refers to one process for good: pidfd_send_signal()
// on it fails with ESRCH once that process has ended, and the fd becomes
// readable when it ends, which libuv can watch (no thread, no timer).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "common.h"

#if defined(__linux__) && !defined(SYS_pidfd_send_signal)
#define SYS_pidfd_send_signal 424
#endif

namespace pd {
namespace {

// /proc/self/fdinfo of a pidfd has a "Pid:" line (-1 once the process has
// been reaped); no other kind of fd has one.
bool IsPidfdOf(int fd, pid_t pid) {
#ifdef __linux__
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
  int info = open(path, O_RDONLY | O_CLOEXEC);
  if (info == -1) return false;
  char buf[1024];
  ssize_t n;
  do {
    n = read(info, buf, sizeof(buf) - 1);
  } while (n == -1 && errno == EINTR);
  close(info);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* line = strstr(buf, "\nPid:");
  if (line == nullptr) return false;
  long got = strtol(line + 5, nullptr, 10);
  return got == pid || got == -1;
#else
  (void)fd;
  (void)pid;
  return false;
#endif
}

class ProcessHandle : public Napi::ObjectWrap<ProcessHandle>, PolledFd<ProcessHandle> {
  friend class PolledFd<ProcessHandle>;
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ProcessHandle",
                       {InstanceMethod<&ProcessHandle::Kill>("kill"),
                        InstanceMethod<&ProcessHandle::Watch>("watch"),
                        InstanceMethod<&ProcessHandle::Close>("close"),
                        InstanceMethod<&ProcessHandle::JsRef>("ref"),
                        InstanceMethod<&ProcessHandle::JsUnref>("unref"),
                        InstanceAccessor<&ProcessHandle::Fd>("fd")});
  }

  // new ProcessHandle(pid): pidfd_open(pid). Throws ESRCH when there is no
  // such process, ENOSYS (or EPERM under some seccomp profiles) where the
  // kernel has no pidfds: the TS layer falls back to plain kill() then.
  //
  // new ProcessHandle(pid, pidfd): adopts a pidfd (fork()'s, opened by the
  // intermediate while the PID was certainly right). It must be a pidfd of
  // `pid`, or of a process that has already been reaped (which can't be
  // told apart, and can't hurt anyone): EINVAL otherwise, and the fd is
  // left alone. Taken on success: the handle closes it.
  ProcessHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessHandle>(info) {
    Napi::Env env = info.Env();
    pid_t pid = Int(info[0], "pid", 1, INT32_MAX);
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      int fd = Int(info[1], "pidfd", 0, INT32_MAX);
      if (!IsPidfdOf(fd, pid)) throw ErrnoError(env, EINVAL, "pidfd_open");
      fd_ = fd;
      return;
    }
    // pidfd_open sets O_CLOEXEC itself (the fd is never inherited).
    fd_ = PidfdOpen(pid);
    if (fd_ == -1) throw ErrnoError(env, errno, "pidfd_open");
  }

  ~ProcessHandle() override { ShutdownFd(); }

 private:
  // kill(signal): true if sent, false if the process has already ended
  // (ESRCH); other errors (EPERM) are thrown.
  Napi::Value Kill(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int sig = Int(info[0], "signal", 0, NSIG - 1);
    if (fd_ == -1) throw ErrnoError(env, EBADF, "pidfd_send_signal");
#ifdef __linux__
    if (syscall(SYS_pidfd_send_signal, fd_, sig, nullptr, 0) == -1) {
      if (errno == ESRCH) return Napi::Boolean::New(env, false);
      throw ErrnoError(env, errno, "pidfd_send_signal");
    }
#endif
    return Napi::Boolean::New(env, true);
  }

  // watch(callback): calls back once, on the loop thread, when the process
  // has ended. Keeps the loop alive until then unless unref()'d.
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsFunction()) throw ArgTypeError(env, "callback", "of type function");
    if (fd_ == -1) throw ErrnoError(env, EBADF, "uv_poll_start");
    if (watching_) throw ArgValueError(env, "callback", "is already set");
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "posix-daemon:ProcessHandle");
    // The poll owns the pidfd from here on (closes it with itself); fd_
    // stays the number kill() uses until then.
    int fd = fd_;
    fd_ = -1;
    poll_ = LoopHandle::Poll(env, fd, OnEvent, this);
    fd_ = fd;
    poll_->OnTeardown(OnPollTeardown);
    watching_ = true;
    if (unref_) poll_->SetRef(false);
    // Pinned until the callback, ref'd or not: only the callback knows who
    // waits for it (a Promise may outlive the handle), and ref() after
    // unref() must find it still there (issue 16, item 12).
    Ref();
    pinned_ = true;
    return env.Undefined();
  }

  static void OnEvent(void* owner) { static_cast<ProcessHandle*>(owner)->Fire(); }

  void Fire() {
    // Readable stays readable: stop polling before JS runs. The fd itself
    // stays open until close(), so kill() keeps answering ESRCH rather
    // than hitting a reused PID.
    if (poll_ != nullptr) poll_->Stop();
    Napi::Env env = Env();
    CallFromLoop(env, [&] {
      callback_.Value().MakeCallback(env.Global(), {}, *context_);
      Unpin();
    });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    ShutdownFd();
    Unpin();
    return info.Env().Undefined();
  }
  Napi::Value JsRef(const Napi::CallbackInfo& info) {
    unref_ = false;
    if (poll_ != nullptr) poll_->SetRef(true);
    return info.This();
  }
  Napi::Value JsUnref(const Napi::CallbackInfo& info) {
    unref_ = true;
    if (poll_ != nullptr) poll_->SetRef(false);
    return info.This();
  }
  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

  bool watching_ = false;
  bool unref_ = false;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace

void InitPidfd(Napi::Env env, Napi::Object exports) {
  exports.Set("ProcessHandle", ProcessHandle::Define(env));
}

}  // namespace pd
