/**
 * The service manager as the receiver: a program daemonize() did not detach
 * because systemd runs it reports with sd_notify (READY=1, or STATUS=/ERRNO=).
 */
import { notifyError, ready as notifyReady } from '../systemd';

/**
 * The address of a program that daemonize() did not detach because a
 * service manager runs it: report() then tells the service manager
 * (`READY=1`, or `STATUS=`/`ERRNO=` for a failure) over `$NOTIFY_SOCKET`.
 */
export const SERVICE_MANAGER_ADDRESS = 'sd_notify:';

export /** sd_notify: false from the systemd helpers means NOTIFY_SOCKET is unset or nobody took it. */
function reportToServiceManager(status: Error | string | null): 'delivered' | 'gone' {
  const sent = status === null ? notifyReady() : notifyError(status);
  return sent ? 'delivered' : 'gone';
}

