// The Go example, for Node:
//
//   func main() {
//       go autorestart.RestartOnChange()
//       ...
//   }
//
// Run:   node --import tsx examples/autorestart.ts
// Then edit this file and save: the server restarts in place (same PID,
// `curl localhost:8080` shows it) with --import tsx and the arguments kept.
// NODE_DEBUG=posix-daemon shows what autorestart decides and why.
import { createServer } from 'node:http';
import {
  cleanUpChildZombies, notifyOnSigterm, restartOnChange,
} from 'posix-daemon/autorestart';

const startedAt = new Date().toISOString();
const generation = Number(process.env.EXAMPLE_GENERATION ?? '0');
// A run-time change to the environment: the next image sees it.
process.env.EXAMPLE_GENERATION = String(generation + 1);

async function main(): Promise<void> {
  // Children started by a previous image are not known to this one; reap
  // them (a no-op on the first start). Does not hold the process open.
  void cleanUpChildZombies().then((reaped) => {
    if (reaped.length > 0) console.log('reaped from the previous image:', reaped);
  });

  const server = createServer((_req, res) => {
    res.end(`pid ${process.pid}, generation ${generation}, image started ${startedAt}\n`);
  });
  const port = Number(process.env.PORT ?? 8080);
  server.listen(port, () => console.log(`pid ${process.pid} generation ${generation}: listening on :${port}`));

  // Go: `go autorestart.RestartOnChange()`. Runs in the background; the
  // server keeps the process alive, the watcher does not.
  restartOnChange({
    onError: (err) => console.error(`not restarting: ${err.message}`),
    // Let in-flight requests finish; the exec would cut them off. Bounded
    // by beforeRestartTimeout (5 s by default).
    beforeRestart: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    }),
  }).catch((err) => console.error('autorestart stopped:', err));

  // Go: `<-autorestart.NotifyOnSigterm()`.
  for await (const signal of notifyOnSigterm()) {
    console.log(`${signal}: shutting down`);
    server.close();
    break;  // ends the iteration: SIGTERM's default action is back
  }
  process.exit(0);  // the restart watcher must not outlive a shutdown either
}

void main();
