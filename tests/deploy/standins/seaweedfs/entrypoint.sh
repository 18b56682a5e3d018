#!/bin/sh
# What upstream's entrypoint does for `mini`: as root, own /data and drop to seaweed; then
# `weed mini` with -dir=/data unless given one.
set -eu
if [ "$(id -u)" = 0 ]; then
    chown -R seaweed:seaweed /data
    exec setpriv --reuid=seaweed --regid=seaweed --init-groups "$0" "$@"
fi
case "${1:-}" in
    mini)
        shift
        case " $* " in *" -dir="*) dir= ;; *) dir=-dir=/data ;; esac
        exec /usr/bin/weed -logtostderr=true mini $dir "$@"
        ;;
    *) exec /usr/bin/weed "$@" ;;
esac
