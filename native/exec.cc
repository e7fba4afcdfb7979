// execve(): replace the process image in place (same PID), leaving the
// process as the kernel and the next program expect it, and restoring
// everything if the exec fails so the current image can go on working.
//
// The process is multi-threaded (libuv's pool, V8's platform threads, maybe
// workers), and dispositions, fd flags and file status flags are shared by
// all its threads. What this code changes process-wide, and for how long
// another thread can observe it:
//
// - Ignored signals. The new image must not inherit SIG_IGN (Node ignores
//   SIGPIPE and SIGXFSZ), but setting SIG_DFL would make a worker that
//   writes to a closed socket die of SIGPIPE if the exec then fails. They
//   get a handler that does nothing instead (SA_RESTART, so for a running
//   thread it is "ignored"), and execve(2) itself resets every handled signal
//   to SIG_DFL (and its flags to 0). No window: at every instant the
//   disposition is SIG_IGN or the no-op handler.
//   SIGCHLD is the one whose SIG_IGN means more than "not delivered": the
//   kernel reaps the children itself (no zombies). Its no-op handler gets
//   SA_NOCLDWAIT, which keeps exactly that: a child ending during the
//   attempt is still reaped by the kernel (issue 16, item 9: without it a
//   failed exec left zombies nobody would ever wait for). The new image
//   gets SIGCHLD at SIG_DFL, flags cleared, like every other signal: a
//   program started with SIGCHLD ignored has its wait() fail with ECHILD
//   (shells, Python's subprocess), which is why nothing is inherited
//   ignored. SIG_IGN itself is not kept for the new image's sake.
// - FD_CLOEXEC set on every fd we do not keep: only narrows what a fork()
//   in another thread could leak, so harmless. Undone on failure only for an
//   fd that is still the same file (another thread may have closed it and
//   opened something else under the number).
// - FD_CLOEXEC cleared on the kept fds (and on 0-2 if set). A thread that
//   forks and execs between that moment and our execve(2) leaks them into
//   its child. It cannot be closed (the kernel has no "exec with these fds");
//   it is narrowed to the last few syscalls before execve(2), and on failure
//   the flag is set again first.
// - O_NONBLOCK cleared on stdio (shared with every process using the same
//   open file description): a few syscalls, as before.
// - The calling thread blocks every signal while it prepares, so none of
//   Node's handlers runs on it half-way; the mask is emptied just before
//   execve(2), as the new image must start with it empty. A signal arriving
//   in between is handled by the old image and lost with it: the same as
//   one arriving a moment earlier. The one exception is `blocked`: signals
//   the caller asks to leave blocked (restartViaExec's restart signals),
//   for a new image that knows to handle and unblock them first thing
//   (hold.c). One sent during the exec or the next image's start-up stays
//   pending instead of meeting SIG_DFL. If execve fails the mask is restored.
// No fd is ever dup2()'d over: an fd libuv or V8 owns is never replaced,
// even for an instant (on Node 20 fd 4 is libuv's signal pipe).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "common.h"

namespace pd {
namespace {

struct FdFlagChange {
  int fd;
  int old_flags;
  dev_t dev;  // identity when changed: the fd may be closed and its
  ino_t ino;  // number reused by another thread before a restore
};

struct SavedState {
  sigset_t mask;
  std::vector<std::pair<int, struct sigaction>> ignored;  // signals we un-ignored
  std::vector<FdFlagChange> fd_flags;                     // FD_CLOEXEC set on others
  std::vector<FdFlagChange> kept_flags;                   // FD_CLOEXEC cleared on kept
  std::vector<FdFlagChange> status_flags;                 // O_NONBLOCK changes on 0-2
};

// Stands in for SIG_IGN until the exec: doing nothing is ignoring, and a
// handled signal is reset to SIG_DFL by execve(2) itself.
void IgnoreUntilExec(int) {}

bool SameFile(const FdFlagChange& c) {
  struct stat st;
  return fstat(c.fd, &st) == 0 && st.st_dev == c.dev && st.st_ino == c.ino;
}

bool SetFdFlags(int fd, int flags, int want, std::vector<FdFlagChange>* log) {
  struct stat st;
  if (fstat(fd, &st) != 0) return false;
  if (fcntl(fd, F_SETFD, want) != 0) return false;
  log->push_back({fd, flags, st.st_dev, st.st_ino});
  return true;
}

void Restore(SavedState& s) {
  // Kept fds first: that is the window a concurrent fork could leak through.
  for (auto& c : s.kept_flags) {
    if (SameFile(c)) fcntl(c.fd, F_SETFD, c.old_flags);
  }
  for (auto& sig : s.ignored) sigaction(sig.first, &sig.second, nullptr);
  // Only the O_NONBLOCK bit went, and only onto the same file: another
  // thread may have put something else on 0-2 meanwhile (a log reopened
  // with dup2), whose other status flags (O_APPEND) are not ours to set.
  for (auto& c : s.status_flags) {
    if (SameFile(c)) SetNonblocking(c.fd, (c.old_flags & O_NONBLOCK) != 0);
  }
  for (auto& c : s.fd_flags) {
    if (SameFile(c)) fcntl(c.fd, F_SETFD, c.old_flags);
  }
  pthread_sigmask(SIG_SETMASK, &s.mask, nullptr);
}

// What one attempt needs, all allocated before the first change: from the
// moment signals are blocked until they are restored nothing allocates, so
// nothing can throw half-way and leave the mask blocked or flags changed
// (issue 16, item 7).
struct Attempt {
  std::string file;
  CStrings argv;
  CStrings envp;
  std::vector<int> keep;                        // sorted
  std::vector<int> fds;                         // open now
  std::vector<std::pair<int, int>> to_inherit;  // fd, current flags
  sigset_t blocked;                             // the mask the new image starts with
  SavedState saved;
};

void Prepare(const Napi::CallbackInfo& info, Attempt* a) {
  Napi::Env env = info.Env();
  a->file = CString(info[0], "file");
  a->argv = CStrings(info[1].IsUndefined() ? std::vector<std::string>() : CStringArray(info[1], "args"));
  a->envp = CStrings(info[2].IsUndefined() ? CurrentEnviron() : CStringArray(info[2], "env"));
  if (info.Length() > 3 && !info[3].IsUndefined()) a->keep = FdArray(info[3], "keepFds", 3);
  for (int fd : a->keep) {
    if (!FdIsOpen(fd)) throw ErrnoError(env, EBADF, "fcntl");
  }
  // Moving fds into place (the LISTEN_FDS layout) would dup2 over whatever
  // libuv holds there in this multi-threaded process; never offered.
  if (info.Length() > 4 && !info[4].IsUndefined()) {
    throw ArgValueError(env, "moveFds", "is not supported: keep the fds where they are (keepFds)");
  }
  sigemptyset(&a->blocked);
  if (info.Length() > 5 && !info[5].IsUndefined()) {
    for (int sig : FdArray(info[5], "blockSignals", 1)) {
      if (sig >= NSIG || sig == SIGKILL || sig == SIGSTOP) {
        throw ArgValueError(env, "blockSignals", "must list catchable signal numbers");
      }
      sigaddset(&a->blocked, sig);
    }
  }
  std::sort(a->keep.begin(), a->keep.end());
  a->fds = OpenFds();
  // Room for every record the attempt may make: push_back never allocates.
  a->to_inherit.reserve(a->fds.size());
  a->saved.fd_flags.reserve(a->fds.size());
  a->saved.kept_flags.reserve(a->fds.size());
  a->saved.status_flags.reserve(3);
  a->saved.ignored.reserve(NSIG);
}

Napi::Value Execve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Attempt a;
  try {
    Prepare(info, &a);
  } catch (const std::bad_alloc&) {
    throw ErrnoError(env, ENOMEM, "execve");
  }
  std::vector<int>& keep = a.keep;
  std::vector<std::pair<int, int>>& to_inherit = a.to_inherit;
  SavedState& saved = a.saved;

