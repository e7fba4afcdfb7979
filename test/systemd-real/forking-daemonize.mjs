// Type=forking + PIDFile= + daemonize({ pidFile, detach: true }): the
// classic double-forking daemon. The foreground exits once the daemon is
// ready; the daemon writes the PID file systemd reads.
import { daemonize, report } from 'posix-daemon';

const r = await daemonize({ envKey: 'PD_DAEMON', pidFile: '/run/pd-forking.pid', detach: true, timeout: 30_000 });
if (r.foreground) {
  console.log(`PD ${JSON.stringify({ event: 'foreground', pid: process.pid, daemon: r.pid })}`);
  process.exit(0);
}
console.log(`PD ${JSON.stringify({ event: 'daemon', pid: process.pid, ppid: process.ppid })}`);
// SIGTERM armed before the report: `systemctl stop` may follow it at once.
const keep = setInterval(() => {}, 1 << 30);
process.once('SIGTERM', () => { clearInterval(keep); process.exit(0); });
await report(process.env.PD_DAEMON);
