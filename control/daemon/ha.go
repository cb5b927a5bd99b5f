package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"xnat/control/ha"
	"xnat/dataplane"
	"xnat/flowtable"
)

// HAConfig is the [ha] section: connection sync with a peer in
// conntrackd's protocol (the peer another xnatd or a conntrackd), as
// conntrackd's Sync section configures it. No section (or an empty one):
// no sync.
type HAConfig struct {
	// Mode is the reliability protocol: "ftfw" (the only one).
	Mode string `toml:"mode"`
	// Transport is "udp" (unicast to Peer) or "multicast" (to Group).
	Transport string `toml:"transport"`
	// Local is this side's address on the sync link, Peer the other
	// side's: only datagrams from Peer are accepted.
	Local string `toml:"local"`
	Peer  string `toml:"peer"`
	// Port is the UDP port (conntrackd's Port, or Group in its Multicast
	// section); 0 means 3780.
	Port int `toml:"port"`
	// Interface binds the link to one interface: the dedicated sync link.
	Interface string `toml:"interface"`
	// Group is the multicast group (transport "multicast").
	Group string `toml:"group"`
	// CheckPort is the UDP port of the pool check between two xnatd
	// (0: Port+1); Filter, which connections are sent ([ha.filter]).
	CheckPort int             `toml:"check_port"`
	Filter    *HAFilterConfig `toml:"filter"`
}

// DefaultHAPort is conntrackd's usual sync port.
const DefaultHAPort = 3780

// Enabled reports whether sync is configured.
func (h *HAConfig) Enabled() bool { return h != nil && (h.Local != "" || h.Peer != "") }

// linkConfig checks the section and turns it into the link's
// configuration.
func (h *HAConfig) linkConfig() (ha.LinkConfig, error) {
	bad := func(format string, args ...any) (ha.LinkConfig, error) {
		return ha.LinkConfig{}, fmt.Errorf("%w: ha: "+format, append([]any{ErrConfig}, args...)...)
	}
	if m := strings.ToLower(h.Mode); m != "" && m != "ftfw" {
		return bad("mode %q (ftfw)", h.Mode)
	}
	port := h.Port
	if port == 0 {
		port = DefaultHAPort
	}
	if port < 1 || port > 65535 {
		return bad("port %d (1 to 65535)", h.Port)
	}
	local, err := netip.ParseAddr(h.Local)
	if err != nil || !local.Is4() {
		return bad("local %q: an IPv4 address is needed", h.Local)
	}
	peer, err := netip.ParseAddr(h.Peer)
	if err != nil || !peer.Is4() {
		return bad("peer %q: an IPv4 address is needed", h.Peer)
	}
	if peer == local {
		return bad("peer %s is the local address", peer)
	}
	if h.Interface == "" || len(h.Interface) >= 16 || strings.ContainsAny(h.Interface, "/ \t") {
		return bad("interface %q: the sync link's interface is needed", h.Interface)
	}
	lc := ha.LinkConfig{Local: netip.AddrPortFrom(local, uint16(port)), Peer: netip.AddrPortFrom(peer, uint16(port)), Interface: h.Interface}
	switch strings.ToLower(h.Transport) {
	case "", "udp":
		if h.Group != "" {
			return bad("group %q with transport udp", h.Group)
		}
	case "multicast":
		g, err := netip.ParseAddr(h.Group)
		if err != nil || !g.Is4() || !g.IsMulticast() {
			return bad("group %q: an IPv4 multicast address is needed", h.Group)
		}
		lc.Group = g
	default:
		return bad("transport %q (udp or multicast)", h.Transport)
	}
	if _, err := h.checkPort(port); err != nil {
		return ha.LinkConfig{}, err
	}
	if _, err := h.Filter.filter(); err != nil {
		return ha.LinkConfig{}, err
	}
	return lc, nil
}

// haState is the daemon's sync node and what stops it.
type haState struct {
	node *ha.Node
	stop context.CancelFunc
	done chan struct{}
}

// startHA opens the sync link in the daemon's namespace (Start runs in
// it), turns the cores' connection events on and runs the node.
func (d *Daemon) startHA() error {
	if !d.cfg.HA.Enabled() {
		return nil
	}
	lc, err := d.cfg.HA.linkConfig()
	if err != nil {
		return err
	}
	nc, err := d.haNodeConfig(lc)
	if err != nil {
		return err
	}
	n, err := ha.NewNode(nc, d.dp, d.tab)
	if err != nil {
		return fmt.Errorf("ha: %w", err)
	}
	if d.handedRole != ha.RoleUnknown {
		n.RestoreRole(d.handedRole, d.handedRoleSince)
	}
	d.dp.EnableSync()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	d.ha = haState{node: n, stop: cancel, done: done}
	go func() {
		defer close(done)
		if err := n.Run(ctx); err != nil {
			d.emit(Event{Level: slog.LevelError, Msg: "ha sync link stopped", Args: []any{"err", err}})
		}
	}()
	d.emit(info("ha", "local", lc.Local.String(), "peer", lc.Peer.Addr().String(), "interface", lc.Interface,
		"pool_check_port", nc.Check.Port, "fingerprint", nc.Check.Fingerprint.String()))
	return nil
}

// stopHA stops the node, if any.
func (d *Daemon) stopHA() {
	if d.ha.node == nil {
		return
	}
	d.ha.stop()
	<-d.ha.done
}

// committer commits an HA peer's connections into the dataplane once the
// daemon's view of the kernel is current: keepalived adds the NAT
// address and calls the notify script at once, and a committed port on
// one of the box's addresses is steered to xnat only if the address has
// its steering slot already.
type committer struct{ d *Daemon }

func (c committer) Commit(ctx context.Context, flows []flowtable.NewFlow) (dataplane.CommitResult, error) {
	if err := c.d.mirror.Refresh(); err != nil {
		return dataplane.CommitResult{}, fmt.Errorf("kernel view before commit: %w", err)
	}
	return c.d.dp.Commit(ctx, flows)
}

// HA returns the sync node, nil when sync is not configured.
func (d *Daemon) HA() *ha.Node { return d.ha.node }
