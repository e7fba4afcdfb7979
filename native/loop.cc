// LoopHandle: the libuv handles of the addon, and their end with the
// environment that owns them (see common.h).
//
// Why an async cleanup hook: when a worker's environment is freed, Node runs
// its cleanup hooks, then frees the environment and unloads the addons only
// it loaded. A handle closed from a plain cleanup hook gets its close
// callback on a later loop turn, after the unload: SIGSEGV. An async hook is
// waited for: Node keeps turning the loop until the hook says it is done,
// which is when the last close callback of this environment has run. The
// addon is then never pinned in memory (no RTLD_NODELETE): nothing of it
// runs after that point.
#include <errno.h>
#include <unistd.h>

#include <set>
#include <vector>

#include "common.h"

namespace pd {

struct LoopHandle::State {
  uv_loop_t* loop = nullptr;
  std::set<LoopHandle*> open;
  size_t closing = 0;  // uv_close()d, close callback still to come
  // Set while the environment ends and closes are pending: removed (the
  // teardown goes on) by the last close callback.
  napi_async_cleanup_hook_handle hook = nullptr;
  // The instance data was finalized while closes were pending (not expected:
  // the hook holds the environment until they are done): the last close
  // callback frees the State then.
  bool orphaned = false;

  void CloseDone() {
    if (--closing != 0) return;
    if (hook != nullptr) {
      napi_async_cleanup_hook_handle h = hook;
      hook = nullptr;
      napi_remove_async_cleanup_hook(h);
    }
    if (orphaned) delete this;
  }
};

LoopHandle* LoopHandle::Open(Napi::Env env, int fd, int signum, int events, Callback on_event, void* owner) {
  State* state = env.GetInstanceData<State>();
  const bool poll = fd != -1;
  LoopHandle* h = nullptr;
  try {
    if (state == nullptr || state->loop == nullptr) throw Napi::Error::New(env, "no event loop");
    h = new LoopHandle(state, fd, poll, on_event, owner);
    state->open.insert(h);
  } catch (...) {
    delete h;
    if (fd != -1) close(fd);
    throw;
  }
  h->uv_.handle.data = h;
  int r = poll ? uv_poll_init(state->loop, &h->uv_.poll, fd) : uv_signal_init(state->loop, &h->uv_.signal);
  if (r != 0) {
    // Not registered with the loop: ours to free now.
    state->open.erase(h);
    delete h;
    if (fd != -1) close(fd);
    throw ErrnoError(env, -r, poll ? "uv_poll_init" : "uv_signal_init");
  }
  r = poll ? uv_poll_start(&h->uv_.poll, events, OnPoll) : uv_signal_start(&h->uv_.signal, OnSignal, signum);
  if (r != 0) {
    h->Close();  // registered: only libuv's close callback may free it
    throw ErrnoError(env, -r, poll ? "uv_poll_start" : "uv_signal_start");
  }
  return h;
}

LoopHandle* LoopHandle::Poll(Napi::Env env, int fd, Callback on_event, void* owner) {
  return Open(env, fd, 0, UV_READABLE, on_event, owner);
}

LoopHandle* LoopHandle::PollWritable(Napi::Env env, int fd, Callback on_event, void* owner) {
  return Open(env, fd, 0, UV_WRITABLE, on_event, owner);
}

LoopHandle* LoopHandle::Signal(Napi::Env env, int signum, Callback on_event, void* owner) {
  return Open(env, -1, signum, 0, on_event, owner);
}

void LoopHandle::OnPoll(uv_poll_t* p, int status, int events) {
  // An error status (the fd went bad) is reported as an event too: the
  // owner checks what happened with a syscall of its own.
  auto* h = static_cast<LoopHandle*>(p->data);
  if (h->owner_ != nullptr) h->on_event_(h->owner_);
}

void LoopHandle::OnSignal(uv_signal_t* s, int signum) {
  auto* h = static_cast<LoopHandle*>(s->data);
  if (h->owner_ != nullptr) h->on_event_(h->owner_);
}

void LoopHandle::Stop() {
  if (poll_) uv_poll_stop(&uv_.poll);
  else uv_signal_stop(&uv_.signal);
}

void LoopHandle::SetRef(bool on) {
  if (on) uv_ref(handle());
  else uv_unref(handle());
}

void LoopHandle::Close() {
  owner_ = nullptr;
  state_->open.erase(this);
  state_->closing++;
  uv_close(handle(), Closed);
}

void LoopHandle::Closed(uv_handle_t* uh) {
  auto* h = static_cast<LoopHandle*>(uh->data);
  State* state = h->state_;
  if (h->fd_ != -1) close(h->fd_);
  delete h;
  state->CloseDone();
}

// The environment ends: every handle still open is closed (its owner told
// first, so it forgets the pointer), and the teardown waits for the close
// callbacks. A C callback: nothing may be thrown out of it.
void LoopHandle::TearDown(napi_async_cleanup_hook_handle hook, void* arg) {
  auto* state = static_cast<State*>(arg);
  // No copy of the set (an allocation that could fail and leave every
  // handle open): Close() takes each out of it, so this loop ends.
  while (!state->open.empty()) {
    LoopHandle* h = *state->open.begin();
    if (h->on_teardown_ != nullptr && h->owner_ != nullptr) {
      try {
        h->on_teardown_(h->owner_);
      } catch (...) {
      }
    }
    if (state->open.count(h) != 0) h->Close();  // unless its owner closed it
  }
  if (state->closing == 0) {
    napi_remove_async_cleanup_hook(hook);
  } else {
    state->hook = hook;
  }
}

void InitLoop(Napi::Env env) {
  using State = LoopHandle::State;
  auto* state = new State();
  if (napi_get_uv_event_loop(env, &state->loop) != napi_ok) state->loop = nullptr;
  napi_status s = napi_set_instance_data(
      env, state,
      [](napi_env, void* data, void*) {
        auto* st = static_cast<State*>(data);
        if (st->closing == 0) delete st;
        else st->orphaned = true;
      },
      nullptr);
  if (s != napi_ok) {
    delete state;
    throw Napi::Error::New(env, "cannot set the addon's instance data");
  }
  napi_async_cleanup_hook_handle hook = nullptr;
  if (napi_add_async_cleanup_hook(env, LoopHandle::TearDown, state, &hook) != napi_ok) {
    throw Napi::Error::New(env, "cannot add the addon's cleanup hook");
  }
}

}  // namespace pd
