/**
 * posix-daemon: double-fork daemons with readiness reports. The raw process
 * calls live in `posix-daemon/posix`, the readiness channel in
 * `posix-daemon/initstatus`.
 */
export { daemonize } from './daemon';
export type { DaemonizeOptions, DaemonizeResult, ReadyFunc } from './daemon';
export { receiver, report } from './initstatus';
export type { Receiver, ReceiverOptions } from './initstatus';
export { lockPidFile, readPidFile, stopDaemon, heldPidFileFds, lockPidFileForLaunch, adoptPidFile, PIDFILE_ENV } from './pidfile';
export type { PidFileLock, LaunchPidFile, StopDaemonOptions, StopDaemonResult } from './pidfile';
export { openProcess, ProcessHandle } from './process-handle';
export { openLogFile, logFilesEnv, adoptLogFiles, reopenLogs, reopenLogsOn, LOGS_ENV } from './logs';
export type { LogFiles } from './logs';
