/**
 * The Go `daemon` example with both flags, in TypeScript:
 *
 *   node --import tsx examples/monitor.ts --background --self-monitor
 *
 * --background: the program starts itself again as a daemon and waits until
 *   that daemon reports readiness (see examples/daemon.ts).
 * --self-monitor: the (daemon) process becomes a monitor that keeps a worker
 *   copy of the program running, restarting it with backoff.
 *
 * Readiness travels to both: the worker reports to the monitor, and the
 * monitor, once its first worker is ready, reports to the foreground. SIGINT
 * (terminal) and SIGTERM (service manager) abort the same AbortController:
 * the monitor stops its worker (SIGINT, then SIGKILL after a timeout) and
 * exits; the worker closes its server and exits.
 */
import { createServer, type Server } from 'node:net';
import { writeFileSync } from 'node:fs';
import { daemonize, report } from 'posix-daemon';
import { selfMonitor, isMonitored } from 'posix-daemon/monitor';

const DAEMON_KEY = 'EXAMPLE_DAEMON';
const MONITOR_KEY = 'EXAMPLE_MONITOR';

async function main(): Promise<void> {
  const ac = new AbortController();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => ac.abort(new Error(`received ${sig}`)));
  }

  if (process.argv.includes('--background')) {
    const r = await daemonize({ envKey: DAEMON_KEY, timeout: 30_000, signal: ac.signal });
    if (r.foreground) {
      console.log(`daemon started: PID ${r.pid}`);
      process.exit(0);
    }
  }

  if (process.argv.includes('--self-monitor') && !isMonitored(MONITOR_KEY)) {
    let toldForeground = false;
    try {
      await selfMonitor(MONITOR_KEY, {
        signal: ac.signal,
        minBackoff: 200,
        onEvent(e) {
          console.error(`[monitor ${process.pid}] ${JSON.stringify(e)}`);
          // The daemon (this monitor) is ready once its first worker is.
          if (e.type === 'ready' && !toldForeground) {
            toldForeground = true;
            void report(process.env[DAEMON_KEY]);
          }
        },
      });
    } catch (err) {
      console.error(`[monitor ${process.pid}] stopped: ${(err as Error).message}`);
    }
    process.exit(0);
  }

  // The worker (or the whole program without --self-monitor).
  const server: Server = createServer((s) => s.end(`hello from ${process.pid}\n`));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const addr = server.address();
  const where = typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : String(addr);
  // --state=FILE: where a test (or you) can read the worker's PID and address.
  const state = process.argv.find((a) => a.startsWith('--state='))?.slice('--state='.length);
  if (state) writeFileSync(state, `${process.pid} ${where}\n`);
  console.log(`worker ${process.pid} listening on ${where}`);
  // Tell whoever started us: the monitor when monitored, else the foreground
  // of daemonize (each is a no-op when its variable is unset).
  await report(process.env[isMonitored(MONITOR_KEY) ? MONITOR_KEY : DAEMON_KEY]);

  await new Promise<void>((resolve) => ac.signal.addEventListener('abort', () => resolve(), { once: true }));
  server.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
