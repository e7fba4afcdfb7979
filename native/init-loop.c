// The init image: what PID 1 runs once init() (or the posix-daemon-init
// entry) has replaced node. Plain C on purpose: this object links libc and
// nothing else, so the PID 1 image is the dynamic loader, libc and these few
// pages (no node, no libstdc++, no JavaScript engine; see bench/init-memory).
//
// It is built as a shared object with an entry point and a PT_INTERP, so it
// runs either way:
//   /lib64/ld-linux-x86-64.so.2 posix_daemon_init.so [options] -- program...
//   posix_daemon_init.so [options] -- program...       (when executable)
// init() uses the first form (the dynamic loader of the running node; no
// LD_PRELOAD, so any path works, spaces and colons included). The second
// form lets a container start in this image from its first instruction, so
// no signal sent to the container is ever dropped (node as PID 1 drops a
// SIGTERM it has no handler for).
//
// The loop is modelled on tini: every signal but the synchronous faults
// blocked, sigtimedwait(), no handlers; forward every other signal to the
// program (optionally rewritten, optionally to its whole process group);
// reap every child; when the program ends, signal what is left, reap it and
// exit with the program's status (128+N for a signal, optionally remapped).
//
// Options (each its own argument):
//   -t MS     once the program has exited, what is left gets SIGTERM, then
//             SIGKILL after MS milliseconds (default 5000)
//   -s        outside PID 1: register as a child subreaper (tini -s)
//   -g        forward signals to the program's process group (tini -g)
//   -e N[:M]  exit with M (default 0) when the program's status is N (tini -e)
//   -r S:R    forward signal R when S arrives; R 0 drops S (dumb-init -r)
//   -w        no warning when neither PID 1 nor a subreaper
//   -h, --help  print the usage and exit 0
//   --        end of options; the program and its arguments follow
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

// The loader this object names when it is executed directly. The glibc
// loader's path is fixed per architecture; elsewhere there is no PT_INTERP
// and only the explicit `ld.so posix_daemon_init.so` form works.
#if defined(__x86_64__)
#define PD_INTERP "/lib64/ld-linux-x86-64.so.2"
#elif defined(__aarch64__)
#define PD_INTERP "/lib/ld-linux-aarch64.so.1"
#endif
#if defined(PD_INTERP) && !defined(PD_INIT_STATIC)
__attribute__((used, section(".interp"))) const char pd_init_interp[] = PD_INTERP;
#endif

extern char** environ;

