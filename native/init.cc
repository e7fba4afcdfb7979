// init(): the part of the addon that hands PID 1 over to the init image.
//
// A Node process is multi-threaded (libuv's threadpool, V8's platform
// workers) and most of those threads leave every signal unblocked. An init
// that waits with sigwaitinfo() in such a process loses signals: a
// process-directed signal goes to any thread that does not block it, and for
// PID 1 with no handler the kernel then drops it. It would also keep Node's
// whole footprint (tens of MiB) alive for a loop of a few syscalls.
//
// So PID 1 replaces itself (execve keeps the PID, the children and every
// pending signal, and ends all other threads) with the init image: the
// dynamic loader running native/init-loop.c, a plain-C shared object built
// next to this addon (posix_daemon_init.so). Neither node nor libstdc++ is
// mapped in it. The loop then starts the program (the same node command
// line again) as its child, in its own process group.
//
//   PID 1 (node) --execve--> PID 1 (ld.so posix_daemon_init.so: init loop)
//                                 `-- fork+execve --> the program (node ...)
//
// No LD_PRELOAD is involved (the image is the loader's program argument),
// so the package may live in a path with spaces or colons.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#ifdef __linux__
#include <link.h>
#include <sys/auxv.h>
#endif
#ifdef __GLIBC__
#include <gnu/libc-version.h>
#endif

#include "common.h"

namespace pd {
namespace {

#ifdef __linux__

// The dynamic loader of this process (node's PT_INTERP), from the auxiliary
// vector and the loader's own list of objects: no /proc needed. Empty for a
// statically linked node.
struct FindBase {
  uintptr_t base;
  std::string name;
};

int MatchBase(struct dl_phdr_info* info, size_t, void* data) {
  FindBase* f = static_cast<FindBase*>(data);
  if (info->dlpi_addr != f->base || info->dlpi_name == nullptr || info->dlpi_name[0] != '/') return 0;
  f->name = info->dlpi_name;
  return 1;
}

std::string Interpreter() {
  FindBase f{static_cast<uintptr_t>(getauxval(AT_BASE)), ""};
  if (f.base == 0) return "";
  dl_iterate_phdr(MatchBase, &f);
  return f.name;
}

// initRuntime(): { interpreter, glibc } (each null when there is none):
// what the init image needs from the running node.
Napi::Value InitRuntime(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  std::string s = Interpreter();
  out.Set("interpreter", s.empty() ? env.Null() : Napi::String::New(env, s));
#ifdef __GLIBC__
  out.Set("glibc", Napi::String::New(env, gnu_get_libc_version()));
#else
  out.Set("glibc", env.Null());
#endif
  return out;
}

// becomeInit(file, argv, env): execve into the init image. Returns only by
// throwing, with nothing changed, when execve fails.
Napi::Value BecomeInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = CString(info[0], "file");
  CStrings argv(CStringArray(info[1], "argv"));
  CStrings envp(CStringArray(info[2], "env"));
  // [loader, image, args...] for the shared-object image; [image, args...]
  // for the static one (prebuilds), `posix-daemon-init --help` among them.
  if (argv.size() < 2) throw ArgValueError(env, "argv", "is too short");

  // Everything blocked from here on and through execve: the new image keeps
  // the mask and every pending signal, so nothing sent to PID 1 from now on
  // is lost. What came before (node's start-up, the program's imports) is
  // plain node as PID 1, which drops a SIGTERM it has no handler for: the
  // posix-daemon-init entry closes that window (README, "In a container").
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  // Stdio back to the mode the process started with (Node may have made a
  // pipe non-blocking). Other threads could observe it only if this process
  // ran JavaScript again, which it does only when execve fails: undone then.
  // Stdio may be close-on-exec (Node marks it so at times): the init image
  // and the program it starts must get it. Both changes are to fds 0-2
  // only, which every spawn inherits anyway.
  bool was_nonblocking[3];
  int fd_flags[3];
  for (int i = 0; i < 3; i++) {
    int fl = fcntl(i, F_GETFL);
    was_nonblocking[i] = fl != -1 && (fl & O_NONBLOCK) != 0;
    SetNonblocking(i, StdioWasNonblocking(i));
    fd_flags[i] = fcntl(i, F_GETFD);
    if (fd_flags[i] != -1 && (fd_flags[i] & FD_CLOEXEC)) fcntl(i, F_SETFD, fd_flags[i] & ~FD_CLOEXEC);
  }
  execve(file.c_str(), argv.data(), envp.data());
  int err = errno;
  for (int i = 0; i < 3; i++) {
    SetNonblocking(i, was_nonblocking[i]);
    if (fd_flags[i] != -1) fcntl(i, F_SETFD, fd_flags[i]);
  }
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  throw ErrnoError(env, err, "execve", file.c_str());
}

#endif  // __linux__

}  // namespace

void InitInit(Napi::Env env, Napi::Object exports) {
#ifdef __linux__
  exports.Set("initRuntime", Napi::Function::New(env, InitRuntime, "initRuntime"));
  exports.Set("becomeInit", Napi::Function::New(env, BecomeInit, "becomeInit"));
#endif
}

}  // namespace pd
