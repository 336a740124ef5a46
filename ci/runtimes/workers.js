// Node.js worker_threads: N workers, each waited for before the next (`join`), or up to 16 at once,
// unref'd and never awaited (`detach`); Node joins each worker's native thread as it exits. With
// THREADLEAK_OUTSIDE set, prints READY once done and waits, for ci/runtimes.py.
const { Worker } = require('worker_threads');
// Unref'd workers do not keep the process alive: this does, until every worker has exited.
const alive = setInterval(() => {}, 1000);
const [mode, count] = process.argv.slice(2);
const n = parseInt(count, 10);
let started = 0;
let exited = 0;
function start() {
  while (started < n && started - exited < (mode === 'join' ? 1 : 16)) {
    started++;
    const w = new Worker('', { eval: true });
    if (mode !== 'join') w.unref();
    w.on('exit', () => {
      exited++;
      if (exited === n) finish();
      else start();
    });
  }
}
function finish() {
  clearInterval(alive);
  setTimeout(() => {
    if (process.env.THREADLEAK_OUTSIDE) {
      console.log('READY');
      setTimeout(() => {}, 3000);
    }
  }, 200);
}
start();
