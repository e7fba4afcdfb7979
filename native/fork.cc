// fork(plan): the real fork(2), where the child never runs JavaScript.
//
// Node marks the V8 heap MADV_DONTFORK and other threads' locks vanish in
// the child, so whatever the child must do is described as data (a plan),
// fully converted to C structures before fork(), and carried out here with
// async-signal-safe calls only. Modelled on libuv's uv_spawn: signals blocked
// around fork, dispositions reset in the child, exec errors reported through
// a close-on-exec pipe so they can be thrown synchronously in the parent.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#ifdef __linux__
#include <sys/syscall.h>
#endif
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>

#include "common.h"

namespace pd {
namespace {

enum Stage : int32_t {
  kStageNone = 0,
  kStageSetsid,
  kStageSetpgid,
  kStagePipe,
  kStageFork,
  kStageChdir,
  kStageOpenDevNull,
  kStageDup,
  kStageCloexec,
  kStageExecve,
  kStageDeathSignal,
};

const char* StageSyscall(int32_t stage) {
  switch (stage) {
    case kStageSetsid: return "setsid";
    case kStageSetpgid: return "setpgid";
    case kStagePipe: return "pipe";
    case kStageFork: return "fork";
    case kStageChdir: return "chdir";
    case kStageOpenDevNull: return "open";
    case kStageDup: return "dup2";
    case kStageCloexec: return "fcntl";
    case kStageDeathSignal: return "prctl";
    default: return "execve";
  }
}

// One message on the status pipe; small enough for atomic pipe writes.
struct Message {
  int32_t kind;   // kPid: an intermediate reports the PID it forked; kError
  int32_t level;  // nesting level of the sender
  int32_t value;  // pid or errno
  int32_t stage;
};
constexpr int32_t kPid = 1;
constexpr int32_t kError = 2;

enum class StdioMode { kInherit, kIgnore, kFds };

// One level of a plan. Every level may set setsid/setpgid, umask, cwd and
// stdio: an intermediate level (one with `next`) applies them in itself
// before it forks, so the levels below inherit them (umask, cwd and fds 0-2
// are inherited across fork) unless they set their own. keepFds only means
// something where execve happens, so the exec level uses its own keepFds or,
// without one, the nearest outer level's (see ParsePlan).
struct Plan {
  bool setsid = false;
  bool setpgid = false;
  int umask = -1;
  bool has_cwd = false;
  std::string cwd;
  StdioMode stdio = StdioMode::kInherit;
  int stdio_fds[3] = {0, 1, 2};
  std::vector<int> keep_fds;  // sorted, unique, all >= 3
  int death_signal = 0;       // PR_SET_PDEATHSIG; a direct exec child only
  std::unique_ptr<Plan> next;
  std::string file;
  CStrings argv;
  CStrings envp;
};

constexpr int kMaxNesting = 4;

void CheckOpenFd(Napi::Env env, int fd) {
  if (!FdIsOpen(fd)) throw ErrnoError(env, EBADF, "fcntl");
}

std::unique_ptr<Plan> ParsePlan(Napi::Env env, const Napi::Value& value, const std::string& name,
                                int depth, const std::vector<int>* outer_keep_fds) {
  if (!value.IsObject() || value.IsArray() || value.IsFunction()) {
    throw ArgTypeError(env, name, "of type object");
  }
  if (depth > kMaxNesting) throw ArgValueError(env, name, "nests forks too deeply");
  Napi::Object o = value.As<Napi::Object>();
  auto plan = std::make_unique<Plan>();

  plan->setsid = OptBool(o, "setsid", name, false);
  plan->setpgid = OptBool(o, "setpgid", name, false);
  if (plan->setsid && plan->setpgid) {
    // setsid() already makes the caller the leader of a new process group,
    // and a session leader may not call setpgid() (EPERM).
    throw ArgValueError(env, name, "must not set both 'setsid' and 'setpgid' (setsid already starts a new process group)");
  }

  Napi::Value v = o.Get("umask");
  if (!v.IsUndefined()) plan->umask = Int(v, name + ".umask", 0, 0777);

  v = o.Get("cwd");
  if (!v.IsUndefined()) {
    plan->cwd = CString(v, name + ".cwd");
    plan->has_cwd = true;
  }

  v = o.Get("stdio");
  if (v.IsUndefined()) {
    plan->stdio = StdioMode::kInherit;
  } else if (v.IsString()) {
    std::string s = v.As<Napi::String>().Utf8Value();
    if (s == "inherit") plan->stdio = StdioMode::kInherit;
    else if (s == "ignore") plan->stdio = StdioMode::kIgnore;
    else throw ArgValueError(env, name + ".stdio", "must be 'inherit', 'ignore' or [fd, fd, fd]");
  } else if (v.IsArray() && v.As<Napi::Array>().Length() == 3) {
    std::vector<int> fds = FdArray(v, name + ".stdio", 0);
    plan->stdio = StdioMode::kFds;
    for (int i = 0; i < 3; i++) {
      CheckOpenFd(env, fds[i]);
      plan->stdio_fds[i] = fds[i];
    }
  } else {
    throw ArgValueError(env, name + ".stdio", "must be 'inherit', 'ignore' or [fd, fd, fd]");
  }

  v = o.Get("keepFds");
  const bool has_keep_fds = !v.IsUndefined();
  if (has_keep_fds) {
    plan->keep_fds = FdArray(v, name + ".keepFds", 3);
    for (int fd : plan->keep_fds) CheckOpenFd(env, fd);
    std::sort(plan->keep_fds.begin(), plan->keep_fds.end());
    plan->keep_fds.erase(std::unique(plan->keep_fds.begin(), plan->keep_fds.end()),
                         plan->keep_fds.end());
  }

  Napi::Value nested = o.Get("fork");
  Napi::Value file = o.Get("file");
  if (!nested.IsUndefined() && !file.IsUndefined()) {
    throw ArgValueError(env, name, "must have either 'file' or 'fork', not both");
  }
  if (!has_keep_fds && outer_keep_fds != nullptr) plan->keep_fds = *outer_keep_fds;
  if (!nested.IsUndefined()) {
    plan->next = ParsePlan(env, nested, name + ".fork", depth + 1,
                           has_keep_fds || outer_keep_fds != nullptr ? &plan->keep_fds : nullptr);
    return plan;
  }
  if (file.IsUndefined()) throw ArgValueError(env, name, "must have 'file' or 'fork'");
  plan->file = CString(file, name + ".file");
  v = o.Get("deathSignal");
  if (!v.IsUndefined()) {
#ifdef __linux__
    // Its parent would be an intermediate level, which exits at once.
    if (depth > 0) throw ArgValueError(env, name + ".deathSignal", "is only for a direct child, not a nested plan");
    plan->death_signal = Int(v, name + ".deathSignal", 1, NSIG - 1);
#else
    throw ArgValueError(env, name + ".deathSignal", "needs Linux (PR_SET_PDEATHSIG)");
#endif
  }
  if (plan->file.empty()) throw ArgValueError(env, name + ".file", "must be a non-empty string");

  std::vector<std::string> argv;
  v = o.Get("argv0");
  argv.push_back(v.IsUndefined() ? plan->file : CString(v, name + ".argv0"));
  v = o.Get("args");
  if (!v.IsUndefined()) {
    std::vector<std::string> args = CStringArray(v, name + ".args");
    argv.insert(argv.end(), args.begin(), args.end());
  }
  plan->argv = CStrings(std::move(argv));

  v = o.Get("env");
  plan->envp = CStrings(v.IsUndefined() ? CurrentEnviron() : CStringArray(v, name + ".env"));
  return plan;
}

// ---------------------------------------------------------------------------
// Child side. Everything below runs between fork() and execve(): only
// async-signal-safe calls, no allocation, no C++ exceptions, no JavaScript.

// Per-process state of a forked child. Each forked process works on its own
// copy (fork copies memory), so a level may change it for the levels below.
struct ChildContext {
  int fd_limit;
  bool stdio_nonblocking_at_load[3];
  // Is fd i still Node's own stdio? False once a level replaced it: the
  // blocking mode recorded at load time is then not that fd's business.
  bool stdio_is_nodes[3];
  int status_fd;
  // Exec level of a nested plan only: write end of a pipe to the parent
  // intermediate, which learns from it whether execve failed (a byte) or
  // happened (EOF), so it can reap a failed child itself. -1 elsewhere.
  int exec_report_fd;
  // The PID of the process that forked level 0 (deathSignal's check).
  pid_t parent_pid;
};

// fork() from inside a forked child. glibc's fork() runs every
// pthread_atfork handler that any library in Node registered, and those may
// take locks or allocate; the raw clone(SIGCHLD) syscall is what fork() does
// without them. s390 takes (stack, flags, ...), every other Linux
// architecture (flags, stack, ...); the rest are zero either way.
pid_t ForkInChild() {
#if defined(__linux__) && defined(SYS_clone) && (defined(__s390__) || defined(__s390x__))
  return static_cast<pid_t>(syscall(SYS_clone, 0, SIGCHLD, 0, 0, 0));
#elif defined(__linux__) && defined(SYS_clone)
  return static_cast<pid_t>(syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0));
#else
  return fork();
#endif
}

void WriteMessage(int fd, const Message& m) { WriteAll(fd, &m, sizeof(m)); }

#ifdef __linux__
// A msghdr over one buffer, with room for one fd (SCM_RIGHTS). On the
// stack: usable in a forked child.
struct OneFdMessage {
  struct iovec iov;
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  struct msghdr mh;
  OneFdMessage(void* buf, size_t len) {
    iov.iov_base = buf;
    iov.iov_len = len;
    memset(control, 0, sizeof(control));
    memset(&mh, 0, sizeof(mh));
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = control;
    mh.msg_controllen = sizeof(control);
  }
};
#endif

// The message with `passed` attached (SCM_RIGHTS) where the status channel
// is a socket (Linux); without it when that fails or there is no fd.
void WriteMessageWithFd(int fd, const Message& m, int passed) {
#ifdef __linux__
  if (passed != -1) {
    OneFdMessage om(const_cast<Message*>(&m), sizeof(m));
    struct msghdr& mh = om.mh;
    struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &passed, sizeof(int));
    ssize_t n;
    do {
      n = sendmsg(fd, &mh, MSG_NOSIGNAL);
    } while (n == -1 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof(m))) return;
  }
