// The many-workers monitor as a unit (issue 18, posix-daemon/monitor):
// the main process owns the socket and runs 2 workers; SIGHUP (systemctl
// reload) rolls them; the monitor tells systemd READY/RELOADING.
import http from 'node:http';
import { report } from 'posix-daemon';
import { selfMonitor } from 'posix-daemon/monitor';
import { listen } from 'posix-daemon/autorestart';

await selfMonitor('PD_WORKER', {
  workers: 2,
  sockets: [{ name: 'web', port: 8095, host: '127.0.0.1' }],
  reloadOn: 'SIGHUP',
});
// A worker from here on (in the monitor selfMonitor settles only when it stops).
if (!process.env.PD_WORKER) process.exit(0);
const server = http.createServer((_req, res) => res.end(`pid ${process.pid}\n`));
await listen(server, { name: 'web' });
await report(process.env.PD_WORKER);
process.once('SIGTERM', () => server.close(() => process.exit(0)));
process.once('SIGINT', () => server.close(() => process.exit(0)));
