// An HTTP server for systemd: socket activation (the socket unit owns the
// port, so restarts and reloads never refuse a connection), readiness,
// the watchdog, and `systemctl reload` as a restart in place (same PID).
// Units: posix-daemon-example.socket and posix-daemon-example.service, next
// to this file; the README's "Running under systemd" has the commands.
// Outside systemd it runs as is: `node server.mjs` binds 127.0.0.1:8080.
import http from 'node:http';
import { listen, restartOnSignal } from 'posix-daemon/autorestart';
import { ready, startWatchdog, stopping } from 'posix-daemon/systemd';

const generation = Number(process.env.EXAMPLE_GENERATION ?? '0');
process.env.EXAMPLE_GENERATION = String(generation + 1); // the next image sees it

const server = http.createServer((_req, res) => {
  res.end(`pid ${process.pid}, generation ${generation}\n`);
});

// The socket systemd passes (FileDescriptorName=web, or any socket bound to
// port 8080), the one the previous image handed over, or a new one.
const { inherited, name } = await listen(server, { name: 'web', port: 8080, host: '127.0.0.1' });
console.log(`generation ${generation}, pid ${process.pid}: serving on "${name}" (${inherited ? 'inherited socket' : 'bound here'})`);

// systemctl reload (Type=notify-reload sends SIGHUP): drain, RELOADING=1,
// exec this program again in place; the new image's ready() ends the reload.
// Armed before READY=1, as is SIGTERM: systemd may send either as soon as
// it knows the service is up.
restartOnSignal('SIGHUP', { servers: [server] })
  .catch((err) => console.error(`restart failed: ${err.message}`));

process.once('SIGTERM', () => {
  stopping();
  server.close(() => process.exit(0));
});

ready(`generation ${generation}, serving`); // READY=1: start (or reload) complete
startWatchdog();                            // WATCHDOG=1 every WatchdogSec/2, if enabled