#endif
  WriteMessage(fd, m);
}

[[noreturn]] void Fail(const ChildContext& ctx, int level, Stage stage, int err) {
  WriteMessage(ctx.status_fd, Message{kError, level, err, stage});
  if (ctx.exec_report_fd != -1) WriteAll(ctx.exec_report_fd, "x", 1);
  _exit(127);
}

// Waits for our own child, which is known to be exiting or about to exit.
void ReapOwnChild(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) == -1 && errno == EINTR) {
  }
}

void ResetSignals() {
  // Dispositions first, while everything is still blocked, so no handler
  // inherited from Node can run in the child.
  ResetSignalDispositions();
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
}

// Moves a pipe end of ours off 0-2 (where it lands if Node's stdio was
// closed), where stdio is about to go. The old number is closed: left there,
// 'inherit' would clear its close-on-exec flag and the program would hold
// the pipe open, so EOF (and fork()'s return) would wait for it to exit.
void LiftAboveStdio(int* fd, ChildContext* ctx, int level) {
  if (*fd == -1 || *fd >= 3) return;
  int moved = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
  if (moved == -1) Fail(*ctx, level, kStageDup, errno);
  close(*fd);
  *fd = moved;
}

// Puts the plan's stdio on 0-2, and notes which of 0-2 are no longer
// Node's own.
void ApplyStdio(const Plan* plan, ChildContext* ctx, int level) {
  int src[3] = {0, 1, 2};
  int null_fd = -1;
  if (plan->stdio == StdioMode::kIgnore) {
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd == -1) Fail(*ctx, level, kStageOpenDevNull, errno);
    for (int i = 0; i < 3; i++) src[i] = null_fd;
  } else if (plan->stdio == StdioMode::kFds) {
    for (int i = 0; i < 3; i++) src[i] = plan->stdio_fds[i];
  }
  // A source sitting on 0-2 could be overwritten by an earlier dup2 (think
  // [1, 0, 2]): lift such sources above 2 first.
  for (int i = 0; i < 3; i++) {
    if (src[i] < 3 && src[i] != i) {
      int lifted = fcntl(src[i], F_DUPFD_CLOEXEC, 3);
      if (lifted == -1) Fail(*ctx, level, kStageDup, errno);
      for (int j = i + 1; j < 3; j++) {
        if (src[j] == src[i]) src[j] = lifted;
      }
      src[i] = lifted;
    }
  }
  for (int i = 0; i < 3; i++) {
    if (src[i] == i) {
      int flags = fcntl(i, F_GETFD);
      if (flags != -1 && (flags & FD_CLOEXEC)) fcntl(i, F_SETFD, flags & ~FD_CLOEXEC);
    } else if (dup2(src[i], i) == -1) {
      Fail(*ctx, level, kStageDup, errno);
    }
    // Anything but Node's own fd i there (/dev/null may have landed on a
    // slot Node had closed, and then needed no dup2).
    const bool kept = plan->stdio == StdioMode::kInherit ||
                      (plan->stdio == StdioMode::kFds && plan->stdio_fds[i] == i);
    if (!kept) ctx->stdio_is_nodes[i] = false;
  }
  // Close-on-exec anyway; closing it keeps intermediates' fd tables small.
  // Not when it landed on 0-2 itself (Node had that slot closed): it is
  // the stdio the plan asked for there.
  if (null_fd > 2) close(null_fd);
}