static void put(const char* s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(2, s, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static void say_part(const char* a, const char* b, const char* c) {
  put("posix-daemon init: ");
  put(a);
  put(b);
  put(c);
}

static void say(const char* a, const char* b, const char* c) {
  say_part(a, b, c);
  put("\n");
}

static int is_synchronous(int sig) {
  return sig == SIGFPE || sig == SIGILL || sig == SIGSEGV || sig == SIGBUS || sig == SIGABRT || sig == SIGTRAP ||
         sig == SIGSYS;
}

static int is_job_control(int sig) { return sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU; }

static const char usage[] =
    "Usage: posix-daemon-init [options] [--] program [args...]\n"
    "\n"
    "Runs program as its child: forwards signals to it, reaps every process,\n"
    "and exits with the program's status (128+N after signal N).\n"
    "\n"
    "Options:\n"
    "  -t MS      once the program has exited, what is left gets SIGTERM,\n"
    "             then SIGKILL after MS milliseconds (default 5000)\n"
    "  -s         outside PID 1: become a child subreaper (tini -s)\n"
    "  -g         forward signals to the program's process group (tini -g)\n"
    "  -e N[:M]   exit with M (default 0) when the program's status is N\n"
    "  -r S:R     forward signal R when S arrives; R 0 drops S (dumb-init -r);\n"
    "             numbers, or names with posix-daemon-init (-r TERM:QUIT)\n"
    "  -w         no warning when neither PID 1 nor a subreaper\n"
    "  -h, --help print this text and exit\n"
    "  --image    (posix-daemon-init only) print the path of the init image\n";

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

// A decimal in [min, max]; -1 when it is not one.
static long parse_num(const char* s, const char** end, long min, long max) {
  long v = 0;
  const char* p = s;
  if (*p < '0' || *p > '9') return -1;
  while (*p >= '0' && *p <= '9') {
    v = v * 10 + (*p - '0');
    if (v > max) return -1;
    p++;
  }
  if (v < min) return -1;
  *end = p;
  return v;
}

static char* fmt_num(char* buf_end, long v) {
  char* p = buf_end;
  *--p = '\0';
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  return p;
}

struct config {
  int64_t shutdown_ms;
  int subreaper;
  int group;
  int quiet;
  int rewrite[_NSIG];     // signal to forward for each received one (0: drop)
  int remap[256];         // exit status to exit with
  char** argv;
};

static int parse_args(int argc, char** argv, struct config* c) {
  c->shutdown_ms = 5000;
  for (int s = 0; s < _NSIG; s++) c->rewrite[s] = s;
  for (int i = 0; i < 256; i++) c->remap[i] = i;
  int i = 1;
  for (; i < argc; i++) {
    const char* a = argv[i];
    const char* end;
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (a[0] != '-') break;
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      size_t n = strlen(usage);
      const char* p = usage;
      while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        p += w;
        n -= (size_t)w;
      }
      return 1;
    }
    if (strcmp(a, "-s") == 0) {
      c->subreaper = 1;
    } else if (strcmp(a, "-g") == 0) {
      c->group = 1;
    } else if (strcmp(a, "-w") == 0) {
      c->quiet = 1;
    } else if (strcmp(a, "-t") == 0 && i + 1 < argc) {
      long v = parse_num(argv[++i], &end, 0, 2147483647L);
      if (v < 0 || *end != '\0') return say("-t wants milliseconds: ", argv[i], ""), -1;
      c->shutdown_ms = v;
    } else if (strcmp(a, "-e") == 0 && i + 1 < argc) {
      long from = parse_num(argv[++i], &end, 0, 255), to = 0;
      if (from >= 0 && *end == ':') to = parse_num(end + 1, &end, 0, 255);
      if (from < 0 || to < 0 || *end != '\0') return say("-e wants CODE or CODE:NEWCODE (0-255): ", argv[i], ""), -1;
      c->remap[from] = (int)to;
    } else if (strcmp(a, "-r") == 0 && i + 1 < argc) {
      long from = parse_num(argv[++i], &end, 1, _NSIG - 1), to = -1;
      if (from > 0 && *end == ':') to = parse_num(end + 1, &end, 0, _NSIG - 1);
      if (from < 0 || to < 0 || *end != '\0') return say("-r wants SIGNUM:SIGNUM (0 drops): ", argv[i], ""), -1;
      // The init never forwards these (it cannot even receive the faults
      // through sigwaitinfo, nor ever catch SIGKILL/SIGSTOP): a rewrite of
      // one would do nothing.
      if (is_synchronous((int)from) || from == SIGCHLD || from == SIGKILL || from == SIGSTOP) {
        return say("-r: signal ", argv[i], " is never forwarded (SIGCHLD, SIGKILL, SIGSTOP, synchronous faults)"), -1;
      }
      c->rewrite[from] = (int)to;
    } else {
      return say("unknown option ", a, " (usage: [-t MS] [-s] [-g] [-e N[:M]] [-r S:R] [-w] [--] program [args...]; -h for help)"), -1;
    }
  }
  if (i >= argc) return say("no program to run", "", ""), -1;
  c->argv = argv + i;
  return 0;
}

// Signals every direct child (orphans adopted as a subreaper included),
// from /proc/self/task/<pid>/children. Without /proc this reaches nothing;
// outside PID 1 the program's group is signalled besides (see signal_rest).
static void signal_children(int sig) {
  char path[64] = "/proc/self/task/";
  char num[24];
  strcat(path, fmt_num(num + sizeof(num), (long)getpid()));
  strcat(path, "/children");
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
        kill((pid_t)cur, sig);
        cur = -1;
      }
    }
  }
  if (cur > 0) kill((pid_t)cur, sig);
  close(fd);
}

