/* init(): the part of the addon that hands PID 1 over to the init image.
 *
 * A Node process is multi-threaded (libuv's threadpool, V8's platform
 * workers) and most of those threads leave every signal unblocked. An init
 * that waits with sigwaitinfo() in such a process loses signals: a
 * process-directed signal goes to any thread that does not block it, and for
 * PID 1 with no handler the kernel then drops it. It would also keep Node's
 * whole footprint (tens of MiB) alive for a loop of a few syscalls.
 *
 * So PID 1 replaces itself (execve keeps the PID, the children and every
 * pending signal, and ends all other threads) with the init image: the
 * dynamic loader running native/init-loop.c, a plain-C shared object built
 * next to this addon (posix_daemon_init.so). Neither node nor libstdc++ is
 * mapped in it. The loop then starts the program (the same node command
 * line again) as its child, in its own process group.
 *
 *   PID 1 (node) --execve--> PID 1 (ld.so posix_daemon_init.so: init loop)
 *                                 `-- fork+execve --> the program (node ...)
 *
 * No LD_PRELOAD is involved (the image is the loader's program argument),
 * so the package may live in a path with spaces or colons.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <link.h>
#include <sys/auxv.h>
#endif
#ifdef __GLIBC__
#include <gnu/libc-version.h>
#endif

#include "pd.h"

#ifdef __linux__

/* The dynamic loader of this process (node's PT_INTERP), from the auxiliary
 * vector and the loader's own list of objects: no /proc needed. NULL for a
 * statically linked node. */
typedef struct {
  uintptr_t base;
  const char* name;
} find_base;

static int match_base(struct dl_phdr_info* info, size_t size, void* data) {
  (void)size;
  find_base* f = data;
  if (info->dlpi_addr != f->base || info->dlpi_name == NULL || info->dlpi_name[0] != '/') return 0;
  f->name = info->dlpi_name;
  return 1;
}

/* The name stays valid: the loader is never unloaded, and neither is its
 * entry in its own list of objects. */
static const char* interpreter(void) {
  find_base f = {(uintptr_t)getauxval(AT_BASE), NULL};
  if (f.base == 0) return NULL;
  dl_iterate_phdr(match_base, &f);
  return f.name;
}

/* initRuntime(): { interpreter, glibc } (each null when there is none):
 * what the init image needs from the running node. */
static napi_value init_runtime(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  PD_CHECK(env, napi_create_object(env, &out));
  const char* interp = interpreter();
  if (!pd_set(env, out, "interpreter", interp == NULL ? pd_null(env) : pd_string(env, interp))) return NULL;
#ifdef __GLIBC__
  if (!pd_set(env, out, "glibc", pd_string(env, gnu_get_libc_version()))) return NULL;
#else
  if (!pd_set(env, out, "glibc", pd_null(env))) return NULL;
#endif
  return out;
}

/* becomeInit(file, argv, env): execve into the init image. Returns only by
 * throwing, with nothing changed, when execve fails. */
static napi_value become_init(napi_env env, napi_callback_info info) {
  napi_value args[3];
  char* file = NULL;
  pd_strv argv = {NULL, 0};
  pd_strv envp = {NULL, 0};
  if (!pd_args(env, info, 3, args, NULL)) return NULL;
  if (!pd_arg_string(env, args[0], "file", &file)) goto out;
  if (!pd_arg_string_array(env, args[1], "argv", &argv)) goto out;
  if (!pd_arg_string_array(env, args[2], "env", &envp)) goto out;
  /* [loader, image, args...] for the shared-object image; [image, args...]
   * for the static one (prebuilds), `posix-daemon-init --help` among them. */
  if (argv.n < 2) {
    pd_throw_arg_value(env, "argv", "is too short");
    goto out;
  }

  /* Everything blocked from here on and through execve: the new image keeps
   * the mask and every pending signal, so nothing sent to PID 1 from now on
   * is lost. What came before (node's start-up, the program's imports) is
   * plain node as PID 1, which drops a SIGTERM it has no handler for: the
   * posix-daemon-init entry closes that window (README, "In a container"). */
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  /* Stdio back to the mode the process started with (Node may have made a
   * pipe non-blocking). Other threads could observe it only if this process
   * ran JavaScript again, which it does only when execve fails: undone then.
   * Stdio may be close-on-exec (Node marks it so at times): the init image
   * and the program it starts must get it. Both changes are to fds 0-2
   * only, which every spawn inherits anyway. */
  bool was_nonblocking[3];
  int fd_flags[3];
  for (int i = 0; i < 3; i++) {
    int fl = fcntl(i, F_GETFL);
    was_nonblocking[i] = fl != -1 && (fl & O_NONBLOCK) != 0;
    pd_set_nonblocking(i, pd_stdio_was_nonblocking(i));
    fd_flags[i] = fcntl(i, F_GETFD);
    if (fd_flags[i] != -1 && (fd_flags[i] & FD_CLOEXEC)) fcntl(i, F_SETFD, fd_flags[i] & ~FD_CLOEXEC);
  }
  execve(file, argv.v, envp.v);
  int err = errno;
  for (int i = 0; i < 3; i++) {
    pd_set_nonblocking(i, was_nonblocking[i]);
    if (fd_flags[i] != -1) fcntl(i, F_SETFD, fd_flags[i]);
  }
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
  pd_throw_errno(env, err, "execve", file);
out:
  free(file);
  pd_strv_free(&argv);
  pd_strv_free(&envp);
  return NULL;
}

#endif /* __linux__ */

bool pd_init_init(napi_env env, napi_value exports) {
#ifdef __linux__
  return pd_export_function(env, exports, "initRuntime", init_runtime) &&
         pd_export_function(env, exports, "becomeInit", become_init);
#else
  return true;
#endif
}
