// A start slower than TimeoutStartSec=: extendTimeout() asks for more time
// before each step (PD_EXTEND=0: it does not, and systemd gives up).
import { extendTimeout, ready } from 'posix-daemon/systemd';
import { setTimeout as sleep } from 'node:timers/promises';

const steps = Number(process.env.PD_STEPS ?? '4');
const stepMs = Number(process.env.PD_STEP_MS ?? '1500');
for (let i = 0; i < steps; i++) {
  if (process.env.PD_EXTEND !== '0') extendTimeout(stepMs * 2);
  await sleep(stepMs);  // a slow migration, say
}
// SIGTERM armed before READY=1: `systemctl stop` may follow it at once.
const keep = setInterval(() => {}, 1 << 30);
process.once('SIGTERM', () => { clearInterval(keep); process.exit(0); });
ready('started slowly');
