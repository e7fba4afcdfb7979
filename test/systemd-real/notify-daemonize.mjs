// Type=notify + daemonize(): a program written for the terminal, unchanged.
// Under systemd daemonize() forks nothing and report() notifies systemd.
// PD_FAIL=1: start-up fails, and report(err) says why.
import { daemonize, report } from 'posix-daemon';

const r = await daemonize({ envKey: 'PD_DAEMON', timeout: 30_000 });
if (r.foreground) {
  console.log(`started, PID ${r.pid}`);
  process.exit(0);
}
console.log(`PD ${JSON.stringify({ event: 'daemon', pid: process.pid, ppid: process.ppid })}`);
if (process.env.PD_FAIL === '1') {
  const err = Object.assign(new Error('cannot open the database: connection refused'), { code: 'ECONNREFUSED' });
  await report(process.env.PD_DAEMON, err);
  process.exit(1);
}
// SIGTERM armed before the report: `systemctl stop` may follow it at once.
const keep = setInterval(() => {}, 1 << 30);
process.once('SIGTERM', () => { clearInterval(keep); process.exit(0); });
await report(process.env.PD_DAEMON);
