// init(): a proper PID 1 for a Node program, without a separate binary.
//
// A Node process is multi-threaded (libuv's threadpool, V8's platform
// workers) and most of those threads leave every signal unblocked. An init
// that waits with sigwaitinfo() in such a process loses signals: a
// process-directed signal goes to any thread that does not block it, and for
// PID 1 with no handler the kernel then drops it. It would also keep Node's
// whole footprint (tens of MiB) alive for a loop of a few syscalls.
//
// So PID 1 replaces itself (execve keeps the PID, the children and every
// pending signal, and ends all other threads) with a fresh image that is
// nothing but the dynamic loader, process.execPath (never started: only
// mapped and relocated) and this addon, preloaded. The addon's constructor
// below recognises that image, runs the init loop and never returns, so no
// JavaScript engine ever starts in it. The loop then starts the program (the
// same node command line again) as its child, in its own process group.
//
//   PID 1 (node) --execve--> PID 1 (ld.so node, LD_PRELOAD=addon: init loop)
//                                 `-- fork+execve --> the program (node ...)
//
// The loop is modelled on tini: every signal blocked, sigtimedwait(), no
// handlers; forward the usual signals to the program; reap every child
// (orphans included); when the program ends, signal what is left, reap it,
// exit with the program's status (128+N for a signal).
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <elf.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#endif

#include <cstdio>
#include <cstdlib>

#include "common.h"

namespace pd {
namespace {

// argv[1] of the init image. Node itself rejects it as a bad option, so no
// node process that runs JavaScript (the only kind that loads this addon
// normally) can have it there.
constexpr const char* kInitArg = "--posix-daemon-init";
constexpr const char* kSpecEnv = "POSIX_DAEMON_INIT_IMAGE";
constexpr const char* kSavedPreloadEnv = "POSIX_DAEMON_INIT_LD_PRELOAD";

#ifdef __linux__

const int kForwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGTSTP};

bool IsForwarded(int sig) {
  for (int s : kForwarded) {
    if (s == sig) return true;
  }
  return false;
}

bool IsSynchronous(int sig) {
  return sig == SIGFPE || sig == SIGILL || sig == SIGSEGV || sig == SIGBUS || sig == SIGABRT ||
         sig == SIGTRAP || sig == SIGSYS;
}

void WriteStderr(const char* a, const char* b = "", const char* c = "") {
  const char* parts[] = {"posix-daemon init: ", a, b, c, "\n"};
  for (const char* p : parts) {
    size_t n = strlen(p);
    while (n > 0) {
      ssize_t w = write(2, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return;
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
}

bool SingleThreaded() {
  int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd == -1) return false;
  char buf[4096];
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* t = strstr(buf, "\nThreads:");
  if (t == nullptr) return false;
  t += 9;
  while (*t == ' ' || *t == '\t') t++;
  return t[0] == '1' && t[1] == '\n';
}

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Signals every direct child (orphans adopted as a subreaper included).
// /proc/self/task/<pid>/children lists them; read in chunks, numbers may
// straddle a chunk boundary.
void SignalChildren(int sig) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/self/task/%d/children", static_cast<int>(getpid()));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) return;
  char buf[512];
  long cur = -1;
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; i++) {
      if (buf[i] >= '0' && buf[i] <= '9') {
        cur = (cur < 0 ? 0 : cur * 10) + (buf[i] - '0');
      } else if (cur > 0) {
        kill(static_cast<pid_t>(cur), sig);
        cur = -1;
      }
    }
  }
  if (cur > 0) kill(static_cast<pid_t>(cur), sig);
  close(fd);
}

// "What is left" once the program has ended. As PID 1 of a namespace that
// is every other process in it (kill(-1) never reaches PID 1 itself). With
// `force` outside a namespace, kill(-1) would reach the whole machine, so
// it is the program's process group plus our own children (we are a
// subreaper, so orphans of the program's tree are re-parented to us).
void SignalRest(pid_t program_pgid, int sig) {
  if (getpid() == 1) {
    kill(-1, sig);
    return;
  }
  kill(-program_pgid, sig);
  SignalChildren(sig);
}

