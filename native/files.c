/* File-level calls Node's fs lacks: flock(2) for PID files, dup2(2) for
 * reopening log files over stdout/stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "pd.h"

/* flock(fd, op): op is "ex", "sh" or "un", always non-blocking (a PID file
 * lock is a question, never a wait). Returns true when taken, false when
 * another open file description holds a conflicting lock (EWOULDBLOCK). */
static napi_value flock_binding(napi_env env, napi_callback_info info) {
  napi_value args[2];
  int32_t fd;
  char* op;
  if (!pd_args(env, info, 2, args, NULL)) return NULL;
  if (!pd_arg_int(env, args[0], "fd", 0, INT32_MAX, &fd)) return NULL;
  if (!pd_arg_string(env, args[1], "operation", &op)) return NULL;
  int how;
  if (strcmp(op, "ex") == 0) how = LOCK_EX | LOCK_NB;
  else if (strcmp(op, "sh") == 0) how = LOCK_SH | LOCK_NB;
  else if (strcmp(op, "un") == 0) how = LOCK_UN;
  else how = -1;
  free(op);
  if (how == -1) return pd_throw_arg_value(env, "operation", "must be 'ex', 'sh' or 'un'");
  int r;
  do {
    r = flock(fd, how);
  } while (r == -1 && errno == EINTR);
  if (r == -1) {
    if (errno == EWOULDBLOCK) return pd_bool(env, false);
    return pd_throw_errno(env, errno, "flock", NULL);
  }
  return pd_bool(env, true);
}

/* dup2(from, to) for to in 1..2 only: replacing stdio is what log reopening
 * needs, and nothing else in this library should replace an fd it does not
 * own. The result is not close-on-exec (stdio is inherited by design). */
static napi_value dup2_stdio(napi_env env, napi_callback_info info) {
  napi_value args[2];
  int32_t from, to;
  if (!pd_args(env, info, 2, args, NULL)) return NULL;
  if (!pd_arg_int(env, args[0], "fd", 0, INT32_MAX, &from)) return NULL;
  if (!pd_arg_int(env, args[1], "target", 1, 2, &to)) return NULL;
  int r;
  do {
    r = dup2(from, to);
  } while (r == -1 && (errno == EINTR || errno == EBUSY));
  if (r == -1) return pd_throw_errno(env, errno, "dup2", NULL);
  return pd_undefined(env);
}

bool pd_init_files(napi_env env, napi_value exports) {
  return pd_export_function(env, exports, "flock", flock_binding) &&
         pd_export_function(env, exports, "dup2Stdio", dup2_stdio);
}
