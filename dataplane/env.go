package dataplane

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"

	"xnat/dataplane/rules"
	"xnat/dataplane/topo"
	"xnat/flowtable"
	"xnat/portalloc"
)

// MaxPorts is the most interfaces one dataplane forwards between.
const MaxPorts = 16

// Port is an interface the dataplane forwards on. Its ID is its index in
// Env.Ports and the interface ID the rule set was compiled with.
type Port struct {
	ID      uint16
	IfIndex int
	Name    string
	MAC     [6]byte
	MTU     int
	Outside bool     // faces the outside world (unsolicited traffic is dropped here)
	Addrs   []uint32 // IPv4 addresses, primary first
	Up      bool
}

// Primary returns the port's primary address, 0 if it has none.
func (p *Port) Primary() uint32 {
	if len(p.Addrs) == 0 {
		return 0
	}
	return p.Addrs[0]
}

// route is a compiled route: prefixes sorted longest first.
type route struct {
	dst     topo.Prefix
	gateway uint32
	port    uint16
}

// poolKey names a NAT pool: a rule set's SNAT target (by its range), or
// MASQUERADE/hairpin on one address.
type poolKey struct {
	lo, hi     uint32
	plo, phi   uint16
	masquerade bool
}

// hairpinTarget marks the implicit source NAT of hairpinned connections.
const hairpinTarget = ^uint16(0)

// Env is everything the packet path reads that changes only by
// replacement: the ports, the routes and neighbours, the box's addresses,
// the compiled rules and which NAT pool serves which target. It is
// immutable; the control path builds a new one with NewEnv and the
// pipelines pick it up at their next batch.
type Env struct {
	Ports  []Port
	Rules  *rules.Ruleset
	routes []route
	// rpRoutes are every route, for the reverse-path filter (rpfilter.go).
	rpRoutes []rpRoute
	// neighs are the snapshot's neighbours, which a new Dataplane's
	// neighbour table starts with.
	neighs []topo.Neigh
	local  map[uint32]uint16 // box address -> port that has it
	// bcast are the directed broadcast addresses of the ports' subnets.
	bcast []uint32
	// NAT pools by target: SNAT targets by ID, MASQUERADE targets by ID and
	// egress port (every port with an address), hairpin by outside port
	// (hairpinTarget).
	snatPool map[uint16]uint16
	masqPool map[[2]uint16]uint16
	// fullCone: the rules have a FULLCONENAT target.
	fullCone bool
	gen      uint64
}

// outsideAddr reports whether a is the address of an outside port.
func (e *Env) outsideAddr(a uint32) bool {
	hp, ok := e.local[a]
	return ok && hp != NoPort && e.Ports[hp].Outside
}

// EnvConfig says what an Env is built from.
type EnvConfig struct {
	Snapshot *topo.Snapshot
	// Inside and Outside name the interfaces xnat forwards between.
	Inside, Outside []string
	// Model is the rule set; it is compiled for the ports here.
	Model *rules.Model
	// Prev is the Env being replaced (counters and pools carry over).
	Prev *Env
	// Pools is the registry of NAT pools shared by every Env of one
	// dataplane.
	Pools *Pools
}

// ErrEnv is returned for an Env that cannot be built.
var ErrEnv = errors.New("invalid dataplane environment")

var envGen atomic.Uint64

