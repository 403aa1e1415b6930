#!/usr/bin/env bash
# What an app's IPC messages cost procward (benches/ipc-flood.sh, in the
# result lines of benches/run): 64 messages of 1 MB, then
# process.send('ready'); procward's peak RSS and the time to ready.
# Usage: benches/ipc.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

(cd "$ROOT" && bash benches/ipc-flood.sh "$PW" 64) | tee "$TMP/out" >&2
figure ipc-flood-rss KB "" "" "procward's peak RSS while an app sends 64 IPC messages of 1 MB"
value ipc-flood-rss procward "$(sed -n 's/.*peak_rss_kb=\([0-9]*\).*/\1/p' "$TMP/out")"
figure ipc-flood-ready ms "" "" "the same app's start to ready, through those messages"
value ipc-flood-ready procward "$(sed -n 's/.*start_to_ready_ms=\([0-9]*\).*/\1/p' "$TMP/out")"
