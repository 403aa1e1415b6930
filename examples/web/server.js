// A small HTTP server written for PM2: it tells its supervisor it is ready
// with process.send('ready') once it listens, and shuts down cleanly on
// SIGINT (PM2's stop signal) or the "shutdown" message: it drains, answering
// every request still arriving with `Connection: close` so keep-alive
// clients reconnect (to the replacement, during a reload) instead of
// writing into a closed connection.
'use strict';
const http = require('http');
const net = require('net');

const port = Number(process.env.PORT || 3000);
// 127.0.0.1 unless told otherwise; the container image sets HOST=0.0.0.0.
const host = process.env.HOST || '127.0.0.1';
const instance = process.env.NODE_APP_INSTANCE || '0';

// How long keep-alive clients get to send their next request (answered
// with `Connection: close`) before idle connections are closed; well
// within kill_timeout (1600 ms by default).
const drainMs = Number(process.env.DRAIN_MS || 500);
let draining = false;

const server = http.createServer((req, res) => {
  if (draining) res.setHeader('connection', 'close');
  res.setHeader('content-type', 'text/plain');
  res.end(`hello from instance ${instance} (pid ${process.pid})\n`);
});

server.listen(port, host, () => {
  console.log(`listening on http://${host}:${port}`);
  if (process.send) process.send('ready');
});

function stop() {
  if (draining) return;
  draining = true;
  // No new connections; the open ones get their answers. net.Server's
  // close, not http.Server's: since Node 19 the latter also drops idle
  // keep-alive connections at once, racing the clients' next requests.
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => server.closeIdleConnections(), drainMs).unref();
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
process.on('message', (msg) => { if (msg === 'shutdown') stop(); });
