// A minimal inotify watcher on the libuv loop, for autorestart's file
// watching. Why not fs.watch: libuv maps inotify to 'change'/'rename' and
// drops IN_CLOSE_WRITE, the one event that says "a writer is done with this
// file" (and IN_MOVED_TO, "a finished file was renamed into place"). Those
// let a change settle as soon as the kernel says so, instead of after a
// blind quiet-time timer.
//
// One inotify fd serves any number of watches (the JS side keeps one
// instance per process and one watch per directory); it is read when libuv
// says it is readable (uv_poll: no thread, no polling). Events are handed to
// JS in one flat array per read: [wd, mask, cookie, name, wd, mask, ...].
#include "common.h"

#ifdef __linux__

#include <errno.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <vector>

namespace pd {
namespace {

class Inotify : public Napi::ObjectWrap<Inotify> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Inotify", {
      InstanceMethod<&Inotify::Add>("add"),
      InstanceMethod<&Inotify::Remove>("remove"),
      InstanceMethod<&Inotify::Close>("close"),
      InstanceMethod<&Inotify::Ref>("ref"),
      InstanceMethod<&Inotify::Unref>("unref"),
      InstanceAccessor<&Inotify::Fd>("fd"),
    });
  }

  explicit Inotify(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Inotify>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 1 || !info[0].IsFunction()) throw ArgTypeError(env, "callback", "of type function");
    callback_ = Napi::Persistent(info[0].As<Napi::Function>());
    context_ = std::make_unique<Napi::AsyncContext>(env, "PosixDaemonInotify");
    int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) throw ErrnoError(env, errno, "inotify_init1");
    poll_ = LoopHandle::Poll(env, fd, OnReadable, this);  // owns the fd
    poll_->OnTeardown(OnTeardown);
    // While open, the JS object must outlive any GC: the poll calls back
    // into it. close() drops this reference.
    Napi::ObjectWrap<Inotify>::Ref();
    env_ = env;
  }

  ~Inotify() override { Shutdown(); }

 private:
  int fd() const { return poll_ == nullptr ? -1 : poll_->fd(); }

  // add(path, mask) -> wd. The kernel returns the same wd for a path (inode)
  // already watched; IN_MASK_ADD in `mask` merges masks.
  Napi::Value Add(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::string path = CString(info[0], "path");
    int32_t mask = Int(info[1], "mask", 1, INT32_MAX);
    if (fd() < 0) throw ErrnoError(env, EBADF, "inotify_add_watch", path.c_str());
    int wd = inotify_add_watch(fd(), path.c_str(), static_cast<uint32_t>(mask));
    if (wd < 0) throw ErrnoError(env, errno, "inotify_add_watch", path.c_str());
    return Napi::Number::New(env, wd);
  }

  Napi::Value Remove(const Napi::CallbackInfo& info) {
    int32_t wd = Int(info[0], "wd", 0, INT32_MAX);
    // EINVAL: the watch is already gone (its directory was deleted): fine.
    if (fd() >= 0) inotify_rm_watch(fd(), wd);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) {
      Shutdown();
      Napi::ObjectWrap<Inotify>::Unref();
    }
    return info.Env().Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) poll_->SetRef(true);
    return info.This();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (poll_ != nullptr) poll_->SetRef(false);
    return info.This();
  }

  Napi::Value Fd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd()); }

  // The environment ends with the watcher open (an unref'd one, say): the
  // poll is closed for us; the reference keeping the object goes too.
  static void OnTeardown(void* owner) {
    auto* self = static_cast<Inotify*>(owner);
    self->poll_ = nullptr;
    self->Napi::ObjectWrap<Inotify>::Unref();
  }

  void Shutdown() {
    if (poll_ == nullptr) return;
    poll_->Close();  // closes the inotify fd once libuv is done with it
    poll_ = nullptr;
  }

  static void OnReadable(void* owner) { static_cast<Inotify*>(owner)->Drain(); }

  void Drain() {
    alignas(struct inotify_event) char buf[16384];
    std::vector<char> events;
    for (;;) {
      ssize_t len = read(fd(), buf, sizeof buf);
      if (len < 0 && errno == EINTR) continue;
      if (len <= 0) break;  // EAGAIN: drained
      events.insert(events.end(), buf, buf + len);
    }
    if (events.empty()) return;
    CallFromLoop(env_, [&] {
      Napi::Env env = env_;
      Napi::Array out = Napi::Array::New(env);
      uint32_t n = 0;
      for (size_t off = 0; off < events.size();) {
        auto* ev = reinterpret_cast<struct inotify_event*>(events.data() + off);
        out.Set(n++, Napi::Number::New(env, ev->wd));
        out.Set(n++, Napi::Number::New(env, ev->mask));
        out.Set(n++, Napi::Number::New(env, ev->cookie));
        out.Set(n++, ev->len > 0 ? Napi::String::New(env, ev->name) : env.Null());
        off += sizeof(struct inotify_event) + ev->len;
      }
      callback_.MakeCallback(Value(), {out}, *context_);
    });
  }

  Napi::Env env_ = Napi::Env(nullptr);
  LoopHandle* poll_ = nullptr;
  Napi::FunctionReference callback_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace

void InitInotify(Napi::Env env, Napi::Object exports) {
  exports.Set("Inotify", Inotify::Define(env));
  Napi::Object c = Napi::Object::New(env);
  c.Set("IN_MODIFY", IN_MODIFY);
  c.Set("IN_ATTRIB", IN_ATTRIB);
  c.Set("IN_CLOSE_WRITE", IN_CLOSE_WRITE);
  c.Set("IN_MOVED_FROM", IN_MOVED_FROM);
  c.Set("IN_MOVED_TO", IN_MOVED_TO);
  c.Set("IN_CREATE", IN_CREATE);
  c.Set("IN_DELETE", IN_DELETE);
  c.Set("IN_DELETE_SELF", IN_DELETE_SELF);
  c.Set("IN_MOVE_SELF", IN_MOVE_SELF);
  c.Set("IN_Q_OVERFLOW", IN_Q_OVERFLOW);
  c.Set("IN_IGNORED", IN_IGNORED);
  c.Set("IN_ONLYDIR", IN_ONLYDIR);
  c.Set("IN_EXCL_UNLINK", IN_EXCL_UNLINK);
  exports.Set("inotifyConstants", c);
}

}  // namespace pd

#else  // !__linux__

namespace pd {
// No inotify: the JS side falls back to fs.watch with the quiet-time timer.
void InitInotify(Napi::Env env, Napi::Object exports) {}
}  // namespace pd

#endif