int StatusToCode(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// The init image maps process.execPath only so the dynamic loader has a
// program to load; none of node's code or data is ever used. Give its pages
// back: MADV_DONTNEED drops them from this process (relocated pages revert
// to the file's contents, which nothing here reads), so the ~8 MiB the
// loader touched while relocating node leave our RSS and PSS. madvise
// rather than munmap: a stray access refaults instead of crashing PID 1.
int DropMainProgram(struct dl_phdr_info* info, size_t, void* done) {
  if (*static_cast<bool*>(done)) return 1;
  *static_cast<bool*>(done) = true;  // the first entry is the main program
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD) continue;
    uintptr_t start = (info->dlpi_addr + ph.p_vaddr) & ~(page - 1);
    uintptr_t end = (info->dlpi_addr + ph.p_vaddr + ph.p_memsz + page - 1) & ~(page - 1);
    madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
  }
  return 1;
}

[[noreturn]] void RunInit(char** prog_argv, char** prog_envp, int64_t shutdown_timeout_ms) {
  prctl(PR_SET_NAME, "node-init", 0, 0, 0);
  bool done = false;
  dl_iterate_phdr(DropMainProgram, &done);

  // The mask came blocked through execve; make it exactly "everything but
  // the synchronous faults", so no signal is ever delivered, only queued.
  sigset_t waitset;
  sigfillset(&waitset);
  for (int s = 1; s < NSIG; s++) {
    if (IsSynchronous(s)) sigdelset(&waitset, s);
  }
  sigprocmask(SIG_SETMASK, &waitset, nullptr);
  ResetSignalDispositions();  // SIGPIPE and friends may have come ignored

  if (getpid() != 1) prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

  pid_t program = fork();
  if (program == -1) {
    WriteStderr("fork: ", strerror(errno));
    _exit(127);
  }
  if (program == 0) {
    // Own process group, so "the program and what it started" is one kill
    // target; and the terminal's foreground group when there is one (as
    // tini does), so Ctrl-C and reads from the terminal reach the program.
    // SIGTTOU is still blocked here, which tcsetpgrp from a background
    // group needs.
    setpgid(0, 0);
    if (isatty(0)) tcsetpgrp(0, getpid());
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(prog_argv[0], prog_argv, prog_envp);
    WriteStderr("execve ", prog_argv[0], strerror(errno));
    _exit(127);
  }
  setpgid(program, program);  // both sides, as shells do: no race with kill(-pgid)

  bool program_done = false;
  int program_status = 0;
  int64_t deadline = -1;
  for (;;) {
    siginfo_t info;
    int sig;
    if (deadline < 0) {
      sig = sigwaitinfo(&waitset, &info);
    } else {
      int64_t left = deadline - NowMs();
      if (left < 0) left = 0;
      struct timespec ts = {static_cast<time_t>(left / 1000), static_cast<long>((left % 1000) * 1000000)};
      sig = sigtimedwait(&waitset, &info, &ts);
    }
    if (sig == -1) {
      if (errno == EAGAIN && deadline >= 0) {
        // Shutdown timeout: what did not stop on SIGTERM gets SIGKILL.
        SignalRest(program, SIGKILL);
        deadline = -1;
      }
    } else if (IsForwarded(sig) && !program_done) {
      kill(program, sig);
    }
    // Reap on every wake-up: SIGCHLDs coalesce, one may stand for many.
    for (;;) {
      int status;
      pid_t p = waitpid(-1, &status, WNOHANG);
      if (p == -1 && errno == EINTR) continue;
      if (p == -1 && errno == ECHILD) {
        if (program_done) _exit(StatusToCode(program_status));
        break;
      }
      if (p <= 0) break;
      if (p == program && !program_done) {
        program_done = true;
        program_status = status;
        SignalRest(program, SIGTERM);
        deadline = NowMs() + shutdown_timeout_ms;
      }
    }
  }
}

