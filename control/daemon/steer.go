package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"

	"xnat/dataplane/kernel"
	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/dataplane/xdpprog"
	"xnat/flowtable"
	"xnat/portalloc"
)

// heldKey is a local endpoint of DNAT connections that the daemon keeps
// steered to xnat after the rule that made them changed or went.
type heldKey struct {
	addr  uint32
	proto uint8
	port  uint16
}

// steerPlan is what the XDP maps must say for a snapshot and a rule set:
// every interface's DNAT groups, the box's addresses that are external
// addresses of the pools, and the kernel's ephemeral ports.
type steerPlan struct {
	groups    [][]xdpprog.Group // per port (Interfaces order)
	poolAddrs []uint32          // local addresses of the pools, sorted
	locals    []uint32          // every local address
	lp        kernel.LocalPorts
}

// planSteering computes the steering for a snapshot and a rule set and
// checks the NAT pools against the kernel's ephemeral ports. With
// kernelChange the check never refuses (a change of the kernel's view is
// applied whatever it finds; the finding is reported). It changes
// nothing.
func (d *Daemon) planSteering(s *topo.Snapshot, m *rules.Model, kernelChange bool) (*steerPlan, []Event, error) {
	lp, err := d.localPorts()
	if err != nil {
		return nil, nil, err
	}
	p := &steerPlan{lp: lp}
	for _, name := range d.names {
		g, err := dnatGroups(m, name)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: interface %s: %w", ErrConfig, name, err)
		}
		p.groups = append(p.groups, g)
	}
	p.locals = localAddrs(s)
	p.poolAddrs = poolAddrs(s, m, d.names, p.locals)
	mode := d.cfg.LocalPorts
	if kernelChange {
		mode = "warn"
	}
	facts, err := checkLocalPorts(localPoolPorts(m, p.locals), lp, mode, d.cfg.Queues, d.cfg.HA.Enabled())
	if err != nil {
		if !kernelChange {
			return nil, nil, err
		}
		facts = []Event{{Level: slog.LevelError, Msg: "NAT pools and the kernel's ephemeral ports", Args: []any{"err", err}}}
	}
	return p, facts, nil
}

// localPorts reads the kernel's ephemeral ports of the daemon's network
// namespace (through the sysctl files opened at start).
func (d *Daemon) localPorts() (kernel.LocalPorts, error) {
	if d.lpFiles[0] == nil {
		return kernel.ReadLocalPorts()
	}
	var text [2]string
	for i, f := range d.lpFiles {
		buf := make([]byte, 64<<10)
		n, err := f.ReadAt(buf, 0)
		if n == 0 && err != nil {
			return kernel.LocalPorts{}, fmt.Errorf("reading %s: %w", f.Name(), err)
		}
		text[i] = string(buf[:n])
	}
	return kernel.ParseLocalPorts(text[0], text[1])
}

func openLocalPorts() ([2]*os.File, error) {
	var fs [2]*os.File
	for i, p := range []string{kernel.LocalPortRangePath, kernel.LocalReservedPortsPath} {
		f, err := os.Open(p)
		if err != nil {
			if fs[0] != nil {
				fs[0].Close()
			}
			return [2]*os.File{}, fmt.Errorf("kernel local ports: %w", err)
		}
		fs[i] = f
	}
	return fs, nil
}

