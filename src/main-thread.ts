/**
 * Whether this is the main thread, asked when a call needs to know. Loading
 * `worker_threads` costs about 5 ms of every start (measured, Node 20): a
 * module-level import would put it on the path of every image a restart
 * starts, and most never ask.
 */
export function isMainThread(): boolean {
  return (require('node:worker_threads') as typeof import('node:worker_threads')).isMainThread;
}
