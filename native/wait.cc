// waitpid/wait4, and an exit watcher that lets waitAsync sleep in the event
// loop until the kernel says a process ended: a pidfd (Linux >= 5.3) or a
// kqueue EVFILT_PROC (macOS/BSD) polled by libuv, else SIGCHLD through a
// uv_signal handle. No thread, no timer.
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__)
#include <sys/event.h>
#define PD_HAVE_KQUEUE 1
#endif

#include <cstring>
#include <memory>

#include "common.h"

namespace pd {
namespace {

double Micros(const struct timeval& tv) {
  return static_cast<double>(tv.tv_sec) * 1e6 + static_cast<double>(tv.tv_usec);
}

Napi::Object Rusage(Napi::Env env, const struct rusage& ru) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("userCPUTime", Micros(ru.ru_utime));
  o.Set("systemCPUTime", Micros(ru.ru_stime));
#ifdef __APPLE__
  o.Set("maxRSS", static_cast<double>(ru.ru_maxrss) / 1024);  // bytes on macOS
#else
  o.Set("maxRSS", static_cast<double>(ru.ru_maxrss));  // KiB on Linux
#endif
  o.Set("sharedMemorySize", static_cast<double>(ru.ru_ixrss));
  o.Set("unsharedDataSize", static_cast<double>(ru.ru_idrss));
  o.Set("unsharedStackSize", static_cast<double>(ru.ru_isrss));
  o.Set("minorPageFault", static_cast<double>(ru.ru_minflt));
  o.Set("majorPageFault", static_cast<double>(ru.ru_majflt));
  o.Set("swappedOut", static_cast<double>(ru.ru_nswap));
  o.Set("fsRead", static_cast<double>(ru.ru_inblock));
  o.Set("fsWrite", static_cast<double>(ru.ru_oublock));
  o.Set("ipcSent", static_cast<double>(ru.ru_msgsnd));
  o.Set("ipcReceived", static_cast<double>(ru.ru_msgrcv));
  o.Set("signalsCount", static_cast<double>(ru.ru_nsignals));
  o.Set("voluntaryContextSwitches", static_cast<double>(ru.ru_nvcsw));
  o.Set("involuntaryContextSwitches", static_cast<double>(ru.ru_nivcsw));
  return o;
}

// Decoded with the platform's own W* macros; the TS layer names signals.
Napi::Object WaitResult(Napi::Env env, pid_t pid, int status) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", pid);
  o.Set("status", status);
  bool reaped = pid > 0;
  o.Set("exitCode", reaped && WIFEXITED(status) ? Napi::Value(Napi::Number::New(env, WEXITSTATUS(status)))
                                                : env.Null());
  o.Set("termSignal", reaped && WIFSIGNALED(status) ? WTERMSIG(status) : 0);
#ifdef WCOREDUMP
  o.Set("coreDumped", reaped && WIFSIGNALED(status) && WCOREDUMP(status));
#else
  o.Set("coreDumped", false);
#endif
  o.Set("stopSignal", reaped && WIFSTOPPED(status) ? WSTOPSIG(status) : 0);
  o.Set("continued", reaped && WIFCONTINUED(status));
  return o;
}

const int kAllowedFlags = WNOHANG | WUNTRACED | WCONTINUED;

Napi::Value DoWait(const Napi::CallbackInfo& info, bool with_rusage) {
  Napi::Env env = info.Env();
  pid_t pid = Int(info[0], "pid", INT32_MIN + 1, INT32_MAX);
  int flags = info.Length() > 1 && !info[1].IsUndefined() ? Int(info[1], "flags", 0, INT32_MAX) : 0;
  if ((flags & ~kAllowedFlags) != 0) throw ArgValueError(env, "flags", "has unknown bits");
  int status = 0;
  struct rusage ru;
  memset(&ru, 0, sizeof(ru));
  pid_t r;
  do {
    r = wait4(pid, &status, flags, with_rusage ? &ru : nullptr);
  } while (r == -1 && errno == EINTR);
  if (r == -1) throw ErrnoError(env, errno, with_rusage ? "wait4" : "waitpid");
  Napi::Object o = WaitResult(env, r, status);
  if (with_rusage) o.Set("rusage", Rusage(env, ru));
  return o;
}

Napi::Value Waitpid(const Napi::CallbackInfo& info) { return DoWait(info, false); }
Napi::Value Wait4(const Napi::CallbackInfo& info) { return DoWait(info, true); }

// ---------------------------------------------------------------------------
// ExitWatcher: calls back (on the loop thread) when `pid` may have exited.
// The callback re-checks with wait4(WNOHANG); with the SIGCHLD fallback it
// can fire for other children too.

