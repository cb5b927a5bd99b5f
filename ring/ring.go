package ring

import "sync/atomic"

// Desc is one packet in the UMEM: the address of its first byte (an
// offset into the UMEM) and its length. Its layout is the kernel's
// struct xdp_desc, so rings hold Descs directly.
type Desc struct {
	Addr    uint64
	Len     uint32
	Options uint32
}

// The four rings are single-producer single-consumer queues shared with
// the kernel. The side this process owns keeps a cached copy of its own
// index (which only it writes) and a cached copy of the other side's
// index (refreshed with an atomic load only when the cache says the
// ring is full or empty). See doc.go for the memory ordering.

// prodRing is a ring this process produces into (fill, TX).
type prodRing struct {
	producer   *uint32 // shared, written by us
	consumer   *uint32 // shared, written by the kernel
	flags      *uint32 // shared, XDP_RING_NEED_WAKEUP set by the kernel
	cachedProd uint32
	cachedCons uint32 // the kernel's consumer as last loaded
	size       uint32
	mask       uint32
}

// free returns how many entries can be produced, up to want, loading the
// kernel's consumer index only if the cached one does not leave room.
func (r *prodRing) free(want uint32) uint32 {
	n := r.size - (r.cachedProd - r.cachedCons)
	if n >= want {
		return want
	}
	r.cachedCons = atomic.LoadUint32(r.consumer) // acquire: the kernel is done with those slots
	n = r.size - (r.cachedProd - r.cachedCons)
	if n > want {
		return want
	}
	return n
}

// submit publishes n entries written after cachedProd.
func (r *prodRing) submit(n uint32) {
	r.cachedProd += n
	atomic.StoreUint32(r.producer, r.cachedProd) // release: entries before index
}

// pending returns how many produced entries the kernel has not consumed.
func (r *prodRing) pending() uint32 {
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r.cachedProd - r.cachedCons
}

func (r *prodRing) needWakeup() bool {
	return atomic.LoadUint32(r.flags)&xdpRingNeedWakeup != 0
}

// consRing is a ring this process consumes from (RX, completion).
type consRing struct {
	producer   *uint32 // shared, written by the kernel
	consumer   *uint32 // shared, written by us
	flags      *uint32
	cachedProd uint32 // the kernel's producer as last loaded
	cachedCons uint32
	size       uint32
	mask       uint32
}

// available returns how many entries can be consumed, up to want,
// loading the kernel's producer index only if the cache shows fewer.
func (r *consRing) available(want uint32) uint32 {
	n := r.cachedProd - r.cachedCons
	if n >= want {
		return want
	}
	r.cachedProd = atomic.LoadUint32(r.producer) // acquire: entries before index are written
	n = r.cachedProd - r.cachedCons
	if n > want {
		return want
	}
	return n
}

// release gives n consumed entries back to the kernel.
func (r *consRing) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons) // release: we are done reading them
}

// ready reports whether the kernel has produced entries not yet
// consumed, with a fresh load.
func (r *consRing) ready() bool {
	r.cachedProd = atomic.LoadUint32(r.producer)
	return r.cachedProd != r.cachedCons
}

const xdpRingNeedWakeup = 1 // XDP_RING_NEED_WAKEUP
