// A Node `ws` peer (Debian's node-ws) for spec/websocket_spec.lua.
//   node ws_peer.js client URL  - checks loom's server: echoes of boundary
//                                 sizes, binary, ping, a close code
//   node ws_peer.js server      - an echo server on a free port (printed
//                                 first); ends after the first connection
const WebSocket = require('ws');

if (process.argv[2] === 'client') {
  const ws = new WebSocket(process.argv[3], { perMessageDeflate: false });
  const sizes = [0, 125, 126, 65535, 65536];
  let i = 0;
  const next = () => {
    if (i < sizes.length) return ws.send('y'.repeat(sizes[i]));
    if (i === sizes.length) return ws.send(Buffer.from([0, 1, 2, 255]));
    ws.ping('p');
  };
  ws.on('open', next);
  ws.on('message', (data, isBinary) => {
    if (i < sizes.length) console.log('echo', sizes[i], data.toString() === 'y'.repeat(sizes[i]) ? 'ok' : 'WRONG');
    else console.log('binary', isBinary && data.equals(Buffer.from([0, 1, 2, 255])) ? 'ok' : 'WRONG');
    i++;
    next();
  });
  ws.on('pong', () => { console.log('pong ok'); ws.close(4003, 'node done'); });
  ws.on('close', (code, reason) => console.log('closed', code, reason.toString()));
} else {
  const wss = new WebSocket.Server({ host: '127.0.0.1', port: 0, perMessageDeflate: false }, () => {
    console.log(wss.address().port);
  });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('close', (code, reason) => {
      console.log('server saw close', code, reason.toString());
      wss.close();
    });
  });
}
