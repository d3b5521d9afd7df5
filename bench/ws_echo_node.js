// Node's ws (Debian's node-ws) echo server, for bench/ws.sh.
// usage: NODE_PATH=/usr/share/nodejs node bench/ws_echo_node.js PORT
const WebSocket = require('ws');
const wss = new WebSocket.Server({ host: '127.0.0.1', port: +process.argv[2], perMessageDeflate: false });
wss.on('connection', (ws) => ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary })));
