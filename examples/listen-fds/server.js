// A Node server on the socket procward holds for it (any exec mode):
//   procward --listen 0.0.0.0:3000 -i 2 -- node examples/listen-fds/server.js
// procward binds 0.0.0.0:3000 once and passes it to every instance as fd 3
// (LISTEN_FDS=1); the socket stays open across restarts.
const http = require('http');
if (process.env.LISTEN_FDS !== '1') throw new Error('run me under procward --listen ADDR');
http.createServer((req, res) => res.end(`hello from ${process.pid}\n`))
  .listen({ fd: 3 }, () => console.log(`${process.pid} serving on fd 3`));