// "What is left" once the program has ended. As PID 1 of a namespace that
// is every other process in it (kill(-1) never reaches PID 1 itself).
// Outside PID 1 kill(-1) would reach the whole machine: it is our own
// children (as a subreaper, the orphans of the program's tree come to us)
// and, only while the program's zombie is still unreaped (`group_held`),
// its process group. Once the leader is reaped its group ID may name a
// stranger's group, so it is never signalled again; what was in the group
// is reached anyway, as the children of our children die and come to us.
static void signal_rest(pid_t program, int group_held, int sig) {
  if (getpid() == 1) {
    kill(-1, sig);
    return;
  }
  if (group_held) kill(-program, sig);
  signal_children(sig);
}

// The exit status of a zombie, as waitid() reports it.
static int status_code(const siginfo_t* si) {
  if (si->si_code == CLD_EXITED) return si->si_status & 0xff;
  if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED) return 128 + si->si_status;
  return 1;
}

static pid_t start_program(struct config* c) {
  char num[24];
  // The program's marker: the PID of the init it runs under.
  setenv("POSIX_DAEMON_INIT", fmt_num(num + sizeof(num), (long)getpid()), 1);
  pid_t pid = fork();
  if (pid != 0) return pid;
  // Own process group, so "the program and what it started" is one kill
  // target; and the terminal's foreground group when there is one (as
  // tini does), so Ctrl-C and reads from the terminal reach the program.
  // SIGTTOU is still blocked here, which tcsetpgrp from a background group
  // needs.
  setpgid(0, 0);
  if (isatty(0)) tcsetpgrp(0, getpid());
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  execvp(c->argv[0], c->argv);
  int err = errno;
  say_part("cannot run ", c->argv[0], ": ");
  put(strerror(err));
  put("\n");
  _exit(err == ENOENT ? 127 : 126);
}

static void init_main(int argc, char** argv) {
  struct config c;
  memset(&c, 0, sizeof(c));
  int parsed = parse_args(argc, argv, &c);
  if (parsed != 0) _exit(parsed > 0 ? 0 : 2);
  prctl(PR_SET_NAME, "node-init", 0, 0, 0);

  // The mask may have come blocked through execve (init() blocks everything
  // before it); make it exactly "everything but the synchronous faults", so
  // no signal is ever delivered, only queued for sigtimedwait().
  sigset_t waitset;
  sigfillset(&waitset);
  for (int s = 1; s < _NSIG; s++) {
    if (is_synchronous(s)) sigdelset(&waitset, s);
  }
  sigprocmask(SIG_SETMASK, &waitset, NULL);
  // Dispositions: SIG_DFL for all, so the program starts with none ignored
  // (SIGPIPE and friends may have come ignored through execve).
  struct sigaction dfl;
  memset(&dfl, 0, sizeof(dfl));
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < _NSIG; s++) {
    if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL);
  }

  const int pid1 = getpid() == 1;
  if (!pid1) {
    if (c.subreaper && prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
      say("cannot become a child subreaper: ", strerror(errno), "");
    }
    int reaper = 0;
    prctl(PR_GET_CHILD_SUBREAPER, &reaper, 0, 0, 0);
    if (!reaper && !c.quiet) {
      say("not PID 1 and not a child subreaper: orphans of the program will not be reaped by this init "
          "(run it as PID 1, or with -s / init({ subreaper: true }))", "", "");
    }
  }

  pid_t program = start_program(&c);
  if (program == -1) {
    say("fork: ", strerror(errno), "");
    _exit(127);
  }
  setpgid(program, program);  // both sides, as shells do: no race with kill(-pgid)

  int program_done = 0;
  int program_code = 0;
  int64_t deadline = -1;
  int killing = 0;
  for (;;) {
    siginfo_t info;
    int sig;
    if (deadline < 0) {
      sig = sigwaitinfo(&waitset, &info);
    } else {
      int64_t left = deadline - now_ms();
      if (left < 0) left = 0;
      struct timespec ts = {(time_t)(left / 1000), (long)((left % 1000) * 1000000)};
      sig = sigtimedwait(&waitset, &info, &ts);
    }
    if (sig == -1) {
      if (errno == EAGAIN && deadline >= 0) {
        // Shutdown timeout: what did not stop on SIGTERM gets SIGKILL.
        deadline = -1;
        killing = 1;
      }
    } else if (sig == SIGCHLD) {
      // A child changed state: see below.
    } else if (!program_done) {
      // The program is alive or an unreaped zombie: its group is its own.
      int to = c.rewrite[sig];
      if (to != 0) kill(c.group ? -program : program, to);
      // A terminal stop (SIGTSTP/TTIN/TTOU) is passed on like any other;
      // the init stops itself when the program actually stops (below).
      // One rewritten to something else (or dropped) stops no program, so
      // the init stops itself now, as dumb-init does for every received
      // job-control signal (its test_default_rewrites_can_be_overriden):
      // the shell still sees its job stop. SIGCONT resumes the init, which
      // forwards it. (PID 1 cannot be stopped from inside its namespace.)
      if (is_job_control(sig) && !is_job_control(to) && !pid1) kill(getpid(), SIGSTOP);
    }

    if (!program_done) {
      siginfo_t si;
      memset(&si, 0, sizeof(si));
      if (waitid(P_PID, (id_t)program, &si, WSTOPPED | WNOHANG) == 0 && si.si_pid == program &&
          si.si_code == CLD_STOPPED && !pid1 &&
          (si.si_status == SIGTSTP || si.si_status == SIGTTIN || si.si_status == SIGTTOU)) {
        // Job control, as dumb-init does it: the program stopped on a
        // terminal signal (Ctrl-Z, or one forwarded above), so the init
        // stops too and a shell sees its job stopped; once continued, the
        // program gets the terminal back and SIGCONT. (PID 1 cannot be
        // stopped from inside its namespace.)
        kill(getpid(), SIGSTOP);
        if (isatty(0) && tcgetpgrp(0) == getpgrp()) tcsetpgrp(0, program);
        kill(-program, SIGCONT);
      }
    }
    // Past the deadline, every wake-up (a child died) sweeps again: an
    // orphan re-parented to us after the last sweep is killed too.
    if (killing) signal_rest(program, 0, SIGKILL);
    // Reap on every wake-up: SIGCHLDs coalesce, one may stand for many.
    // Each zombie is looked at first (WNOWAIT) and reaped after, so the
    // program's group is signalled while its zombie still holds the ID.
    for (;;) {
      siginfo_t si;
      memset(&si, 0, sizeof(si));
      if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == -1) {
        if (errno == EINTR) continue;
        if (errno == ECHILD && program_done) _exit(program_code);
        break;
      }
      if (si.si_pid == 0) break;
      if (si.si_pid == program && !program_done) {
        program_done = 1;
        program_code = c.remap[status_code(&si) & 0xff];
        signal_rest(program, 1, SIGTERM);
        deadline = now_ms() + c.shutdown_ms;
      }
      int status;
      while (waitpid(si.si_pid, &status, WNOHANG) == -1 && errno == EINTR) {
      }
    }
  }
}

