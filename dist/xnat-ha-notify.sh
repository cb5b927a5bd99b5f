#!/bin/sh
# xnat-ha-notify.sh — keepalived's notify hook for an xnat HA pair: moves
# the connections when this box changes role, with the xnatctl ha verbs
# that match what conntrack-tools' primary-backup.sh runs on conntrackd.
#
#   xnat-ha-notify.sh [--socket PATH] [--xnatctl PATH] primary|backup|fault
#
# keepalived's generic "notify" form (TYPE NAME STATE PRIORITY) works too:
# the third argument is the state (MASTER, BACKUP, FAULT, STOP).
#
# primary  xnatctl ha commit   the peer's connections (the external cache)
#                              into the flow table, each with its external
#                              port                       (conntrackd -c)
#          xnatctl ha flush    empty the external cache   (conntrackd -f)
#          xnatctl ha bulk     send the table to the peer (conntrackd -B)
#          conntrackd's -R (refill its internal cache from the kernel) has
#          no counterpart: xnat's table is the internal cache.
# backup   xnatctl ha flush    drop what the cache holds
#          xnatctl ha resync   ask the new primary for its whole table
#                                                         (conntrackd -n)
# fault    nothing to move (xnatd may be down); logged.
#
# Each state is first recorded with xnatctl ha role (primary, backup,
# fault), which xnatctl ha status shows. Every step runs even if one
# fails; the exit status is 1 if any failed (for fault, where xnatd may be
# down, recording the role may fail without that).
set -u

xnatctl=${XNATCTL:-xnatctl}
socket=
while [ $# -gt 0 ]; do
	case $1 in
	--socket) [ $# -ge 2 ] || { echo "xnat-ha-notify: --socket needs a path" >&2; exit 2; }; socket=$2; shift 2 ;;
	--xnatctl) [ $# -ge 2 ] || { echo "xnat-ha-notify: --xnatctl needs a path" >&2; exit 2; }; xnatctl=$2; shift 2 ;;
	*) break ;;
	esac
done
case $# in
1) state=$1 ;;
3 | 4) state=$3 ;;
*)
	echo "usage: xnat-ha-notify.sh [--socket PATH] [--xnatctl PATH] primary|backup|fault" >&2
	exit 2
	;;
esac

log() {
	logger -t xnat-ha-notify -- "$*" 2>/dev/null || true
	echo "xnat-ha-notify: $*" >&2
}

rc=0
ha() {
	if [ -n "$socket" ]; then
		"$xnatctl" --socket "$socket" ha "$@"
	else
		"$xnatctl" ha "$@"
	fi || {
		log "xnatctl ha $* failed"
		rc=1
	}
}

case $state in
primary | master | MASTER)
	log "becoming primary"
	ha role primary
	ha commit
	ha flush
	ha bulk
	;;
backup | BACKUP)
	log "becoming backup"
	ha role backup
	ha flush
	ha resync
	;;
fault | FAULT | stop | STOP)
	log "fault ($state): this box gave its addresses up"
	saved=$rc
	ha role fault
	rc=$saved
	;;
*)
	log "unknown state '$state'"
	exit 2
	;;
esac
exit $rc
