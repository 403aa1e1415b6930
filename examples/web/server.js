// A small HTTP server written for PM2: it tells its supervisor it is ready
// with process.send('ready') once it listens, and shuts down cleanly on
// SIGINT (PM2's stop signal) or the "shutdown" message.
'use strict';
const http = require('http');

const port = Number(process.env.PORT || 3000);
// 127.0.0.1 unless told otherwise; the container image sets HOST=0.0.0.0.
const host = process.env.HOST || '127.0.0.1';
const instance = process.env.NODE_APP_INSTANCE || '0';

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`hello from instance ${instance} (pid ${process.pid})\n`);
});

server.listen(port, host, () => {
  console.log(`listening on http://${host}:${port}`);
  if (process.send) process.send('ready');
});

function stop() {
  server.close(() => process.exit(0));
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
process.on('message', (msg) => { if (msg === 'shutdown') stop(); });
