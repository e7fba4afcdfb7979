// The restart-signal hold of a new image, from its first instruction.
//
// restartViaExec execs node with the signals the old image was armed for
// (restartOnSignal, a monitor's reloadOn) blocked: a blocked signal stays
// pending across execve(2) instead of meeting the default action (for
// SIGHUP and SIGUSR2: terminate). Node unblocks every signal in its
// PlatformInit, long before the guard's JavaScript can listen (80-240 ms
// measured), so blocking alone only moves the death. This object, preloaded
// (LD_PRELOAD) into that one exec, runs before Node's main: it gives each
// held signal a handler that does nothing, then unblocks them. A pending
// signal is delivered to that handler, which folds it into the restart in
// progress. Node keeps a handler it finds installed (it resets only
// SIG_IGN), and the guard's own listener (guard-hold.ts) replaces it as
// soon as JavaScript runs; when the guard lets go, libuv puts back SIG_DFL.
//
// The environment is put back as it was before the program can see it:
// POSIX_DAEMON_HOLD (the signal numbers) is removed, and LD_PRELOAD loses
// this object (the exec put it first) or goes, so children never load it.
// Plain C, libc only, nothing allocated but what setenv() does: it runs
// single-threaded, before any other constructor of the program.
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void fold(int sig) {
  (void)sig;
}

// "12,1": the signals to hold. Anything else in the list is skipped.
static void hold(const char* list, sigset_t* set) {
  struct sigaction act;
  memset(&act, 0, sizeof(act));
  act.sa_handler = fold;
  act.sa_flags = SA_RESTART;
  sigemptyset(&act.sa_mask);
  const char* p = list;
  while (*p != '\0') {
    char* end;
    long sig = strtol(p, &end, 10);
    if (end == p) break;
    if (sig > 0 && sig < NSIG && sig != SIGKILL && sig != SIGSTOP && sigaction((int)sig, &act, NULL) == 0) {
      sigaddset(set, (int)sig);
    }
    p = *end == ',' ? end + 1 : end;
    if (*end != ',' && *end != '\0') break;
  }
}

// Whether the n bytes at `entry` end with `name`.
static int ends_with(const char* entry, size_t n, const char* name) {
  size_t k = strlen(name);
  return n >= k && memcmp(entry + n - k, name, k) == 0;
}

// Removes the first entry of LD_PRELOAD when it is this object (the exec
// puts it first, before the program's own value, with a space). Its name:
// a local build's, or a prebuild's with its libc (src/autorestart/guard-env.ts
// matches the same three).
static void restore_preload(void) {
  const char* value = getenv("LD_PRELOAD");
  if (value == NULL) return;
  size_t n = strcspn(value, " :");
  if (!ends_with(value, n, "/posix_daemon_hold.so") && !ends_with(value, n, "/posix_daemon_hold.glibc.so") &&
      !ends_with(value, n, "/posix_daemon_hold.musl.so")) {
    return;
  }
  if (value[n] == '\0') {
    unsetenv("LD_PRELOAD");
  } else {
    setenv("LD_PRELOAD", value + n + 1, 1);
  }
}

__attribute__((constructor)) static void pd_hold_start(void) {
  const char* list = getenv("POSIX_DAEMON_HOLD");
  if (list != NULL) {
    sigset_t set;
    sigemptyset(&set);
    hold(list, &set);
    unsetenv("POSIX_DAEMON_HOLD");
    // Handled now: what arrived since the exec is delivered, and folded.
    sigprocmask(SIG_UNBLOCK, &set, NULL);
  }
  restore_preload();
}
