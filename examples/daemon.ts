/**
 * The Go `daemon` example, in TypeScript:
 *
 *   node --import tsx examples/daemon.ts              # runs in the terminal
 *   node --import tsx examples/daemon.ts --background # detaches, returns once ready
 *
 * With --background the program starts itself again as a daemon (double
 * fork, cwd /, stdio /dev/null, env PATH/USER/HOME + EXAMPLE_DAEMON), waits
 * until the daemon reports that its initialization is done, prints its PID
 * and exits. The daemon runs until SIGINT or SIGTERM.
 */
import { createServer } from 'node:net';
import { daemonize, report } from 'posix-daemon';

const ENV_KEY = 'EXAMPLE_DAEMON';

async function main(): Promise<void> {
  const background = process.argv.includes('--background');
  if (background) {
    // Same call in both processes: the foreground launches the daemon and
    // waits for its report; the daemon gets { foreground: false } back.
    const r = await daemonize({ envKey: ENV_KEY, timeout: 30_000 });
    if (r.foreground) {
      console.log(`daemon started: PID ${r.pid}`);
      process.exit(0);
    }
  }

  // Initialization: whatever must work before the daemon counts as started.
  // Here: a TCP listener on a loopback port.
  let server;
  try {
    server = createServer((s) => s.end(`hello from ${process.pid}\n`));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
  } catch (err) {
    // The foreground's daemonize() rejects with this message.
    await report(process.env[ENV_KEY], err as Error);
    process.exit(1);
  }
  // Armed before the report: whoever started us may stop us as soon as the
  // foreground has printed our PID.
  const stop = new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });

  // Ready: the foreground prints our PID and exits. Without --background the
  // variable is unset and this is a no-op, as in Go.
  await report(process.env[ENV_KEY]);
  const addr = server.address();
  console.log(`listening on ${typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : addr}`);

  await stop;
  server.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
