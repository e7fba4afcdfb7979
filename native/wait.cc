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
#include <uv.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__)
#include <sys/event.h>
#define PD_HAVE_KQUEUE 1
#endif

#include <cstring>
#include <memory>
#include <set>

#include "common.h"

#if defined(__linux__) && !defined(SYS_pidfd_open)
#define SYS_pidfd_open 434
#endif

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

class ExitWatcher;

struct WatcherSet {
  std::set<ExitWatcher*> live;
};

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
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      throw Napi::Error::New(env, "no event loop");
    }
    // Start() throws on every failure (ESRCH for a PID that is gone, a
    // libuv error) after cleaning up what it made; the members above are
    // released by their destructors when the constructor throws.
    handles_ = Start(env, loop);
    env.GetInstanceData<WatcherSet>()->live.insert(this);
    active_ = true;
    // The JS object must outlive the wait even if the caller drops it.
    Ref();
    pinned_ = true;
  }

  ~ExitWatcher() override {
    pinned_ = false;  // the reference is gone with the object
    Shutdown();
  }

  // Closes every live watcher when the environment (a worker, say) goes away,
  // so its loop can close.
  static void CloseAll(WatcherSet* set) {
    std::set<ExitWatcher*> copy = set->live;
    for (ExitWatcher* w : copy) {
      w->Shutdown();
      w->Unpin();
    }
  }

 private:
  // Heap-allocated apart from the JS object: libuv may still own it after
  // the wrapper is garbage collected, until the close callback runs.
  struct Handles {
    ExitWatcher* owner = nullptr;
    int fd = -1;
    uv_poll_t poll;
    uv_signal_t sig;
  };

  // Opens the kernel notification and starts its libuv handle. Returns the
  // Handles, owned from then on by libuv's close callback (see Shutdown).
  // Until a handle is initialised the Handles are ours alone: a unique_ptr
  // frees them on every early exit (issue 10: ESRCH used to leak them, about
  // 330 bytes a call). Once uv_*_init succeeded the handle belongs to the
  // loop and may only be freed from its close callback.
  Handles* Start(Napi::Env env, uv_loop_t* loop) {
    auto hs = std::make_unique<Handles>();
    hs->owner = this;
    int fd = -1;
    int err = 0;
#ifdef __linux__
    fd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
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
    if (fd != -1) {
      hs->fd = fd;
      hs->poll.data = hs.get();
      int r = uv_poll_init(loop, &hs->poll, fd);
      if (r != 0) {
        close(fd);
        throw ErrnoError(env, -r, "uv_poll_init");
      }
      r = uv_poll_start(&hs->poll, UV_READABLE, OnPoll);
      if (r != 0) {
        // The handle is registered with the loop: close it through libuv,
        // which frees the Handles (and the fd) in the close callback.
        CloseHandles(hs.release(), true);
        throw ErrnoError(env, -r, "uv_poll_start");
      }
      using_poll_ = true;
      return hs.release();
    }
    if (err == ESRCH) throw ErrnoError(env, ESRCH, "pidfd_open");
    // No pidfd (old kernel, seccomp): SIGCHLD is the kernel's notification.
    hs->sig.data = hs.get();
    int r = uv_signal_init(loop, &hs->sig);
    if (r != 0) throw ErrnoError(env, -r, "uv_signal_init");
    r = uv_signal_start(&hs->sig, OnSignal, SIGCHLD);
    if (r != 0) {
      CloseHandles(hs.release(), false);
      throw ErrnoError(env, -r, "uv_signal_start");
    }
    kind_ = "sigchld";
    return hs.release();
  }

  // Closes the one initialised handle of `hs` and frees `hs` (and its fd)
  // once libuv is done with it.
  static void CloseHandles(Handles* hs, bool poll) {
    hs->owner = nullptr;
    uv_handle_t* h = poll ? reinterpret_cast<uv_handle_t*>(&hs->poll)
                          : reinterpret_cast<uv_handle_t*>(&hs->sig);
    uv_close(h, [](uv_handle_t* closed) {
      Handles* done = static_cast<Handles*>(closed->data);
      if (done->fd != -1) close(done->fd);
      delete done;
    });
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    Handles* hs = static_cast<Handles*>(h->data);
    if (hs->owner != nullptr) hs->owner->Fire(true);
  }

  static void OnSignal(uv_signal_t* h, int signum) {
    Handles* hs = static_cast<Handles*>(h->data);
    if (hs->owner != nullptr) hs->owner->Fire(false);
  }

  void Fire(bool final_event) {
    // A pidfd/kqueue only becomes readable once: stop polling (a readable
    // fd would otherwise spin the loop) before handing over to JS.
    if (final_event) {
      // Must happen whatever else fails (a readable fd would spin the loop);
      // Shutdown() only touches N-API for the instance data.
      try {
        Shutdown();
      } catch (...) {
      }
    }
    Napi::Env env = Env();
    CallFromLoop(env, [&] {
      callback_.Value().MakeCallback(env.Global(), {}, *context_);
      if (!active_) Unpin();
    });
  }

  void Unpin() {
    if (!pinned_) return;
    pinned_ = false;
    Unref();
  }

  void Shutdown() {
    if (!active_) return;
    active_ = false;
    Env().GetInstanceData<WatcherSet>()->live.erase(this);
    Handles* hs = handles_;
    handles_ = nullptr;
    CloseHandles(hs, using_poll_);
  }

  uv_handle_t* Handle() {
    if (handles_ == nullptr) return nullptr;
    return using_poll_ ? reinterpret_cast<uv_handle_t*>(&handles_->poll)
                       : reinterpret_cast<uv_handle_t*>(&handles_->sig);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    Unpin();
    return info.Env().Undefined();
  }
  Napi::Value JsRef(const Napi::CallbackInfo& info) {
    if (uv_handle_t* h = Handle()) uv_ref(h);
    return info.This();
  }
  Napi::Value JsUnref(const Napi::CallbackInfo& info) {
    if (uv_handle_t* h = Handle()) uv_unref(h);
    return info.This();
  }
  Napi::Value Kind(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), kind_); }

  pid_t pid_ = 0;
  bool active_ = false;
  bool pinned_ = false;
  bool using_poll_ = false;
  const char* kind_ = "none";
  Handles* handles_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace

void InitWait(Napi::Env env, Napi::Object exports) {
  auto* set = new WatcherSet();
  env.SetInstanceData(set);
  napi_add_env_cleanup_hook(
      env, [](void* arg) { ExitWatcher::CloseAll(static_cast<WatcherSet*>(arg)); }, set);
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