[[noreturn]] void RunChild(const Plan* plan, ChildContext* ctx, int level);

// An intermediate level: fork the next level, report its PID, wait until it
// is done with us, and vanish, so that the exec level is orphaned and
// adopted by init (or a subreaper). Each intermediate reaps its own child,
// so the Node process only ever waits for the one child it forked itself
// (issue 10, item 7): a PID reported from deeper down may belong to anyone
// by the time Node would wait for it.
[[noreturn]] void RunIntermediate(const Plan* plan, ChildContext* ctx, int level) {
  const bool next_execs = plan->next->next == nullptr;
  int report[2] = {-1, -1};
  if (next_execs) {
    if (PipeCloexec(report) == -1) Fail(*ctx, level, kStagePipe, errno);
  }
  pid_t pid = ForkInChild();
  if (pid == -1) Fail(*ctx, level, kStageFork, errno);
  if (pid == 0) {
    if (next_execs) {
      close(report[0]);
      ctx->exec_report_fd = report[1];
    }
    RunChild(plan->next.get(), ctx, level + 1);
  }
  if (next_execs) {
    // The exec level is our child and we have not reaped it: its PID is
    // certainly still its own, alive or zombie. A pidfd opened here, passed
    // to Node with the PID, keeps referring to it after we exit and init
    // reaps it, when the number may go to anyone (issue 16, item 10).
    int pidfd = PidfdOpen(pid);
    WriteMessageWithFd(ctx->status_fd, Message{kPid, level + 1, pid, kStageNone}, pidfd);
    if (pidfd != -1) close(pidfd);
  } else {
    WriteMessage(ctx->status_fd, Message{kPid, level + 1, pid, kStageNone});
  }
  if (next_execs) {
    // The exec level writes a byte if execve (or anything before it)
    // failed, right before _exit(127); EOF means it exec'd (the write end is
    // close-on-exec) and is the daemon now: not ours to wait for.
    close(report[1]);
    char byte;
    ssize_t n;
    do {
      n = read(report[0], &byte, 1);
    } while (n == -1 && errno == EINTR);
    if (n == 1) ReapOwnChild(pid);
  } else {
    // The next level is an intermediate: it exits as soon as its own child
    // has exec'd or failed.
    ReapOwnChild(pid);
  }
  _exit(0);
}

