#!/bin/sh
# Entry point of the orc container image: prepares this node's membership, then becomes
# `orc-node start` (exec, so the daemon is the process that receives SIGTERM).
#
# With arguments, runs them instead (`docker run IMAGE orc-node status`).
#
# Environment (all optional):
#   ORC_HOME              the node's home; a volume must be mounted there (image default /var/lib/orc)
#   ORC_NODE_NAME         the node's name (default: the container's host name)
#   ORC_NODE_ARGS         more flags for `orc-node start`, split at spaces ("--peer a:7733 --threads 2")
#   ORC_CREATE_MESH=1     first start with an empty home: create a new mesh (`orc-node init`)
#   ORC_INVITE            with ORC_CREATE_MESH: names to invite; for each NAME without a token
#                         file yet, a token is written to $ORC_INVITES_DIR/NAME.token
#   ORC_INVITE_TTL        how long those tokens stay valid (default 1h)
#   ORC_INVITES_DIR       where tokens are written (default /srv/orc-invites)
#   ORC_JOIN_TOKEN        first start with an empty home: join the mesh with this token
#   ORC_JOIN_TOKEN_FILE   ... or with the token in this file, waiting up to ORC_JOIN_WAIT
#                         seconds (default 300) for the file to appear
set -euf  # -f: no file-name globbing when ORC_NODE_ARGS and ORC_INVITE are split

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

umask 077
home="${ORC_HOME:?ORC_HOME is not set}"
name="${ORC_NODE_NAME:-$(hostname)}"
invites="${ORC_INVITES_DIR:-/srv/orc-invites}"

say() { echo "orc-entrypoint: $*" >&2; }

# orc-node writes node.json last when it creates or joins a mesh: its presence means "member".
member() { [ -e "$home/identity/node.json" ]; }

# shellcheck disable=SC2086  # ORC_NODE_ARGS is meant to be split at spaces
set -- orc-node start --name "$name" ${ORC_NODE_ARGS:-}

if ! member; then
    if [ "${ORC_CREATE_MESH:-0}" = 1 ]; then
        orc-node init --name "$name"
    else
        token="${ORC_JOIN_TOKEN:-}"
        if [ -z "$token" ] && [ -n "${ORC_JOIN_TOKEN_FILE:-}" ]; then
            waited=0
            while [ ! -s "$ORC_JOIN_TOKEN_FILE" ]; do
                if [ "$waited" -ge "${ORC_JOIN_WAIT:-300}" ]; then
                    say "no join token appeared in $ORC_JOIN_TOKEN_FILE after ${waited}s"
                    exit 3
                fi
                [ "$waited" -eq 0 ] && say "waiting for a join token in $ORC_JOIN_TOKEN_FILE"
                sleep 2
                waited=$((waited + 2))
            done
            token="$(head -n 1 "$ORC_JOIN_TOKEN_FILE")"
        fi
        if [ -z "$token" ]; then
            say "this node is in no mesh yet: set ORC_CREATE_MESH=1 (first node), or ORC_JOIN_TOKEN /"
            say "ORC_JOIN_TOKEN_FILE with a token from 'orc-node invite' on the first node"
            exit 2
        fi
        set -- "$@" --join "$token"
    fi
fi

# Invite whoever has no token file yet (so deleting NAME.token and restarting this container
# issues a fresh one). Invitations made before the daemon runs are stored in the home; the
# daemon opens its join server (mesh port + 1) when it starts, and closes it when none is pending.
if [ "${ORC_CREATE_MESH:-0}" = 1 ]; then
    for invitee in ${ORC_INVITE:-}; do
        [ -e "$invites/$invitee.token" ] && continue
        orc-node invite --ttl "${ORC_INVITE_TTL:-1h}" > "$invites/.$invitee.token.tmp"
        mv "$invites/.$invitee.token.tmp" "$invites/$invitee.token"
        say "join token for '$invitee' written to $invites/$invitee.token"
    done
fi

exec "$@"
