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

// An fd moved into place for the new image (systemd's LISTEN_FDS wants
// sockets at 3, 4, ...), with what was there before so a failed exec can
// put everything back.
struct FdMove {
  int target;
  int temp = -1;         // duplicate of the source, above every target
  int displaced = -1;    // duplicate of what the target held, or -1 if free
  int displaced_flags = 0;
};

struct SavedState {
  sigset_t mask;
  std::vector<FdMove> moves;
  std::vector<std::pair<int, struct sigaction>> ignored;  // signals we un-ignored
  std::vector<FdFlagChange> fd_flags;                     // FD_CLOEXEC changes
  std::vector<FdFlagChange> status_flags;                 // O_NONBLOCK changes on 0-2
};

void UndoMoves(std::vector<FdMove>& moves) {
  for (auto it = moves.rbegin(); it != moves.rend(); ++it) {
    if (it->displaced != -1) {
      dup2(it->displaced, it->target);
      fcntl(it->target, F_SETFD, it->displaced_flags);
      close(it->displaced);
    } else {
      close(it->target);
    }
    if (it->temp != -1) close(it->temp);
  }
  moves.clear();
}

// Moves each source fd to its target. Sources are first duplicated above
// every target, so a source that is itself some other move's target (or a
// swap) is never overwritten before it is copied.
int DoMoves(const std::vector<std::pair<int, int>>& pairs, std::vector<FdMove>& moves) {
  int above = 3;
  for (auto& p : pairs) above = std::max(above, p.second + 1);
  std::vector<int> temps;
  for (auto& p : pairs) {
    int t = fcntl(p.first, F_DUPFD_CLOEXEC, above);
    if (t == -1) {
      int err = errno;
      for (int x : temps) close(x);
      return err;
    }
    temps.push_back(t);
  }
  for (size_t i = 0; i < pairs.size(); i++) {
    FdMove m;
    m.target = pairs[i].second;
    m.temp = temps[i];
    int flags = fcntl(m.target, F_GETFD);
    if (flags != -1) {
      m.displaced = fcntl(m.target, F_DUPFD_CLOEXEC, above);
      if (m.displaced == -1) {
        int err = errno;
        close(m.temp);
        for (size_t j = i + 1; j < temps.size(); j++) close(temps[j]);
        UndoMoves(moves);
        return err;
      }
      m.displaced_flags = flags;
    }
    if (dup2(m.temp, m.target) == -1) {  // clears FD_CLOEXEC on the target
      int err = errno;
      if (m.displaced != -1) close(m.displaced);
      close(m.temp);
      for (size_t j = i + 1; j < temps.size(); j++) close(temps[j]);
      UndoMoves(moves);
      return err;
    }
    moves.push_back(m);
  }
  return 0;
}

void Restore(SavedState& s) {
  for (auto& c : s.status_flags) fcntl(c.fd, F_SETFL, c.old_flags);
  for (auto& c : s.fd_flags) fcntl(c.fd, F_SETFD, c.old_flags);
  UndoMoves(s.moves);
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
  // moveFds: [[source, target], ...]; targets >= 3 and distinct.
  std::vector<std::pair<int, int>> move_pairs;
  if (info.Length() > 4 && !info[4].IsUndefined()) {
    if (!info[4].IsArray()) throw ArgTypeError(env, "moveFds", "an instance of Array");
    Napi::Array a = info[4].As<Napi::Array>();
    if (a.Length() > 1024) throw ArgValueError(env, "moveFds", "is too long");
    for (uint32_t i = 0; i < a.Length(); i++) {
      std::vector<int> pair = FdArray(a.Get(i), "moveFds[" + std::to_string(i) + "]", 0);
      if (pair.size() != 2 || pair[1] < 3) {
        throw ArgValueError(env, "moveFds[" + std::to_string(i) + "]", "must be [source, target >= 3]");
      }
      if (!FdIsOpen(pair[0])) throw ErrnoError(env, EBADF, "fcntl");
      for (auto& p : move_pairs) {
        if (p.second == pair[1]) throw ArgValueError(env, "moveFds", "has duplicate targets");
      }
      move_pairs.emplace_back(pair[0], pair[1]);
      keep.push_back(pair[1]);
    }
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

  if (!move_pairs.empty()) {
    int err = DoMoves(move_pairs, saved.moves);
    if (err != 0) {
      Restore(saved);
      throw ErrnoError(env, err, "dup2");
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