[[noreturn]] void RunChild(const Plan* plan, ChildContext* ctx, int level) {
  // Level 0 comes from Node; a deeper level from an intermediate that did
  // this already and installed nothing since (it inherits the result).
  if (level == 0) ResetSignals();

  if (plan->setsid && setsid() == -1) Fail(*ctx, level, kStageSetsid, errno);
  if (plan->setpgid && setpgid(0, 0) == -1) Fail(*ctx, level, kStageSetpgid, errno);
#ifdef __linux__
  if (plan->death_signal > 0) {
    if (prctl(PR_SET_PDEATHSIG, plan->death_signal, 0, 0, 0) == -1) Fail(*ctx, level, kStageDeathSignal, errno);
    // A parent that ended before prctl() sends nothing: we were re-parented
    // already. Then the signal is ours now (its default action, after
    // ResetSignals; execve is not reached if that ends us).
    if (getppid() != ctx->parent_pid) kill(getpid(), plan->death_signal);
  }
#endif

  // umask, cwd and stdio apply at every level; in an intermediate they are
  // inherited by the levels below, which may set their own.
  if (plan->umask >= 0) umask(static_cast<mode_t>(plan->umask));
  if (plan->has_cwd && chdir(plan->cwd.c_str()) == -1) Fail(*ctx, level, kStageChdir, errno);

  LiftAboveStdio(&ctx->status_fd, ctx, level);
  LiftAboveStdio(&ctx->exec_report_fd, ctx, level);
  ApplyStdio(plan, ctx, level);

  if (plan->next) RunIntermediate(plan, ctx, level);

  // Node's own stdio, inherited, goes back to the mode the process started
  // with: Node may have made a pipe or tty non-blocking, which most programs
  // can't handle. Fds the plan (or an outer level) chose are left as they
  // are.
  for (int i = 0; i < 3; i++) {
    if (ctx->stdio_is_nodes[i]) SetNonblocking(i, ctx->stdio_nonblocking_at_load[i]);
  }

  int err = CloexecAllExcept(plan->keep_fds.data(), plan->keep_fds.size(), ctx->fd_limit);
  if (err != 0) Fail(*ctx, level, kStageCloexec, err);

  execve(plan->file.c_str(), const_cast<Plan*>(plan)->argv.data(),
         const_cast<Plan*>(plan)->envp.data());
  Fail(*ctx, level, kStageExecve, errno);
}

