#!/usr/bin/env bash
# Runs inside the systemd sandbox (tests/systemd.rs): procward.service from
# systemd/, with drop-ins that pick the app of each scenario. Prints one line
# per check and exits non-zero if any failed.
set -uo pipefail
FIX=/sandbox/fixtures/ready
# The units leave the apps only their state directory to write to
# (ProtectSystem=strict): the apps' records go there.
D=/var/lib/procward/t
failed=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
prop() { systemctl show -P "$1" procward.service; }
# Waits up to $1 seconds for "$2..." to succeed (systemd 252 gives no event
# to wait on for reload ends and watchdog kills).
until_ok() {
    local t=$(($1 * 20)); shift
    while ((t-- > 0)); do "$@" && return 0; sleep 0.05; done
    return 1
}
is() { [[ $(prop "$1") == "$2" ]]; }
# A scenario: the drop-in's [Service] lines, a fresh state directory.
scenario() {
    echo "--- $1"
    systemctl stop procward.service 2>/dev/null
    systemctl reset-failed procward.service 2>/dev/null
    rm -rf "$D"; mkdir -p "$D" /etc/systemd/system/procward.service.d
    printf '[Service]\nExecStart=\n%s\n' "$2" > /etc/systemd/system/procward.service.d/test.conf
    systemctl daemon-reload
}
journal_has() { journalctl -b -u procward.service --no-pager -o cat | grep -q -- "$1"; }
PW=/usr/local/bin/procward

echo "--- the shipped units"
check "procward.service and procward@.service verify" \
    systemd-analyze verify procward.service procward@web.service