// NewEnv compiles an Env. It validates everything before anything is
// used: on error nothing changes.
func NewEnv(cfg EnvConfig) (*Env, error) {
	if cfg.Snapshot == nil || cfg.Pools == nil || cfg.Model == nil {
		return nil, fmt.Errorf("%w: snapshot, pools and model are required", ErrEnv)
	}
	names := append(append([]string(nil), cfg.Inside...), cfg.Outside...)
	if len(names) == 0 || len(names) > MaxPorts {
		return nil, fmt.Errorf("%w: %d interfaces (1 to %d)", ErrEnv, len(names), MaxPorts)
	}
	env := &Env{
		local:    map[uint32]uint16{},
		snatPool: map[uint16]uint16{},
		masqPool: map[[2]uint16]uint16{},
		gen:      envGen.Add(1),
	}
	byIndex := map[int]uint16{}
	for i, name := range names {
		for _, p := range env.Ports {
			if p.Name == name {
				return nil, fmt.Errorf("%w: interface %q named twice", ErrEnv, name)
			}
		}
		ifc, ok := cfg.Snapshot.IfaceByName(name)
		if !ok {
			return nil, fmt.Errorf("%w: no interface %q", ErrEnv, name)
		}
		p := Port{ID: uint16(i), IfIndex: ifc.Index, Name: name, MAC: ifc.MAC, MTU: ifc.MTU, Outside: i >= len(cfg.Inside), Up: ifc.Up}
		if p.MTU <= 0 {
			p.MTU = 1500
		}
		for _, a := range ifc.Addrs {
			p.Addrs = append(p.Addrs, a.Addr)
			env.local[a.Addr] = p.ID
			if a.Len < 31 {
				env.bcast = append(env.bcast, a.Addr|^uint32(0)>>a.Len)
			}
		}
		byIndex[ifc.Index] = p.ID
		env.Ports = append(env.Ports, p)
	}
	// Every address of the box counts as local, not only the ports'.
	for _, ifc := range cfg.Snapshot.Ifaces {
		for _, a := range ifc.Addrs {
			if _, ok := env.local[a.Addr]; !ok {
				env.local[a.Addr] = NoPort
			}
		}
	}
	for _, r := range cfg.Snapshot.Routes {
		if port, ok := byIndex[r.IfIndex]; ok {
			env.routes = append(env.routes, route{dst: r.Dst, gateway: r.Gateway, port: port})
		}
	}
	sort.SliceStable(env.routes, func(i, j int) bool { return env.routes[i].dst.Len > env.routes[j].dst.Len })
	env.rpRoutes = compileRPRoutes(cfg.Snapshot.Routes, byIndex)
	env.neighs = cfg.Snapshot.Neighs
	var prevRules *rules.Ruleset
	if cfg.Prev != nil {
		prevRules = cfg.Prev.Rules
	}
	rs, err := rules.Compile(cfg.Model, names, rules.Options{Cores: cfg.Pools.cores, Prev: prevRules, Log: cfg.Pools.log})
	if err != nil {
		return nil, fmt.Errorf("compiling rules: %w", err)
	}
	env.Rules = rs
	// Pools: every SNAT target, every MASQUERADE target on every port with
	// an address (as Linux, MASQUERADE takes the egress interface's
	// address, an inside one included: a hairpinned connection leaves
	// through the port it came in on), and hairpinning on every outside
	// address.
	for _, tg := range rs.NATTargets() {
		var err error
		switch tg.Kind {
		case rules.NATSNAT:
			err = env.addSNATPool(cfg.Pools, tg)
		case rules.NATFullCone:
			// With --to-source, FULLCONENAT takes its range as SNAT
			// does; without, each port's address as MASQUERADE does.
			env.fullCone = true
			if tg.Range.Flags&rules.NATMapIPs != 0 {
				err = env.addSNATPool(cfg.Pools, tg)
			} else {
				err = env.addMasqPools(cfg.Pools, tg.ID, tg.Range, false)
			}
		case rules.NATMasquerade:
			err = env.addMasqPools(cfg.Pools, tg.ID, tg.Range, false)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := env.addMasqPools(cfg.Pools, hairpinTarget, rules.NATRange{}, true); err != nil {
		return nil, err
	}
	return env, nil
}

// addSNATPool gives target tg the pool of its address range.
func (e *Env) addSNATPool(pools *Pools, tg rules.NATTarget) error {
	id, err := pools.get(poolFor(tg.Range.MinAddr, tg.Range.MaxAddr, tg.Range, false))
	if err != nil {
		return err
	}
	e.snatPool[tg.ID] = id
	return nil
}

// addMasqPools gives target id, on every port with an address (only the
// outside ones when outsideOnly), the pool of that address with r's
// ports.
func (e *Env) addMasqPools(pools *Pools, id uint16, r rules.NATRange, outsideOnly bool) error {
	for _, p := range e.Ports {
		if a := p.Primary(); a != 0 && (p.Outside || !outsideOnly) {
			pid, err := pools.get(poolFor(a, a, r, true))
			if err != nil {
				return err
			}
			e.masqPool[[2]uint16{id, p.ID}] = pid
		}
	}
	return nil
}

func poolFor(lo, hi uint32, r rules.NATRange, masq bool) poolKey {
	k := poolKey{lo: lo, hi: hi, masquerade: masq}
	if r.Flags&rules.NATProtoSpecified != 0 {
		k.plo, k.phi = r.MinPort, r.MaxPort
	}
	return k
}

// NoPort is "no port".
const NoPort = ^uint16(0)

// martian says whether a router must not forward a packet from src to
// dst (RFC 1812 4.2.2.11, 5.3.7; Linux's ip_route_input_slow): a limited
// or directed broadcast or a multicast destination is the box's own
// (ReasonBroadcast: DHCP, VRRP, routing protocols), and a source or
// destination in 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16 (link-local:
// never routed, RFC 3927) or 240.0.0.0/4, or a multicast or broadcast
// source, is a martian (ReasonMartian). ReasonNone for a packet that may
// be forwarded.
func (e *Env) martian(src, dst uint32) Reason {
	if dst == 0xffffffff || dst>>28 == 0xe {
		return ReasonBroadcast
	}
	for _, b := range e.bcast {
		if dst == b {
			return ReasonBroadcast
		}
		if src == b {
			return ReasonMartian
		}
	}
	if martianAddr(src) || src>>28 == 0xe || martianAddr(dst) {
		return ReasonMartian
	}
	return ReasonNone
}

// martianAddr reports an address no router forwards to or from.
func martianAddr(a uint32) bool {
	n := a >> 24
	return n == 0 || n == 127 || a>>28 == 0xf || a>>16 == 0xa9fe
}

// lookupRoute finds the route for dst: the egress port and the next hop.
func (e *Env) lookupRoute(dst uint32) (port uint16, nexthop uint32, ok bool) {
	for i := range e.routes {
		r := &e.routes[i]
		if r.dst.Contains(dst) {
			if r.gateway != 0 {
				return r.port, r.gateway, true
			}
			return r.port, dst, true
		}
	}
	return 0, 0, false
}

// Pools is the registry of NAT pools of one dataplane: a pool is created
// once, when an Env first needs it, with one allocator per core, and lives
// as long as the dataplane, so that connections keep the pool they took
// their port from across rule-set and address changes. Pool IDs start at
// 1; a connection's flow-table caller word holds its pool's ID.
type Pools struct {
	mu      sync.Mutex
	byKey   map[poolKey]uint16
	list    atomic.Pointer[[]*pool] // index ID-1; copy on write
	cores   int
	paState *portalloc.Shared // port allocators' shared state
	log     *rules.LogRings
	steer   *portalloc.Steering // the box's own addresses (SetSteering)
}

type pool struct {
	key    poolKey
	allocs []*portalloc.Allocator
}

// NewPools makes a registry for cores worker cores with a shared
// per-source limiter (may be nil).
func NewPools(cores int, limiter *portalloc.SourceLimiter) *Pools {
	p := &Pools{byKey: map[poolKey]uint16{}, cores: cores, paState: portalloc.NewShared(cores, limiter), log: rules.NewLogRings(cores, rules.DefaultLogCapacity, 10, 50)}
	empty := []*pool{}
	p.list.Store(&empty)
	return p
}

// SetSteering gives every pool created from now on the steering of the
// box's own addresses (portalloc.Pool.Steering).
func (p *Pools) SetSteering(s *portalloc.Steering) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.steer = s
}

// Limiter returns the per-source limiter.
func (p *Pools) Limiter() *portalloc.SourceLimiter { return p.paState.Limiter() }

// LogRings returns where LOG rules record.
func (p *Pools) LogRings() *rules.LogRings { return p.log }

func (p *Pools) get(k poolKey) (uint16, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if id, ok := p.byKey[k]; ok {
		return id, nil
	}
	old := *p.list.Load()
	if len(old) >= 1<<16-2 {
		return 0, fmt.Errorf("%w: too many NAT pools", ErrEnv)
	}
	allocs, err := portalloc.New(portalloc.Pool{AddrLo: k.lo, AddrHi: k.hi, PortLo: k.plo, PortHi: k.phi, Steering: p.steer}, p.cores, p.paState)
	if err != nil {
		return 0, fmt.Errorf("NAT pool %s-%s: %w", flowtable.FormatAddr(k.lo), flowtable.FormatAddr(k.hi), err)
	}
	list := append(append([]*pool(nil), old...), &pool{key: k, allocs: allocs})
	p.list.Store(&list)
	id := uint16(len(list))
	p.byKey[k] = id
	return id, nil
}

// allocator returns core's allocator of pool id (1-based), or nil.
func (p *Pools) allocator(id uint16, core int) *portalloc.Allocator {
	list := *p.list.Load()
	if id == 0 || int(id) > len(list) {
		return nil
	}
	return list[id-1].allocs[core]
}

// Stats sums every pool's allocator counters.
func (p *Pools) Stats() portalloc.Stats {
	var s portalloc.Stats
	for _, pl := range *p.list.Load() {
		for _, a := range pl.allocs {
			s.Add(a.Stats())
		}
	}
	return s
}

// owner finds the pool and the core whose allocator owns the external
// endpoint (addr, port) of a connection of protocol proto: the first pool
// whose addresses and ports hold it. ok is false when none does.
func (p *Pools) owner(proto uint8, addr uint32, port uint16) (id uint16, core int, ok bool) {
	for i, pl := range *p.list.Load() {
		for c, a := range pl.allocs {
			if a.Owns(proto, addr, port) {
				return uint16(i + 1), c, true
			}
		}
	}
	return 0, 0, false
}
