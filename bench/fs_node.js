// Node's twin of `bench/fs.lua stat`: 10,000 fs.promises.stat, 64 at a time.
// usage: node bench/fs_node.js [dir]   (the files are made by bench/fs.lua stat)
const fsp = require('fs').promises;
const dir = (process.argv[2] || '/tmp/loom-bench') + '/files', N = 10000, C = 64;
(async () => {
  const t0 = process.hrtime.bigint();
  let next = 0;
  async function worker() { while (next < N) { next++; await fsp.stat(dir + '/' + next); } }
  await Promise.all(Array.from({ length: C }, worker));
  console.log(`stat files=${N} node_ms=${(Number(process.hrtime.bigint() - t0) / 1e6).toFixed(1)}`);
})();
