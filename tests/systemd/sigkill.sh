#!/usr/bin/env bash
# Runs inside the systemd sandbox (tests/faults.rs): procward.service as
# shipped (systemd/), its app chosen by a drop-in, killed outright with
# SIGKILL. systemd must restart the unit (Restart=on-failure) and leave
# nothing of the old run behind: the unit's cgroup is killed as the unit
# fails (KillMode=mixed sends SIGKILL to the whole group once the main
# process is gone), a process that left the app's process group included.
# Prints one line per check and exits non-zero if any failed.
set -uo pipefail
D=/var/lib/procward/t
failed=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
prop() { systemctl show -P "$1" procward.service; }
is() { [[ $(prop "$1") == "$2" ]]; }
# systemd 252 gives no event to wait on for a restart: poll, 20 s at most.
until_ok() {
    local t=$(($1 * 20)); shift
    while ((t-- > 0)); do "$@" && return 0; sleep 0.05; done
    return 1
}
# The unit's processes: those whose cgroup is the unit's (v1 or v2).
procs() {
    local cg f p
    cg=$(prop ControlGroup)
    for f in /proc/[0-9]*/cgroup; do
        p=${f#/proc/}; p=${p%/cgroup}
        grep -qs ":$cg\$" "$f" && echo "$p"
    done
}

rm -rf "$D"; mkdir -p "$D" /etc/systemd/system/procward.service.d
# The app leaves a process behind in a session of its own (out of reach of
# procward's process-group signals and of PR_SET_PDEATHSIG), then waits.
printf '[Service]\nExecStart=\n%s\n' \
    "ExecStart=/usr/local/bin/procward --name web -- sh -c 'setsid sleep 1000 & echo \$\$! > $D/escaped; exec sleep 1000'" \
    > /etc/systemd/system/procward.service.d/test.conf
systemctl daemon-reload
check "Restart=on-failure in the shipped unit" is Restart on-failure
check "systemctl start succeeds" systemctl start procward.service
until_ok 20 test -s $D/escaped
old_main=$(prop MainPID)
old_escaped=$(cat $D/escaped)
old_procs=$(procs | sort -n | tr '\n' ' ')
echo "info before: MainPID $old_main, cgroup: $old_procs(escaped $old_escaped)"
check "three processes in the unit: procward, the app, the escaped one" \
    bash -c "[[ \$(wc -w <<< '$old_procs') == 3 ]]"
rm -f $D/escaped

kill -9 "$old_main"
check "systemd restarts the unit" until_ok 20 bash -c \
    "[[ \$(systemctl show -P NRestarts procward.service) == 1 && \$(systemctl show -P ActiveState procward.service) == active ]]"
new_main=$(prop MainPID)
check "a new procward is the main process" bash -c "[[ $new_main != $old_main && $new_main != 0 ]]"
check "the journal says the old one was killed" bash -c \
    "journalctl -b -u procward.service --no-pager -o cat | grep -q 'status=9/KILL'"
until_ok 20 test -s $D/escaped
left=""
for p in $old_procs; do kill -0 "$p" 2>/dev/null && left="$left $p"; done
check "nothing of the old run is left (was:$old_procs)" test -z "$left"
new_procs=$(procs | sort -n | tr '\n' ' ')
echo "info after: MainPID $new_main, cgroup: $new_procs"
check "the unit holds only the new run" bash -c "[[ \$(wc -w <<< '$new_procs') == 3 ]]"
check "the restarted app runs" bash -c "kill -0 \$(cat $D/escaped)"
check "systemctl stop succeeds" systemctl stop procward.service
check "and empties the unit" bash -c "! kill -0 \$(cat $D/escaped) 2>/dev/null"

echo "$failed failed"
((failed == 0))
