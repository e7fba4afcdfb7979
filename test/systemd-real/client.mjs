// A request loop (run in the container's network namespace): PD_CONCURRENCY
// loops, one new connection per request, until stdin ends; then prints
// { ok, failed, errors, bodies } as JSON.
import http from 'node:http';

const port = Number(process.argv[2]);
const concurrency = Number(process.argv[3] ?? '4');
let running = true;
const stats = { ok: 0, failed: 0, errors: {}, bodies: {} };
function once() {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: 60_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => { body += d; }).on('end', () => {
        if (res.statusCode === 200) {
          stats.ok++;
          body = body.trim();
          stats.bodies[body] = (stats.bodies[body] ?? 0) + 1;
        } else {
          stats.failed++;
          stats.errors[`HTTP ${res.statusCode}`] = (stats.errors[`HTTP ${res.statusCode}`] ?? 0) + 1;
        }
        resolve();
      }).on('error', fail);
    });
    function fail(err) {
      stats.failed++;
      stats.errors[err.code ?? err.message] = (stats.errors[err.code ?? err.message] ?? 0) + 1;
      resolve();
    }
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', fail);
  });
}
async function loop() { while (running) await once(); }
const loops = Array.from({ length: concurrency }, loop);
console.log('RUNNING');
process.stdin.resume().on('end', async () => {
  running = false;
  await Promise.all(loops);
  console.log(JSON.stringify(stats));
});