// Runs while the dynamic loader initialises the init image, before node's
// own main() ever starts; in every other process it returns at once.
// glibc hands constructors (argc, argv, envp), including for LD_PRELOAD
// objects.
__attribute__((constructor)) void MaybeBecomeInitImage(int argc, char** argv, char** envp) {
  const char* spec = getenv(kSpecEnv);
  if (spec == nullptr) return;
  if (argc < 4 || argv == nullptr || strcmp(argv[1], kInitArg) != 0 || strcmp(argv[2], "--") != 0) return;
  if (!SingleThreaded()) return;  // a normal node process: never hijacked

  // spec: "<shutdownTimeoutMs>:<restorePreload 0|1>"
  char* end = nullptr;
  long long timeout = strtoll(spec, &end, 10);
  if (end == spec || *end != ':' || timeout < 0) timeout = 5000;
  bool restore_preload = end != nullptr && *end == ':' && end[1] == '1';

  // The program's environment: ours without the init image's own variables,
  // with the user's LD_PRELOAD (if any) put back.
  size_t n = 0;
  while (envp[n] != nullptr) n++;
  char** prog_envp = static_cast<char**>(calloc(n + 2, sizeof(char*)));
  if (prog_envp == nullptr) _exit(127);
  size_t k = 0;
  const size_t spec_len = strlen(kSpecEnv), saved_len = strlen(kSavedPreloadEnv);
  for (size_t i = 0; i < n; i++) {
    char* e = envp[i];
    if (strncmp(e, "LD_PRELOAD=", 11) == 0) continue;
    if (strncmp(e, kSpecEnv, spec_len) == 0 && e[spec_len] == '=') continue;
    if (strncmp(e, kSavedPreloadEnv, saved_len) == 0 && e[saved_len] == '=') {
      if (restore_preload) prog_envp[k++] = e + saved_len + 1;  // "LD_PRELOAD=..."
      continue;
    }
    prog_envp[k++] = e;
  }
  prog_envp[k] = nullptr;
  RunInit(argv + 3, prog_envp, timeout);
}

// PT_INTERP of the running executable: the dynamic loader to run it with.
std::string Interpreter() {
  int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
  if (fd == -1) return "";
  std::string out;
  ElfW(Ehdr) eh;
  if (pread(fd, &eh, sizeof(eh), 0) == static_cast<ssize_t>(sizeof(eh)) &&
      memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_phentsize == sizeof(ElfW(Phdr))) {
    for (int i = 0; i < eh.e_phnum; i++) {
      ElfW(Phdr) ph;
      if (pread(fd, &ph, sizeof(ph), eh.e_phoff + i * sizeof(ph)) != static_cast<ssize_t>(sizeof(ph))) break;
      if (ph.p_type != PT_INTERP || ph.p_filesz == 0 || ph.p_filesz > 4096) continue;
      std::string s(ph.p_filesz, '\0');
      if (pread(fd, &s[0], ph.p_filesz, ph.p_offset) == static_cast<ssize_t>(ph.p_filesz)) {
        out = s.c_str();
      }
      break;
    }
  }
  close(fd);
  return out;
}

void SetNonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl == -1) return;
  int want = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
  if (want != fl) fcntl(fd, F_SETFL, want);
}

Napi::Value InitInterpreter(const Napi::CallbackInfo& info) {
  std::string s = Interpreter();
  if (s.empty()) return info.Env().Null();
  return Napi::String::New(info.Env(), s);
}

// becomeInit(file, argv, env): execve into the init image. Returns only by
// throwing, with nothing changed, when execve fails.
Napi::Value BecomeInit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string file = CString(info[0], "file");
  CStrings argv(CStringArray(info[1], "argv"));
  CStrings envp(CStringArray(info[2], "env"));
  if (argv.size() < 4) throw ArgValueError(env, "argv", "is too short");

  // Everything blocked from here on and through execve: the new image keeps
  // the mask and every pending signal, so nothing sent to PID 1 from now on
  // is lost. (A signal taken by another thread in the few microseconds
  // before execve is; tini has the same window before its sigprocmask.)
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
  exports.Set("initInterpreter", Napi::Function::New(env, InitInterpreter, "initInterpreter"));
  exports.Set("becomeInit", Napi::Function::New(env, BecomeInit, "becomeInit"));
#endif
}

}  // namespace pd
