package dataplane

// Owns reports whether a NAT pool of this dataplane holds the external
// endpoint (addr, port) of a source-NAT connection of protocol proto:
// whether Commit could take such a connection (else it counts NoPool).
// Safe from any goroutine.
func (p *Pools) Owns(proto uint8, addr uint32, port uint16) bool {
	_, _, ok := p.owner(proto, addr, port)
	return ok
}
