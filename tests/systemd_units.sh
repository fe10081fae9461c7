#!/usr/bin/env bash
# systemd-units: deploy/systemd's units verify (systemd-analyze verify, with ExecStart pointed at
# this build's hms-ffid and hms-ffi-gateway), and the broker's exposure level (systemd-analyze
# security --offline) stays at or below 2.0 ("SAFE"; 0.7 when this test was written), the
# gateway's at or below 2.5.
set -euo pipefail
src=$1
broker=$2
gateway=$3
dir=$(mktemp -d /tmp/hms-ffi-units-XXXXXX)
trap 'rm -rf "$dir"' EXIT
cp "$src"/deploy/systemd/hms-ffid.socket "$src"/deploy/systemd/hms-ffid.service \
   "$src"/deploy/systemd/hms-ffi-gateway.service "$dir"/
sed -i "s|^ExecStart=/usr/bin/hms-ffid|ExecStart=$broker|" "$dir/hms-ffid.service"
sed -i "s|^ExecStart=/usr/bin/hms-ffi-gateway|ExecStart=$gateway|" "$dir/hms-ffi-gateway.service"
cd "$dir"
out=$(systemd-analyze verify ./hms-ffid.socket ./hms-ffid.service ./hms-ffi-gateway.service 2>&1) || {
  echo "systemd-analyze verify failed:"; echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "systemd-analyze verify warns:"; echo "$out"; exit 1
fi
security=$(systemd-analyze security --offline=yes ./hms-ffid.service 2>&1)
level=$(echo "$security" | sed -n 's/.*Overall exposure level for hms-ffid.service: \([0-9.]*\).*/\1/p')
if [ -z "$level" ]; then
  echo "no exposure level in:"; echo "$security"; exit 1
fi
if ! awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'; then
  echo "exposure level $level is above 2.0:"; echo "$security" | grep -v '✓'; exit 1
fi
# The gateway talks TCP to its peers, so it is a little more exposed than the broker.
gsecurity=$(systemd-analyze security --offline=yes ./hms-ffi-gateway.service 2>&1)
glevel=$(echo "$gsecurity" | sed -n 's/.*Overall exposure level for hms-ffi-gateway.service: \([0-9.]*\).*/\1/p')
if [ -z "$glevel" ] || ! awk -v l="$glevel" 'BEGIN { exit !(l <= 2.5) }'; then
  echo "gateway exposure level '$glevel' is above 2.5:"; echo "$gsecurity" | grep -v '✓'; exit 1
fi
echo "ok: units verify; exposure level $level (broker), $glevel (gateway)"