// localAddrs returns every IPv4 address of the box, sorted.
func localAddrs(s *topo.Snapshot) []uint32 {
	var out []uint32
	for _, ifc := range s.Ifaces {
		for _, a := range ifc.Addrs {
			out = append(out, a.Addr)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// poolAddrs returns the box's addresses that NAT pools translate to: the
// primary address of every xnat interface (MASQUERADE takes the egress
// interface's, an inside one's included, and hairpinning an outside
// one's), and the local addresses within SNAT ranges.
func poolAddrs(s *topo.Snapshot, m *rules.Model, ifaces []string, locals []uint32) []uint32 {
	var out []uint32
	for _, name := range ifaces {
		if ifc, ok := s.IfaceByName(name); ok && len(ifc.Addrs) > 0 {
			out = append(out, ifc.Addrs[0].Addr)
		}
	}
	for _, ch := range m.Tables[rules.NAT].Chains {
		for i := range ch.Rules {
			t := &ch.Rules[i].Target
			if t.Kind != rules.TargetSNAT && (t.Kind != rules.TargetFullCone || t.NAT.Flags&rules.NATMapIPs == 0) {
				continue
			}
			for _, a := range locals {
				if a >= t.NAT.MinAddr && a <= t.NAT.MaxAddr {
					out = append(out, a)
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// localPoolPorts returns the port ranges of the pools that translate to
// the box's own addresses: MASQUERADE targets, SNAT targets whose range
// holds a local address (their --to-ports, or 1024–65535), and the
// default range of hairpinning when there are DNAT rules.
func localPoolPorts(m *rules.Model, locals []uint32) []kernel.PortRange {
	var out []kernel.PortRange
	add := func(r rules.NATRange) {
		pr := kernel.PortRange{Lo: portalloc.DefaultPortLo, Hi: portalloc.DefaultPortHi}
		if r.Flags&rules.NATProtoSpecified != 0 {
			pr = kernel.PortRange{Lo: r.MinPort, Hi: r.MaxPort}
		}
		if !slices.Contains(out, pr) {
			out = append(out, pr)
		}
	}
	for _, ch := range m.Tables[rules.NAT].Chains {
		for i := range ch.Rules {
			t := &ch.Rules[i].Target
			switch t.Kind {
			case rules.TargetMasquerade:
				add(t.NAT)
			case rules.TargetFullCone:
				if t.NAT.Flags&rules.NATMapIPs == 0 {
					add(t.NAT)
					break
				}
				for _, a := range locals {
					if a >= t.NAT.MinAddr && a <= t.NAT.MaxAddr {
						add(t.NAT)
						break
					}
				}
			case rules.TargetSNAT:
				for _, a := range locals {
					if a >= t.NAT.MinAddr && a <= t.NAT.MaxAddr {
						add(t.NAT)
						break
					}
				}
			case rules.TargetDNAT:
				add(rules.NATRange{})
			}
		}
	}
	return out
}

// overlapMsg starts the warning (or error) about NAT pools and the
// kernel's ephemeral ports.
const overlapMsg = "NAT pool overlaps the kernel's ephemeral ports"

// checkLocalPorts compares the pools on the box's own addresses with the
// ports the kernel may pick for its own sockets. Those ports are left to
// the kernel: a pool is created without them, unless its addresses float
// (an HA pair's, floating): both boxes then keep the whole pool, and the
// box's own sockets must be kept off it by reserving its ports. With
// local_ports "refuse" any overlap is an error; a pool left with fewer
// ports than cores is an error either way.
func checkLocalPorts(pools []kernel.PortRange, lp kernel.LocalPorts, mode string, cores int, floating bool) ([]Event, error) {
	var overlaps []string
	for _, r := range pools {
		ov := lp.Overlap(r)
		n := int(r.Hi) - int(r.Lo) + 1
		for _, o := range ov {
			overlaps = append(overlaps, o.String())
			n -= int(o.Hi) - int(o.Lo) + 1
		}
		if n < cores && !floating {
			return nil, fmt.Errorf("%w: NAT pool %s on the box's own address lies within the kernel's ephemeral ports (ip_local_port_range %s), which xnat leaves to the box's own sockets: %d ports remain for %d cores; reserve the pool's ports for xnat with net.ipv4.ip_local_reserved_ports=%s or choose other --to-ports",
				ErrConfig, r, lp.Range, n, cores, r)
		}
	}
	names := make([]string, len(pools))
	for i, r := range pools {
		names[i] = r.String()
	}
	facts := []Event{info("nat pools", "ports", strings.Join(names, ","))}
	if len(overlaps) == 0 {
		return append(facts, info("local ports", "ip_local_port_range", lp.Range.String(), "overlap", "none")), nil
	}
	if mode == "refuse" {
		return nil, fmt.Errorf("%w: %s on the box's own addresses (ip_local_port_range %s, overlap %s; local_ports = \"warn\" accepts it, and xnat then leaves those ports to the kernel)",
			ErrConfig, overlapMsg, lp.Range, strings.Join(overlaps, ","))
	}
	if floating {
		return append(facts, warn(overlapMsg+": in an HA pair xnat keeps the whole pool on both boxes, so that each takes the other's connections with their ports; reserve these ports with net.ipv4.ip_local_reserved_ports to keep the box's own sockets off them",
			"ip_local_port_range", lp.Range.String(), "overlap", strings.Join(overlaps, ","))), nil
	}
	return append(facts, warn(overlapMsg+": xnat leaves these ports to the box's own sockets on its addresses and uses the rest of the pool; reserve them with net.ipv4.ip_local_reserved_ports to give them to xnat",
		"ip_local_port_range", lp.Range.String(), "overlap", strings.Join(overlaps, ","))), nil
}

// kernelRanges are the ports the kernel may give its own sockets.
func kernelRanges(lp kernel.LocalPorts) []portalloc.PortRange {
	var out []portalloc.PortRange
	for _, r := range lp.Overlap(kernel.PortRange{Lo: 0, Hi: 65535}) {
		out = append(out, portalloc.PortRange{Lo: r.Lo, Hi: r.Hi})
	}
	return out
}

// dnatScope is what a rule inherits from the jumps that lead to it.
type dnatScope struct {
	in    rules.Iface
	dst   rules.Addr
	proto uint8
}

// dnatGroups returns the DNAT steering groups of one interface: for every
// nat-table DNAT rule reachable from PREROUTING whose -i (or that of a
// jump leading to it) matches the interface, its destination (-d), its
// protocol (-p) and destination ports (--dport, multiport). Other matches
// are not checked in XDP: a packet they refuse is dropped by xnat as
// unsolicited, so a DNAT rule's ports on its addresses are xnat's on that
// interface. Rules sharing destination and protocol share a group.
func dnatGroups(m *rules.Model, ifname string) ([]xdpprog.Group, error) {
	chains := map[string]*rules.Chain{}
	for i := range m.Tables[rules.NAT].Chains {
		ch := &m.Tables[rules.NAT].Chains[i]
		chains[ch.Name] = ch
	}
	type gkey struct {
		addr, mask uint32
		invert     bool
		proto      uint8
	}
	groups := map[gkey]*xdpprog.Group{}
	var order []gkey
	add := func(k gkey, ports []rules.PortRange) {
		g, ok := groups[k]
		if !ok {
			g = &xdpprog.Group{Addr: k.addr, Mask: k.mask, Invert: k.invert, Proto: k.proto, Ports: new(xdpprog.PortSet)}
			groups[k] = g
			order = append(order, k)
		}
		if g.Ports == nil {
			return
		}
		if ports == nil {
			g.Ports = nil
			return
		}
		for _, r := range ports {
			g.Ports.AddRange(r.Lo, r.Hi)
		}
	}
	var walk func(ch *rules.Chain, sc dnatScope, depth int)
	walk = func(ch *rules.Chain, sc dnatScope, depth int) {
		if depth > 32 {
			return
		}
		for i := range ch.Rules {
			r := &ch.Rules[i]
			rs := sc
			if r.InIface.Name != "" || r.InIface.Invert {
				rs.in = r.InIface
			}
			if r.Dst.Mask != 0 || r.Dst.Invert {
				rs.dst = r.Dst
			}
			if r.Proto != 0 && !r.ProtoInvert {
				rs.proto = r.Proto
			} else if r.ProtoInvert {
				rs.proto = 0
			}
			switch r.Target.Kind {
			case rules.TargetJump, rules.TargetGoto:
				if next, ok := chains[r.Target.Chain]; ok && !next.Builtin {
					walk(next, rs, depth+1)
				}
				continue
			case rules.TargetDNAT:
			default:
				continue
			}
			if !ifaceMatches(rs.in, ifname) {
				continue
			}
			k := gkey{addr: rs.dst.IP & rs.dst.Mask, mask: rs.dst.Mask, invert: rs.dst.Invert, proto: rs.proto}
			var ports []rules.PortRange
			if rs.proto == flowtable.ProtoTCP || rs.proto == flowtable.ProtoUDP {
				ports = dnatPorts(r)
			}
			add(k, ports)
		}
	}
	for i := range m.Tables[rules.NAT].Chains {
		ch := &m.Tables[rules.NAT].Chains[i]
		if ch.Builtin && ch.Hook == rules.Prerouting {
			walk(ch, dnatScope{}, 0)
		}
	}
	out := make([]xdpprog.Group, 0, len(order))
	for _, k := range order {
		out = append(out, *groups[k])
	}
	if len(out) > xdpprog.MaxDNATGroups {
		// Too many destinations: one group per protocol, any local
		// destination (more than the rules take, never less).
		byProto := map[uint8]*xdpprog.Group{}
		var protos []uint8
		for _, g := range out {
			h, ok := byProto[g.Proto]
			if !ok {
				h = &xdpprog.Group{Proto: g.Proto, Ports: new(xdpprog.PortSet)}
				byProto[g.Proto] = h
				protos = append(protos, g.Proto)
			}
			switch {
			case h.Ports == nil:
			case g.Ports == nil:
				h.Ports = nil
			default:
				for i := range h.Ports {
					h.Ports[i] |= g.Ports[i]
				}
			}
		}
		sort.Slice(protos, func(i, j int) bool { return protos[i] < protos[j] })
		out = out[:0]
		for _, p := range protos {
			out = append(out, *byProto[p])
		}
	}
	return out, nil
}

// dnatPorts returns a DNAT rule's destination ports, nil for every port
// (no port match, or a negated one).
func dnatPorts(r *rules.Rule) []rules.PortRange {
	var ranges []rules.PortRange
	for _, mt := range r.Matches {
		switch mt.Kind {
		case rules.MatchTCP, rules.MatchUDP:
			if mt.DstPort != rules.AllPorts && !mt.DstPortInvert {
				ranges = append(ranges, mt.DstPort)
			}
		case rules.MatchMultiport:
			if !mt.Invert && (mt.Multi == rules.MultiDest || mt.Multi == rules.MultiEither) {
				ranges = append(ranges, mt.Ports...)
			}
		}
	}
	return ranges
}

// ifaceMatches reports whether an -i match takes interface name.
func ifaceMatches(m rules.Iface, name string) bool {
	if m.Name == "" {
		return !m.Invert
	}
	ok := m.Name == name
	if p, wild := strings.CutSuffix(m.Name, "+"); wild {
		ok = strings.HasPrefix(name, p)
	}
	return ok != m.Invert
}

// groupsMatch reports whether a packet to addr (proto, port) would be
// taken by one of the groups.
func groupsMatch(gs []xdpprog.Group, k heldKey) bool {
	for _, g := range gs {
		if g.Proto != 0 && g.Proto != k.proto {
			continue
		}
		if (k.addr&g.Mask == g.Addr&g.Mask) == g.Invert {
			continue
		}
		if g.Ports == nil || g.Ports.Has(k.port) {
			return true
		}
	}
	return false
}

// prepareSlots gives a use-count slot to every address of the plan's
// pools that has none yet (SlotAll when none is left), and publishes the
// slots and the kernel's ephemeral ports to the port allocators, before
// the Env that creates the plan's pools. Called with mu held.
func (d *Daemon) prepareSlots(p *steerPlan) {
	for _, a := range p.poolAddrs {
		d.ensureSlot(a)
	}
	d.publishSlots()
	d.steer.SetKernelPorts(kernelRanges(p.lp))
}

// ensureSlot returns the address's slot, giving it one if it has none.
// Called with mu held.
func (d *Daemon) ensureSlot(a uint32) uint32 {
	if s, ok := d.slots[a]; ok {
		return s
	}
	used := make([]bool, d.filter.Slots())
	for _, s := range d.slots {
		if int(s) < len(used) {
			used[s] = true
		}
	}
	for i, u := range used {
		if !u {
			d.slots[a] = uint32(i)
			return uint32(i)
		}
	}
	d.slots[a] = xdpprog.SlotAll
	d.emit(warn("no use-count slot left for an external address: xnat takes every TCP and UDP port and echo id of it, the box's own sockets on it included",
		"address", flowtable.FormatAddr(a), "slots", len(used)))
	return xdpprog.SlotAll
}

// publishSlots gives the port allocators the slot table. Called with mu
// held.
func (d *Daemon) publishSlots() {
	m := make(map[uint32]uint32, len(d.slots))
	for a, s := range d.slots {
		m[a] = s
	}
	if err := d.steer.SetAddrs(m); err != nil {
		d.emit(warn("steering slots", "err", err))
	}
}

// writeLocals writes the box's addresses with their slots into the XDP
// locals map, and the broadcast addresses of its subnets (the kernel's, as
// its local routing table has them) without one. Called with mu held.
func (d *Daemon) writeLocals(locals []uint32) error {
	ls := make([]xdpprog.Local, 0, len(locals))
	seen := map[uint32]bool{}
	add := func(a, slot uint32) {
		if !seen[a] {
			seen[a] = true
			ls = append(ls, xdpprog.Local{Addr: [4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}, Slot: slot})
		}
	}
	for _, a := range locals {
		slot := uint32(xdpprog.NoSlot)
		if s, ok := d.slots[a]; ok {
			slot = s
		}
		add(a, slot)
	}
	if d.snap != nil {
		for _, ifc := range d.snap.Ifaces {
			for _, p := range ifc.Addrs {
				if p.Len > 0 && p.Len <= 30 {
					add(p.Addr|^uint32(0)>>p.Len, xdpprog.SlotBroadcast)
				}
			}
		}
	}
	return d.filter.SetLocals(ls)
}

// commitSteering makes the XDP maps say what the plan says, once the
// Env built for it is ready to be swapped in: the endpoints of live DNAT
// connections that the new groups no longer take are held first, then
// the locals map and every program's groups are written. Called with mu
// held.
func (d *Daemon) commitSteering(p *steerPlan) error {
	old := d.groups
	d.groups = p.groups
	if old != nil && !groupsEqual(old, p.groups) {
		d.retire(old, p.groups, p.locals)
		d.retireFrom = old
	}
	if err := d.writeLocals(p.locals); err != nil {
		return err
	}
	if d.io == nil {
		return nil
	}
	for i, prog := range d.io.progs {
		if prog == nil {
			continue
		}
		// A program closed meanwhile is being replaced; its successor
		// takes the groups in force when it is swapped in.
		if err := prog.SetDNAT(p.groups[i]); err != nil && !errors.Is(err, xdpprog.ErrClosed) {
			return fmt.Errorf("DNAT steering of %s: %w", d.names[i], err)
		}
	}
	return nil
}

func groupsEqual(a, b [][]xdpprog.Group) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			x, y := a[i][j], b[i][j]
			if x.Addr != y.Addr || x.Mask != y.Mask || x.Invert != y.Invert || x.Proto != y.Proto || (x.Ports == nil) != (y.Ports == nil) ||
				x.Ports != nil && *x.Ports != *y.Ports {
				return false
			}
		}
	}
	return true
}

// dnatEndpoints returns the local endpoints (address, protocol,
// destination port) of live destination-translated TCP and UDP
// connections to the box's addresses. A TCP connection that has ended —
// TIME_WAIT, CLOSE, or LAST_ACK (both sides have sent their FIN; only the
// last ACK is to come) — needs its endpoint no more.
func (d *Daemon) dnatEndpoints(locals []uint32) map[heldKey]bool {
	out := map[heldKey]bool{}
	var buf [256]flowtable.FlowInfo
	for cursor := 0; cursor >= 0; {
		var n int
		n, cursor = d.tab.List(cursor, buf[:])
		for i := range buf[:n] {
			fi := &buf[i]
			if fi.Status&flowtable.FlagDstNAT == 0 || fi.Orig.Proto != flowtable.ProtoTCP && fi.Orig.Proto != flowtable.ProtoUDP {
				continue
			}
			if st := fi.State(); st == flowtable.TCPTimeWait || st == flowtable.TCPClose || st == flowtable.TCPLastAck {
				continue
			}
			if _, ok := slices.BinarySearch(locals, fi.Orig.Dst); !ok {
				continue
			}
			out[heldKey{fi.Orig.Dst, fi.Orig.Proto, fi.Orig.DstPort}] = true
		}
	}
	return out
}

// retire holds the endpoints of live DNAT connections that an interface's
// old groups took and its new ones do not, so that their packets keep
// reaching xnat until they end (the control goroutine lets go of them
// then). Called with mu held.
func (d *Daemon) retire(old, cur [][]xdpprog.Group, locals []uint32) {
	var keys []heldKey
	for k := range d.dnatEndpoints(locals) {
		if d.dnatHeld[k] {
			continue
		}
		for i := range old {
			if i < len(cur) && groupsMatch(old[i], k) && !groupsMatch(cur[i], k) {
				keys = append(keys, k)
				break
			}
		}
	}
	if len(keys) == 0 {
		return
	}
	for _, k := range keys {
		d.ensureSlot(k.addr)
	}
	d.publishSlots()
	for _, k := range keys {
		d.steer.Hold(k.addr, k.proto, k.port)
		d.dnatHeld[k] = true
	}
	d.emit(info("DNAT connections kept steered after their rule changed", "endpoints", len(keys)))
}

// retirePending, once every core uses the rules of a change that took
// DNAT groups away, holds the endpoints of the connections the old rules
// created after the change's own look. Called by the control goroutine.
func (d *Daemon) retirePending() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.retireFrom == nil || d.settle != nil || d.stopped {
		return
	}
	d.retire(d.retireFrom, d.groups, localAddrs(d.snap))
	d.retireFrom = nil
}

// releaseRetired lets go of held DNAT endpoints that no live connection
// uses any more. Called by the control goroutine.
func (d *Daemon) releaseRetired() {
	d.mu.Lock()
	if len(d.dnatHeld) == 0 {
		d.mu.Unlock()
		return
	}
	locals := localAddrs(d.snap)
	d.mu.Unlock()
	live := d.dnatEndpoints(locals)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	for k := range d.dnatHeld {
		if !live[k] {
			d.steer.Drop(k.addr, k.proto, k.port)
			delete(d.dnatHeld, k)
		}
	}
}

// gcSlots frees the slots of addresses that are no pool's and no held
// endpoint's once nothing is counted in them, so that an outside address
// that changes does not use slots up. Called by the control goroutine.
func (d *Daemon) gcSlots() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped || d.settle != nil || d.snap == nil {
		return
	}
	locals := localAddrs(d.snap)
	want := map[uint32]bool{}
	for _, a := range poolAddrs(d.snap, d.model, d.names, locals) {
		want[a] = true
	}
	for k := range d.dnatHeld {
		want[k.addr] = true
	}
	changed := false
	for a, s := range d.slots {
		if want[a] || s != xdpprog.SlotAll && d.steer.SlotHeld(s) {
			continue
		}
		if s == xdpprog.SlotAll && d.dp.Pools.Stats().PortsInUse != 0 {
			continue // its connections are not counted: wait for none at all
		}
		delete(d.slots, a)
		changed = true
	}
	if changed {
		d.publishSlots()
		if err := d.writeLocals(locals); err != nil {
			d.emit(warn("updating the XDP maps", "err", err))
		}
	}
}
