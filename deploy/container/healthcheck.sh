#!/bin/sh
# Healthy = this container's daemon answers on its control socket (`orc-node status` then
# reports mode "daemon"; with no daemon it reports "stopped" from the files in the home).
orc-node status --json 2>/dev/null | python3 -c '
import json, sys
try:
    healthy = json.load(sys.stdin).get("mode") == "daemon"
except ValueError:
    healthy = False
sys.exit(0 if healthy else 1)'