// ---------------------------------------------------------------------------
// Parent side.

// The channel children report on: close-on-exec, so EOF means every
// process holding the write end has exec'd or exited. On Linux a
// SOCK_SEQPACKET socketpair (one record per message, and it can carry the
// exec level's pidfd); elsewhere a pipe.
int MakeStatusChannel(int fds[2]) {
#ifdef __linux__
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0) return 0;
#endif
  return PipeCloexec(fds);
}

// read(2) of the status channel; an fd passed with the bytes lands in
// *passed (close-on-exec), else *passed is -1.
ssize_t ReadStatus(int fd, char* buf, size_t len, int* passed) {
  *passed = -1;
#ifdef __linux__
  OneFdMessage om(buf, len);
  struct msghdr& mh = om.mh;
  ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  if (n == -1 && errno == ENOTSOCK) return read(fd, buf, len);  // the pipe fallback
  if (n >= 0) {
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; i++) {
        int got;
        memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (*passed == -1) *passed = got;
        else close(got);
      }
    }
  }
  return n;
#else
  return read(fd, buf, len);
#endif
}

const Plan* PlanAtLevel(const Plan* p, int level) {
  for (int i = 0; i < level && p->next; i++) p = p->next.get();
  return p;
}

Napi::Value Fork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || info[0].IsUndefined() || info[0].IsNull()) {
    throw ArgTypeError(env, "plan", "of type object");
  }
  std::unique_ptr<Plan> plan;
  try {
    plan = ParsePlan(env, info[0], "plan", 0, nullptr);
  } catch (const std::bad_alloc&) {
    throw ErrnoError(env, ENOMEM, "fork");
  }

  ChildContext ctx;
  ctx.fd_limit = ScanFdLimit();
  for (int i = 0; i < 3; i++) {
    ctx.stdio_nonblocking_at_load[i] = StdioWasNonblocking(i);
    ctx.stdio_is_nodes[i] = true;
  }
  ctx.exec_report_fd = -1;
  ctx.parent_pid = getpid();

  const bool with_pidfd = info.Length() > 1 && info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
  int status_pipe[2];
  if (MakeStatusChannel(status_pipe) == -1) throw ErrnoError(env, errno, "pipe");
  ctx.status_fd = status_pipe[1];

  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pid = fork();
  if (pid == 0) {
    close(status_pipe[0]);
    RunChild(plan.get(), &ctx, 0);
  }
  int fork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
  close(status_pipe[1]);
  if (pid == -1) {
    close(status_pipe[0]);
    throw ErrnoError(env, fork_errno, "fork");
  }

  // EOF arrives once every process holding the write end has exec'd (the
  // pipe is close-on-exec) or exited.
  // forked[level] = pid at that level; sized up front, so nothing is
  // allocated (nothing can throw) while a child may be left unreaped.
  pid_t forked[kMaxNesting + 2] = {pid};
  size_t reported = 1;  // levels reported so far, forked[0] included
  size_t depth = 0;
  for (const Plan* p = plan.get(); p->next; p = p->next.get()) depth++;
  int exec_pidfd = -1;  // the exec level's pidfd, from its parent intermediate
  int err = 0;
  int32_t stage = kStageNone;
  int32_t err_level = 0;
  Message msg;
  size_t have = 0;
  char* buf = reinterpret_cast<char*>(&msg);
  for (;;) {
    int passed = -1;
    ssize_t n = ReadStatus(status_pipe[0], buf + have, sizeof(msg) - have, &passed);
    if (n == -1 && errno == EINTR) continue;
    if (n > 0 && have + static_cast<size_t>(n) == sizeof(msg) && msg.kind == kPid &&
        static_cast<size_t>(msg.level) == depth && exec_pidfd == -1) {
      exec_pidfd = passed;
    } else if (passed != -1) {
      close(passed);
    }
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    if (have < sizeof(msg)) continue;
    have = 0;
    if (msg.kind == kPid && msg.level > 0 && msg.level <= kMaxNesting + 1) {
      forked[msg.level] = msg.value;
      if (static_cast<size_t>(msg.level) + 1 > reported) reported = msg.level + 1;
    } else if (msg.kind == kError && err == 0) {
      err = msg.value;
      stage = msg.stage;
      err_level = msg.level;
    }
  }
  close(status_pipe[0]);

  // We wait for one process only: the child we forked ourselves, and only
  // when it cannot be running a program (it is an intermediate, or it
  // failed). It has closed its end of the pipe without exec'ing, i.e. it has
  // exited, so this wait is over at once, and a PID that is still our
  // unreaped child cannot have been reused by anyone. Deeper levels were
  // reaped by their own parents before those exited (RunIntermediate).
  const bool nested = plan->next != nullptr;
  if (nested || err != 0) ReapOwnChild(pid);
  // The exec level is `depth`: a shorter report means an intermediate was
  // killed before it told us, and the last PID would be a reaped one.
  pid_t exec_pid = reported == depth + 1 ? forked[depth] : 0;
  if (err != 0 || exec_pid <= 0 || !with_pidfd) {
    if (exec_pidfd != -1) close(exec_pidfd);
    exec_pidfd = -1;
  }
  if (err != 0) {
    const Plan* failed = PlanAtLevel(plan.get(), err_level);
    const char* path = nullptr;
    if (stage == kStageExecve) path = failed->file.c_str();
    else if (stage == kStageChdir) path = failed->cwd.c_str();
    throw ErrnoError(env, err, StageSyscall(stage), path);
  }
  if (nested && exec_pid <= 0) {
    // An intermediate died before it could report (killed from outside).
    throw ErrnoError(env, ECHILD, "fork");
  }
  if (!with_pidfd) return Napi::Number::New(env, exec_pid);
  // { pid, pidfd }: pidfd is -1 for a plan that does not nest (the caller's
  // own child: its PID stays its own until the caller reaps it) or where
  // the kernel has no pidfds. The caller owns the fd.
  try {
    Napi::Object out = Napi::Object::New(env);
    out.Set("pid", exec_pid);
    out.Set("pidfd", exec_pidfd);
    return out;
  } catch (...) {
    if (exec_pidfd != -1) close(exec_pidfd);
    throw;
  }
}

}  // namespace

void ResetSignalDispositions() {
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < NSIG; s++) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    sigaction(s, &dfl, nullptr);  // EINVAL for libc-reserved RT signals: fine
  }
}

void InitFork(Napi::Env env, Napi::Object exports) {
  exports.Set("fork", Napi::Function::New(env, Fork, "fork"));
}

}  // namespace pd
