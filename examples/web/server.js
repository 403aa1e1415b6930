// A small HTTP server written for PM2: it tells its supervisor it is ready
// with process.send('ready') once it listens, and shuts down cleanly on
// SIGINT (PM2's stop signal) or the "shutdown" message.
'use strict';
const http = require('http');

const port = Number(process.env.PORT || 3000);
const instance = process.env.NODE_APP_INSTANCE || '0';

const server = http.createServer((req, res) => {
  res.setHeader('content-type', 'text/plain');
  res.end(`hello from instance ${instance} (pid ${process.pid})\n`);
});

server.listen(port, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${port}`);
  if (process.send) process.send('ready');
});

function stop() {
  server.close(() => process.exit(0));
}
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
process.on('message', (msg) => { if (msg === 'shutdown') stop(); });
