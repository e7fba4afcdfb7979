// execve(): replace the process image in place (same PID), leaving the
// process as the kernel and the next program expect it, and restoring
// everything if the exec fails so the current image can go on working.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common.h"

namespace pd {
namespace {

struct FdFlagChange {
  int fd;
  int old_flags;
};

struct SavedState {
  sigset_t mask;
  std::vector<std::pair<int, struct sigaction>> ignored;  // signals we un-ignored
  std::vector<FdFlagChange> fd_flags;                     // FD_CLOEXEC changes
  std::vector<FdFlagChange> status_flags;                 // O_NONBLOCK changes on 0-2
};

void Restore(SavedState& s) {
  for (auto& c : s.status_flags) fcntl(c.fd, F_SETFL, c.old_flags);
  for (auto& c : s.fd_flags) fcntl(c.fd, F_SETFD, c.old_flags);
  for (auto& sig : s.ignored) sigaction(sig.first, &sig.second, nullptr);
  pthread_sigmask(SIG_SETMASK, &s.mask, nullptr);
}

Napi::Value Execve(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = CString(info[0], "file");
  CStrings argv(info[1].IsUndefined() ? std::vector<std::string>() : CStringArray(info[1], "args"));
  CStrings envp(info[2].IsUndefined() ? CurrentEnviron() : CStringArray(info[2], "env"));
  std::vector<int> keep;
  if (info.Length() > 3 && !info[3].IsUndefined()) keep = FdArray(info[3], "keepFds", 3);
  for (int fd : keep) {
    if (!FdIsOpen(fd)) throw ErrnoError(env, EBADF, "fcntl");
  }
  std::sort(keep.begin(), keep.end());

  SavedState saved;
  sigset_t all;
  sigfillset(&all);
  // Nothing may run a handler while dispositions are half reset.
  pthread_sigmask(SIG_SETMASK, &all, &saved.mask);

  // Caught signals are reset to SIG_DFL by execve itself; ignored ones would
  // stay ignored in the new image (Node ignores SIGPIPE and SIGXFSZ), so put
  // them back to default.
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < NSIG; s++) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    struct sigaction old;
    if (sigaction(s, nullptr, &old) != 0) continue;
    if (old.sa_handler == SIG_IGN && sigaction(s, &dfl, nullptr) == 0) {
      saved.ignored.emplace_back(s, old);
    }
  }

  // Every fd but stdio and the kept ones is closed by the exec.
  for (int fd : OpenFds()) {
    int flags = fcntl(fd, F_GETFD);
    if (flags == -1) continue;
    bool inherit = fd < 3 || std::binary_search(keep.begin(), keep.end(), fd);
    int want = inherit ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC);
    if (want != flags && fcntl(fd, F_SETFD, want) == 0) saved.fd_flags.push_back({fd, flags});
  }
  // Stdio back to the blocking mode it had when the process started.
  for (int fd = 0; fd < 3; fd++) {
    int fl = fcntl(fd, F_GETFL);
    if (fl == -1) continue;
    int want = StdioWasNonblocking(fd) ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    if (want != fl && fcntl(fd, F_SETFL, want) == 0) saved.status_flags.push_back({fd, fl});
  }

  // The new image must start with an empty signal mask. A signal arriving
  // between here and execve meets either Node's handler (and is lost with
  // the old image) or the default action, as it would just after the exec.
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);
  execve(file.c_str(), argv.data(), envp.data());
  int err = errno;

  pthread_sigmask(SIG_SETMASK, &all, nullptr);
  Restore(saved);
  throw ErrnoError(env, err, "execve", file.c_str());
}

}  // namespace

void InitExec(Napi::Env env, Napi::Object exports) {
  exports.Set("execve", Napi::Function::New(env, Execve, "execve"));
}

}  // namespace pd