for unit in procward.service procward@web.service; do
    # "→ Overall exposure level for procward.service: 2.3 OK 🙂"
    score=$(systemd-analyze security "$unit" | grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*')
    echo "info $score"
    check "$unit is hardened (exposure below 3)" \
        awk -v s="${score##*: }" 'BEGIN { exit !(s + 0 < 3) }'
done

echo "--- procward.service as shipped: /etc/procward/procward.yaml"
rm -rf "$D"; mkdir -p "$D" /etc/procward
cat > /etc/procward/procward.yaml <<YAML
apps:
  - name: api
    script: $FIX/ipc_app.js
    args: [$D, slow]
    instances: 2
    wait_ready: true
YAML
check "systemctl start succeeds" systemctl start procward.service
check "StatusText counts both instances" is StatusText "api 2/2 ready, 0 restarts"
check "systemctl stop succeeds" systemctl stop procward.service
check "stopped cleanly" is Result success

scenario "process.send('ready') after listen" \
    "ExecStart=$PW --wait-ready --listen-timeout 30s --name web -- node $FIX/ipc_app.js $D slow"
check "systemctl start succeeds" systemctl start procward.service
check "start returned only after the app said ready" test -s $D/ready_sent
check "active/running" is SubState running
check "StatusText is the summary" is StatusText "web 1/1 ready, 0 restarts"
first=$(cat $D/pid)
check "systemctl reload succeeds" systemctl reload procward.service
check "reload restarted the app" until_ok 20 bash -c "[[ \$(cat $D/pid) != $first ]]"
check "reload ends active with READY=1" until_ok 20 is ActiveState active
check "StatusText counts the reload" until_ok 10 is StatusText "web 1/1 ready, 1 restart"
check "the restart was a reload" journal_has 'reason="reload"'
app=$(cat $D/pid)
check "systemctl stop succeeds" systemctl stop procward.service
check "stopped cleanly" is Result success
check "inactive" is ActiveState inactive
check "the app is gone" bash -c "! kill -0 $app 2>/dev/null"

echo "--- procward@web.service: one process file per instance"
D=/var/lib/procward/web/t
rm -rf "$D"; mkdir -p "$D" /etc/procward
cat > /etc/procward/web.yaml <<YAML
apps:
  - name: web
    script: $FIX/ipc_app.js
    args: [$D, slow]
    wait_ready: true
    listen_timeout: 30s
YAML
check "systemctl start procward@web succeeds" systemctl start procward@web.service
check "start returned only after the app said ready" test -s $D/ready_sent
check "StatusText of the instance" \
    bash -c '[[ $(systemctl show -P StatusText procward@web.service) == "web 1/1 ready, 0 restarts" ]]'
check "systemctl stop procward@web succeeds" systemctl stop procward@web.service
check "stopped cleanly" bash -c '[[ $(systemctl show -P Result procward@web.service) == success ]]'
D=/var/lib/procward/t

scenario "never ready, listen_timeout (PM2: ready anyway)" \
    "ExecStart=$PW --wait-ready --listen-timeout 2s -- node $FIX/ipc_app.js $D never"
check "systemctl start succeeds after listen_timeout" systemctl start procward.service
check "procward said why" journal_has "treating it as ready"

scenario "never ready, strict" \
    "ExecStart=$PW --wait-ready --strict-ready --listen-timeout 1s --max-restarts 5 --min-uptime 10s -- node $FIX/ipc_app.js $D never"
systemctl start --no-block procward.service
check "restarted for ready_timeout" until_ok 20 journal_has 'reason="ready_timeout"'
check "still activating (no READY=1)" is ActiveState activating

scenario "crash before ready" \
    "ExecStart=$PW --wait-ready --max-restarts 2 -- node $FIX/ipc_app.js $D crash
Restart=no"
check "systemctl start fails" bash -c "! systemctl start procward.service"
check "Result is exit-code" is Result exit-code

scenario "garbage and a 10 MB line on the channel" \
    "ExecStart=$PW --wait-ready --listen-timeout 60s -- node $FIX/ipc_app.js $D garbage"
check "systemctl start succeeds" systemctl start procward.service
check "garbage counted" journal_has 'IPC lines dropped: 3 garbage'
check "10 MB line counted" journal_has ' 1 too_long'
check "the app is alive" bash -c "kill -0 \$(cat $D/pid)"

scenario "an sd_notify app (systemd-notify)" \
    "ExecStart=$PW --ready notify --listen-timeout 60s --name sh -- $FIX/notify_app.sh $D ready"
check "systemctl start succeeds" systemctl start procward.service
check "StatusText" is StatusText "sh 1/1 ready, 0 restarts"
check "the app's own STATUS reached procward" journal_has 'status="serving"'
check "the app's NOTIFY_SOCKET is procward's proxy" bash -c "[[ \$(cat $D/socket) == /run/procward/notify-* ]]"

scenario "a spoofed datagram from a foreign process" \
    "ExecStart=$PW --ready notify --listen-timeout 60s -- $FIX/notify_app.sh $D wait"
systemctl start --no-block procward.service
until_ok 20 test -s $D/socket
NOTIFY_SOCKET=$(cat $D/socket) systemd-notify --ready
check "rejected and counted" until_ok 10 journal_has 'notify datagram dropped: 1 foreign_sender'
check "still activating" is ActiveState activating
touch $D/go
check "the app's own READY=1 is believed" until_ok 20 is ActiveState active

scenario "watchdog: a hung procward is killed" \
    "ExecStart=$PW --wait-ready -- node $FIX/ipc_app.js $D slow
WatchdogSec=2s
Restart=no"
check "systemctl start succeeds" systemctl start procward.service
check "pings keep it alive past WatchdogSec" bash -c "sleep 3; [[ \$(systemctl show -P ActiveState procward.service) == active ]]"
kill -STOP "$(prop MainPID)"
check "the watchdog fires" until_ok 30 is Result watchdog
check "the unit failed" until_ok 30 is ActiveState failed

# Socket activation: systemd binds, starts procward on the first connection,
# and procward adopts the socket by its name instead of binding again.
scenario "socket-activated procward adopts its socket by name" \
    "ExecStart=$PW --listen 127.0.0.1:8811 --name web -- node -e \"require('http').createServer((q, r) => r.end(process.env.LISTEN_FDNAMES + ' ' + (process.env.LISTEN_PID == process.pid))).listen({fd: 3})\""
printf '[Socket]\nListenStream=127.0.0.1:8811\nFileDescriptorName=web\n' > /etc/systemd/system/procward.socket
systemctl daemon-reload
check "procward.socket starts" systemctl start procward.socket
get8811() { exec 5<>/dev/tcp/127.0.0.1/8811 && printf 'GET / HTTP/1.0\r\n\r\n' >&5 && timeout 20 cat <&5; exec 5<&-; }
check "a connection starts procward and the app answers on the adopted socket" \
    bash -c "$(declare -f get8811); get8811 | grep -q 'web true'"
check "procward did not bind it again" bash -c "! journalctl -b -u procward.service --no-pager -o cat | grep -q 'cannot listen'"
systemctl stop procward.service procward.socket
rm -f /etc/systemd/system/procward.socket
systemctl daemon-reload

# An app ready at once: READY=1 goes out within milliseconds, and the
# control socket exists before it does.
scenario "the control socket exists when start returns" \
    "ExecStart=$PW --name quick -- sleep 1000"
check "systemctl start succeeds" systemctl start procward.service
check "procward status answers at once" $PW status
systemctl stop procward.service

echo "$failed failed"
((failed == 0))
