// A handle on a process that is not (necessarily) our child: a pidfd.
//
// A PID is only a number; once its process is gone and reaped, the kernel
// may give it to an unrelated process, and kill(pid) would hit that one. A
// pidfd (Linux >= 5.3) refers to one process for good: pidfd_send_signal()
// on it fails with ESRCH once that process has ended, and the fd becomes
// readable when it ends, which libuv can watch (no thread, no timer).
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <uv.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif

#include "common.h"

#if defined(__linux__) && !defined(SYS_pidfd_open)
#define SYS_pidfd_open 434
#endif
#if defined(__linux__) && !defined(SYS_pidfd_send_signal)
#define SYS_pidfd_send_signal 424
#endif

namespace pd {
namespace {

class ProcessHandle : public Napi::ObjectWrap<ProcessHandle> {
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
  ProcessHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProcessHandle>(info) {
    Napi::Env env = info.Env();
    pid_t pid = Int(info[0], "pid", 1, INT32_MAX);
#ifdef __linux__
    int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (fd == -1) throw ErrnoError(env, errno, "pidfd_open");
    // pidfd_open sets O_CLOEXEC itself (the fd is never inherited).
    handles_ = new Handles();
    handles_->fd = fd;
#else
    (void)pid;
    throw ErrnoError(env, ENOSYS, "pidfd_open");
#endif
  }

  ~ProcessHandle() override { Shutdown(); }

 private:
  struct Handles {
    int fd = -1;
    bool polling = false;
    ProcessHandle* owner = nullptr;
    uv_poll_t poll;
  };

  // kill(signal): true if sent, false if the process has already ended
  // (ESRCH); other errors (EPERM) are thrown.
  Napi::Value Kill(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int sig = Int(info[0], "signal", 0, NSIG - 1);
    if (handles_ == nullptr) throw ErrnoError(env, EBADF, "pidfd_send_signal");
#ifdef __linux__
    if (syscall(SYS_pidfd_send_signal, handles_->fd, sig, nullptr, 0) == -1) {
      if (errno == ESRCH) return Napi::Boolean::New(env, false);
      throw ErrnoError(env, errno, "pidfd_send_signal");
    }
#endif
    return Napi::Boolean::New(env, true);
  }

  // watch(callback): calls back once, on the loop thread, when the process
  // has ended. Keeps the loop alive until then (see unref()).
  Napi::Value Watch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsFunction()) throw ArgTypeError(env, "callback", "of type function");
    if (handles_ == nullptr) throw ErrnoError(env, EBADF, "uv_poll_start");
    if (handles_->polling) throw ArgValueError(env, "callback", "is already set");
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      throw Napi::Error::New(env, "no event loop");
    }
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "posix-daemon:ProcessHandle");
    handles_->poll.data = handles_;
    handles_->owner = this;
    int r = uv_poll_init(loop, &handles_->poll, handles_->fd);
    if (r == 0) {
      r = uv_poll_start(&handles_->poll, UV_READABLE, OnPoll);
      if (r != 0) {
        // Initialised: it must be closed through libuv before it is freed.
        handles_->polling = true;
        Shutdown();
      }
    }
    if (r != 0) throw ErrnoError(env, -r, "uv_poll_start");
    handles_->polling = true;
    // A worker's environment may go away while this waits: close then, so
    // its loop can close.
    napi_add_env_cleanup_hook(env, CleanupHook, this);
    hooked_ = true;
    if (!unref_) {
      Ref();  // the JS object must live until the callback
      pinned_ = true;
    } else {
      uv_unref(reinterpret_cast<uv_handle_t*>(&handles_->poll));
    }
    return env.Undefined();
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    Handles* hs = static_cast<Handles*>(h->data);
    if (hs->owner != nullptr) hs->owner->Fire();
  }

  void Fire() {
    // Readable stays readable: stop polling before JS runs. The fd itself
    // stays open until close(), so kill() keeps answering ESRCH rather
    // than hitting a reused PID.
    StopPolling();
    Napi::Env env = Env();
    CallFromLoop(env, [&] {
      callback_.Value().MakeCallback(env.Global(), {}, *context_);
      Unpin();
    });
  }

  void StopPolling() {
    if (handles_ == nullptr || !handles_->polling) return;
    uv_poll_stop(&handles_->poll);
  }

  void Unpin() {
    if (!pinned_) return;
    pinned_ = false;
    Unref();
  }

  static void CleanupHook(void* arg) {
    ProcessHandle* self = static_cast<ProcessHandle*>(arg);
    self->hooked_ = false;
    self->Shutdown();
    self->Unpin();
  }

  void Shutdown() {
    if (hooked_) {
      hooked_ = false;
      napi_remove_env_cleanup_hook(Env(), CleanupHook, this);
    }
    Handles* hs = handles_;
    if (hs == nullptr) return;
    handles_ = nullptr;
    hs->owner = nullptr;
    if (!hs->polling) {
      close(hs->fd);
      delete hs;
      return;
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&hs->poll), [](uv_handle_t* closed) {
      Handles* done = static_cast<Handles*>(closed->data);
      close(done->fd);
      delete done;
    });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    Unpin();
    return info.Env().Undefined();
  }
  Napi::Value JsRef(const Napi::CallbackInfo& info) {
    unref_ = false;
    if (handles_ != nullptr && handles_->polling) uv_ref(reinterpret_cast<uv_handle_t*>(&handles_->poll));
    return info.This();
  }
  Napi::Value JsUnref(const Napi::CallbackInfo& info) {
    unref_ = true;
    if (handles_ != nullptr && handles_->polling) uv_unref(reinterpret_cast<uv_handle_t*>(&handles_->poll));
    return info.This();
  }
  Napi::Value Fd(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), handles_ == nullptr ? -1 : handles_->fd);
  }

  Handles* handles_ = nullptr;
  bool pinned_ = false;
  bool unref_ = false;
  bool hooked_ = false;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace

void InitPidfd(Napi::Env env, Napi::Object exports) {
  exports.Set("ProcessHandle", ProcessHandle::Define(env));
}

}  // namespace pd
