package ha

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Role is this side's part in the pair as keepalived's notify hook
// reports it (xnatctl ha role, from dist/xnat-ha-notify.sh). The node
// syncs alike in every role; the role says which box forwards, for the
// operator and for xnatctl ha status.
type Role uint8

// The roles.
const (
	RoleUnknown Role = iota // not reported since xnatd started
	RolePrimary             // keepalived's MASTER: this box holds the addresses
	RoleBackup              // BACKUP: the peer forwards, this box keeps its connections
	RoleFault               // FAULT or STOP: this box gave the addresses up
)

var roleNames = [...]string{RoleUnknown: "unknown", RolePrimary: "primary", RoleBackup: "backup", RoleFault: "fault"}

func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// ErrRole is wrapped by ParseRole's errors.
var ErrRole = errors.New("unknown HA role")

// ParseRole reads a role as the notify hook names it: primary, backup or
// fault, or keepalived's own MASTER, BACKUP, FAULT and STOP (any case).
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(s) {
	case "primary", "master":
		return RolePrimary, nil
	case "backup":
		return RoleBackup, nil
	case "fault", "stop":
		return RoleFault, nil
	}
	return RoleUnknown, fmt.Errorf("%w %q (primary, backup or fault)", ErrRole, s)
}

// SetRole records the role keepalived gave this side, and when.
func (n *Node) SetRole(r Role) {
	n.mu.Lock()
	n.role, n.roleSince = r, time.Now()
	n.mu.Unlock()
}

// Role returns the role last recorded and when (zero time: never).
func (n *Node) Role() (Role, time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.role, n.roleSince
}

// RestoreRole records a role reported to the process this one took over
// from (xnatd --takeover), with the time it was reported there.
func (n *Node) RestoreRole(r Role, since time.Time) {
	n.mu.Lock()
	n.role, n.roleSince = r, since
	n.mu.Unlock()
}