  sigset_t all;
  sigfillset(&all);
  // No handler runs on this thread while the state is half changed.
  pthread_sigmask(SIG_SETMASK, &all, &saved.mask);

  // Every fd but stdio and the kept ones is closed by the exec. Kept ones
  // (and stdio) are only noted here; their flag is cleared at the end.
  for (int fd : a.fds) {
    int flags = fcntl(fd, F_GETFD);
    if (flags == -1) continue;
    bool inherit = fd < 3 || std::binary_search(keep.begin(), keep.end(), fd);
    if (inherit) {
      if (flags & FD_CLOEXEC) to_inherit.emplace_back(fd, flags);
    } else if (!(flags & FD_CLOEXEC)) {
      SetFdFlags(fd, flags, flags | FD_CLOEXEC, &saved.fd_flags);
    }
  }
  // Stdio back to the blocking mode it had when the process started.
  for (int fd = 0; fd < 3; fd++) {
    struct stat st;
    if (fstat(fd, &st) != 0) continue;
    int fl = SetNonblocking(fd, StdioWasNonblocking(fd));
    if (fl != -1 && (fl & O_NONBLOCK) != (StdioWasNonblocking(fd) ? O_NONBLOCK : 0)) {
      saved.status_flags.push_back({fd, fl, st.st_dev, st.st_ino});
    }
  }
  // Ignored signals: a no-op handler now, SIG_DFL in the new image.
  struct sigaction noop;
  memset(&noop, 0, sizeof(noop));
  noop.sa_handler = IgnoreUntilExec;
  noop.sa_flags = SA_RESTART;
  sigemptyset(&noop.sa_mask);
  for (int s = 1; s < NSIG; s++) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    struct sigaction old;
    if (sigaction(s, nullptr, &old) != 0) continue;
    if (old.sa_handler != SIG_IGN) continue;
    // SIGCHLD ignored: the kernel reaps; SA_NOCLDWAIT keeps it so.
    noop.sa_flags = s == SIGCHLD ? (SA_RESTART | SA_NOCLDWAIT) : SA_RESTART;
    if (sigaction(s, &noop, nullptr) == 0) saved.ignored.emplace_back(s, old);
  }
  // Last: the kept fds become inheritable, the only change another thread's
  // fork() could notice (it would leak them).
  for (auto& k : to_inherit) SetFdFlags(k.first, k.second, k.second & ~FD_CLOEXEC, &saved.kept_flags);

  // The new image starts with an empty signal mask, but for `blocked`.
  pthread_sigmask(SIG_SETMASK, &a.blocked, nullptr);
  execve(a.file.c_str(), a.argv.data(), a.envp.data());
  int err = errno;

  pthread_sigmask(SIG_SETMASK, &all, nullptr);
  Restore(saved);
  throw ErrnoError(env, err, "execve", a.file.c_str());
}

}  // namespace

void InitExec(Napi::Env env, Napi::Object exports) {
  exports.Set("execve", Napi::Function::New(env, Execve, "execve"));
}

}  // namespace pd
