// The HTTP server the fixture units run (PD_* variables from the unit):
// takes its socket with listen() (systemd's, the stored one, the one the
// image before handed over, or a new one), says ready, restarts in place on
// SIGHUP, and with PD_STORE=1 keeps its socket in systemd's fd store; with
// PD_WATCH=1 it also restarts in place when its files change. Prints one
// "PD {json}" line per event for the journal.
import http from 'node:http';
import { fstatSync } from 'node:fs';
import { listen, restartOnChange, restartOnSignal } from 'posix-daemon/autorestart';
import { ready, startWatchdog, stopping, storeSocket } from 'posix-daemon/systemd';

const generation = Number(process.env.PD_GENERATION ?? '0');
process.env.PD_GENERATION = String(generation + 1);
const port = Number(process.env.PD_PORT ?? '8090');
const say = (event, more = {}) => console.log(`PD ${JSON.stringify({ event, pid: process.pid, generation, ...more })}`);

const server = http.createServer((_req, res) => res.end(`pid ${process.pid}, generation ${generation}\n`));
const r = await listen(server, { name: process.env.PD_NAME ?? 'web', port, host: '127.0.0.1' });
const fd = server._handle.fd;
say('listening', { inherited: r.inherited, name: r.name, fd, ino: fstatSync(fd).ino });
if (process.env.PD_STORE === '1') say('stored', { sent: storeSocket(server) });

// Everything systemd may trigger is armed before READY=1: from then on
// `systemctl reload`/`stop` (SIGHUP/SIGTERM) and a test's edit may come.
const servers = [server];
const onError = (err) => say('restart-error', { message: err.message });
restartOnSignal('SIGHUP', { servers }).catch(onError);
if (process.env.PD_WATCH === '1') restartOnChange({ servers, onError }).catch(onError);
process.once('SIGTERM', () => {
  stopping();
  server.close(() => process.exit(0));
});

ready(`generation ${generation}, serving`);
startWatchdog();
