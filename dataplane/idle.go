package dataplane

// Idle does a batch's housekeeping without frames: the core's bounded
// expiry sweep (ports of connections that left go back to their
// allocators), the Env pick-up, and the publication of the rule and
// pipeline counters; it counts as a batch in Counters.Batches. A worker
// calls it when its sockets received nothing, so that expiry and port
// reuse do not wait for traffic. It allocates nothing.
func (p *Pipeline) Idle() {
	p.process(nil, nil, nil, nil)
}