#ifdef PD_INIT_STATIC
// The static image (scripts/prebuild-all.mjs): an ordinary executable
// linked with musl's libc.a, so there is no loader and no libc to find in
// the image it runs in (glibc, musl, distroless or a busybox-static rootfs).
int main(int argc, char** argv) {
  init_main(argc, argv);
  return 127;
}
#else
// The entry point. The stack holds argc, argv[], NULL, envp[] as the kernel
// (or the dynamic loader, run as `ld.so this.so ...`) left it; the loader
// has already relocated this object and initialised libc.
__attribute__((used, noreturn)) void pd_init_main(long* sp) {
  int argc = (int)sp[0];
  char** argv = (char**)(sp + 1);
  init_main(argc, argv);
  _exit(127);
}

#if defined(__x86_64__)
__asm__(
    ".text\n"
    ".globl pd_init_start\n"
    ".type pd_init_start,@function\n"
    "pd_init_start:\n"
    "  xor %ebp, %ebp\n"
    "  mov %rsp, %rdi\n"
    "  and $-16, %rsp\n"
    "  call pd_init_main\n"
    "  hlt\n");
#elif defined(__aarch64__)
__asm__(
    ".text\n"
    ".globl pd_init_start\n"
    ".type pd_init_start,%function\n"
    "pd_init_start:\n"
    "  mov x29, #0\n"
    "  mov x30, #0\n"
    "  mov x0, sp\n"
    "  bl pd_init_main\n"
    "  brk #0\n");
#else
#error "posix_daemon_init: no entry point for this architecture"
#endif
#endif  // PD_INIT_STATIC
