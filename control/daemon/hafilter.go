package daemon

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"

	"xnat/control/ha"
	"xnat/control/iptables"
	"xnat/dataplane/rules"
	"xnat/flowtable"
)

// HAFilterConfig is the [ha.filter] section: which of this box's
// connections are sent to the peer, as conntrackd's General { Filter From
// Userspace { ... } } section says it. Each kind is an accept list (only
// what it names is sent) or an ignore list (what it names is not sent),
// not both; a kind without a list does not filter.
//
//	Protocol Accept { TCP UDP }               protocol_accept = ["tcp", "udp"]
//	Address Ignore { IPv4_address 10.0.0.0/8 } address_ignore = ["10.0.0.0/8"]
//	State Accept { ESTABLISHED CLOSE for TCP } state_accept = ["established", "close"]
type HAFilterConfig struct {
	// Protocol names (tcp, udp, icmp, sctp, ...) or numbers.
	ProtocolAccept []string `toml:"protocol_accept"`
	ProtocolIgnore []string `toml:"protocol_ignore"`
	// IPv4 addresses or networks, matched against a connection's
	// original source and its reply source (the real destination).
	AddressAccept []string `toml:"address_accept"`
	AddressIgnore []string `toml:"address_ignore"`
	// TCP states, by conntrackd's names: syn_sent, syn_recv,
	// established, fin_wait, close_wait, last_ack, time_wait, close,
	// listen.
	StateAccept []string `toml:"state_accept"`
	StateIgnore []string `toml:"state_ignore"`
}

// filter compiles the section (nil: no filter).
func (f *HAFilterConfig) filter() (*ha.Filter, error) {
	if f == nil {
		return nil, nil
	}
	flt, err := ha.NewFilter(ha.FilterSpec{
		ProtocolAccept: f.ProtocolAccept, ProtocolIgnore: f.ProtocolIgnore,
		AddressAccept: f.AddressAccept, AddressIgnore: f.AddressIgnore,
		StateAccept: f.StateAccept, StateIgnore: f.StateIgnore,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: ha.filter: %w", ErrConfig, err)
	}
	return flt, nil
}

// checkPort returns the pool check's port: check_port, or the sync
// port's next.
func (h *HAConfig) checkPort(syncPort int) (uint16, error) {
	p := h.CheckPort
	if p == 0 {
		p = syncPort + 1
	}
	if p < 1 || p > 65535 || p == syncPort {
		return 0, fmt.Errorf("%w: ha: check_port %d (1 to 65535, not the sync port %d)", ErrConfig, p, syncPort)
	}
	return uint16(p), nil
}

// PoolFingerprint is what an xnat HA pair compares (the pool check): the
// SHA-256 of the rule set's NAT pools, each SNAT (and FULLCONENAT
// --to-source) range sorted, then the rules as iptables-save prints them
// without counters. MASQUERADE pools are not in it: their addresses are
// each box's own (and the moving address is on one box at a time).
func PoolFingerprint(m *rules.Model) (ha.Fingerprint, error) {
	var b bytes.Buffer
	b.WriteString("xnat pools and rules 1\n")
	var pools []string
	for t := range m.Tables {
		for _, c := range m.Tables[t].Chains {
			for i := range c.Rules {
				tg := &c.Rules[i].Target
				if (tg.Kind != rules.TargetSNAT && tg.Kind != rules.TargetFullCone) || tg.NAT.Flags&rules.NATMapIPs == 0 {
					continue
				}
				p := "pool " + flowtable.FormatAddr(tg.NAT.MinAddr) + "-" + flowtable.FormatAddr(tg.NAT.MaxAddr)
				if tg.NAT.Flags&rules.NATProtoSpecified != 0 {
					p += fmt.Sprintf(" ports %d-%d", tg.NAT.MinPort, tg.NAT.MaxPort)
				}
				pools = append(pools, p+"\n")
			}
		}
	}
	slices.Sort(pools)
	for _, p := range slices.Compact(pools) {
		b.WriteString(p)
	}
	b.WriteString("rules\n")
	if err := iptables.WriteSave(&b, m, iptables.SaveOptions{}); err != nil {
		return ha.Fingerprint{}, fmt.Errorf("pool fingerprint: %w", err)
	}
	return sha256.Sum256(b.Bytes()), nil
}

// haNodeConfig completes the node's configuration: the filter, the pool
// check with the rules' fingerprint, the dataplane's pools for the
// per-connection check, and the daemon's log of the peer's state.
func (d *Daemon) haNodeConfig(lc ha.LinkConfig) (ha.NodeConfig, error) {
	flt, err := d.cfg.HA.Filter.filter()
	if err != nil {
		return ha.NodeConfig{}, err
	}
	port, err := d.cfg.HA.checkPort(int(lc.Local.Port()))
	if err != nil {
		return ha.NodeConfig{}, err
	}
	fp, err := PoolFingerprint(d.model)
	if err != nil {
		return ha.NodeConfig{}, err
	}
	return ha.NodeConfig{Link: lc, Committer: committer{d}, Filter: flt, Owns: d.dp.Pools.Owns,
		Check:  ha.CheckConfig{Port: port, Fingerprint: fp},
		OnPeer: d.haPeerChanged}, nil
}

// haPeerChanged reports the pool check's view of the peer.
func (d *Daemon) haPeerChanged(_, s ha.PeerState) {
	switch s {
	case ha.PeerSame:
		d.emit(info("ha peer has the same NAT pools and rules"))
	case ha.PeerDiffers:
		d.emit(warn("ha peer's NAT pools or rules differ from this box's: its connections are refused (xnatctl ha status)"))
	case ha.PeerUnchecked:
		d.emit(info("ha peer did not announce its NAT pools (a conntrackd?): pool unchecked, each of its connections is checked against this box's NAT pools"))
	}
}

// haRulesChanged announces a new rule set's fingerprint to the peer.
// Called with mu held.
func (d *Daemon) haRulesChanged(m *rules.Model) {
	if d.ha.node == nil {
		return
	}
	fp, err := PoolFingerprint(m)
	if err != nil {
		d.emit(warn("ha pool fingerprint", "err", err))
		return
	}
	d.ha.node.SetFingerprint(fp)
}