class ExitWatcher : public Napi::ObjectWrap<ExitWatcher> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ExitWatcher",
                       {InstanceMethod<&ExitWatcher::Close>("close"),
                        InstanceMethod<&ExitWatcher::JsRef>("ref"),
                        InstanceMethod<&ExitWatcher::JsUnref>("unref"),
                        InstanceAccessor<&ExitWatcher::Kind>("kind")});
  }

  ExitWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ExitWatcher>(info) {
    Napi::Env env = info.Env();
    pid_ = Int(info[0], "pid", 1, INT32_MAX);
    if (!info[1].IsFunction()) throw ArgTypeError(env, "callback", "of type function");
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "posix-daemon:ExitWatcher");
    // Start() throws on every failure (ESRCH for a PID that is gone, a
    // libuv error) after cleaning up what it made; the members above are
    // released by their destructors when the constructor throws.
    handle_ = Start(env);
    handle_->OnTeardown(OnTeardown);
    // The JS object must outlive the wait even if the caller drops it.
    Ref();
    pinned_ = true;
  }

  ~ExitWatcher() override {
    pinned_ = false;  // the reference is gone with the object
    Shutdown();
  }

 private:
  // Opens the kernel notification and starts its libuv handle (which owns
  // the fd from then on, and frees it on every failure).
  LoopHandle* Start(Napi::Env env) {
    int fd = -1;
    int err = 0;
#ifdef __linux__
    fd = PidfdOpen(pid_);
    if (fd == -1) err = errno;
    if (fd != -1) kind_ = "pidfd";
#elif defined(PD_HAVE_KQUEUE)
    fd = kqueue();
    if (fd == -1) {
      err = errno;
    } else {
      struct kevent ev;
      EV_SET(&ev, pid_, EVFILT_PROC, EV_ADD | EV_ONESHOT, NOTE_EXIT, 0, nullptr);
      if (kevent(fd, &ev, 1, nullptr, 0, nullptr) == -1) {
        err = errno;
        close(fd);
        fd = -1;
        // ESRCH: it is already gone (a zombie): the caller's own wait4 check
        // finds it; watch SIGCHLD so the callback still comes.
        if (err == ESRCH) err = ENOSYS;
      } else {
        kind_ = "kqueue";
      }
    }
#else
    err = ENOSYS;
#endif
    if (fd != -1) return LoopHandle::Poll(env, fd, OnEvent, this);
    if (err == ESRCH) throw ErrnoError(env, ESRCH, "pidfd_open");
    // No pidfd (old kernel, seccomp): SIGCHLD is the kernel's notification.
    kind_ = "sigchld";
    using_signal_ = true;
    return LoopHandle::Signal(env, SIGCHLD, OnEvent, this);
  }

  static void OnEvent(void* owner) { static_cast<ExitWatcher*>(owner)->Fire(); }

  // The environment ends with the watch open: the handle is being closed
  // for us; nothing else may keep the JS object alive.
  static void OnTeardown(void* owner) {
    auto* self = static_cast<ExitWatcher*>(owner);
    self->handle_ = nullptr;
    self->Unpin();
  }

  void Fire() {
    // A pidfd/kqueue only becomes readable once: stop polling (a readable
    // fd would otherwise spin the loop) before handing over to JS.
    if (!using_signal_) Shutdown();
    Napi::Env env = Env();
    CallFromLoop(env, [&] {
      callback_.Value().MakeCallback(env.Global(), {}, *context_);
      if (handle_ == nullptr) Unpin();
    });
  }

  void Unpin() {
    if (!pinned_) return;
    pinned_ = false;
    Unref();
  }

  void Shutdown() {
    if (handle_ == nullptr) return;
    handle_->Close();
    handle_ = nullptr;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    Unpin();
    return info.Env().Undefined();
  }
  Napi::Value JsRef(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) handle_->SetRef(true);
    return info.This();
  }
  Napi::Value JsUnref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) handle_->SetRef(false);
    return info.This();
  }
  Napi::Value Kind(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), kind_); }

  pid_t pid_ = 0;
  bool pinned_ = false;
  bool using_signal_ = false;
  const char* kind_ = "none";
  LoopHandle* handle_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace

void InitWait(Napi::Env env, Napi::Object exports) {
  exports.Set("waitpid", Napi::Function::New(env, Waitpid, "waitpid"));
  exports.Set("wait4", Napi::Function::New(env, Wait4, "wait4"));
  exports.Set("ExitWatcher", ExitWatcher::Define(env));
  Napi::Object c = Napi::Object::New(env);
  c.Set("WNOHANG", WNOHANG);
  c.Set("WUNTRACED", WUNTRACED);
  c.Set("WCONTINUED", WCONTINUED);
  exports.Set("constants", c);
}

}  // namespace pd
