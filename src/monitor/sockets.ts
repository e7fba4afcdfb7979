/**
 * The monitor's listening sockets: opened once (or taken over from systemd's
 * socket activation, or from the monitor's image before a restartViaExec),
 * held without a server (the monitor never accepts), and handed to every
 * worker at the same fd numbers with the POSIX_DAEMON_LISTEN_FDS hand-over
 * that `listen()` reads. While the monitor holds a socket, no worker's death
 * closes it: connections keep queueing in the kernel for the other workers.
 */
import { createServer, type Server } from 'node:net';
import { closeSync } from 'node:fs';
import { debuglog } from 'node:util';
import { dup } from '../posix';
import { addon } from '../native';
import { HANDOFF_ENV, holdAcrossExec, releaseHeld, takeInherited } from '../sockets';
import type { MonitorSocket } from './types';

const debug = debuglog('posix-daemon');

export interface HeldSocket {
  name: string;
  fd: number;
  port?: number;
  address?: string;
  /** Where it came from: bound here, systemd, or the image before. */
  source: 'bound' | 'inherited';
}

function bind(spec: MonitorSocket): Promise<number> {
  return new Promise((resolve, reject) => {
    const server: Server = createServer();
    server.once('error', reject);
    server.listen({ port: spec.port ?? 0, host: spec.host, backlog: spec.backlog ?? 511, exclusive: true }, () => {
      server.removeListener('error', reject);
      // Synchronously, in the 'listening' callback: libuv has not polled the
      // socket yet, so this server never accepts anything. The duplicate
      // keeps the socket (and its queue) open after the server closes.
      const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      const copy = dup(fd, 3);
      server.close();
      resolve(copy);
    });
  });
}

/** Opens (or takes over) every socket; on failure closes what it opened and throws. */
export async function openSockets(specs: MonitorSocket[]): Promise<HeldSocket[]> {
  const out: HeldSocket[] = [];
  try {
    for (const spec of specs) {
      const hit = takeInherited({ name: spec.name, port: spec.port, host: spec.host });
      let fd: number;
      let source: HeldSocket['source'];
      if (hit !== undefined) {
        fd = hit.fd;
        source = 'inherited';
        debug('monitor: socket %s is inherited fd %d', spec.name, fd);
      } else {
        fd = await bind(spec);
        source = 'bound';
      }
      const info = addon.socketInfo(fd);
      const s: HeldSocket = { name: spec.name, fd, source };
      if (info?.port !== undefined) s.port = info.port;
      if (info?.address !== undefined) s.address = info.address;
      holdAcrossExec(fd, spec.name);
      out.push(s);
    }
  } catch (err) {
    closeSockets(out);
    throw err;
  }
  return out;
}

export function closeSockets(held: HeldSocket[]): void {
  for (const s of held) {
    releaseHeld(s.fd);
    try {
      closeSync(s.fd);
    } catch {
      // already closed
    }
  }
}

/** The worker's hand-over (`P<pid>`: for a child of ours; it checks that we are its parent). */
export function workerHandoff(held: HeldSocket[]): Record<string, string | undefined> {
  if (held.length === 0) return { [HANDOFF_ENV]: undefined };
  return {
    [HANDOFF_ENV]: [`P${process.pid}`, ...held.map((s) => `${s.fd}=${encodeURIComponent(s.name)}`)].join(';'),
    LISTEN_FDS: undefined,
    LISTEN_PID: undefined,
    LISTEN_FDNAMES: undefined,
  };
}
