// Sends 64 IPC messages of ~1 MiB JSON arrays, then "ready".
const n = Number(process.env.FLOOD_COUNT || 64);
const arr = [];
let len = 2;
while (len < 1000000) { arr.push(123456); len += 7; }
for (let i = 0; i < n; i++) process.send(arr);
process.send('ready');
process.on('message', () => {});
setInterval(() => {}, 1000);
