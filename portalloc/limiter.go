package portalloc

import (
	"errors"
	"fmt"
	"math/bits"
	"sync/atomic"
)

// SourceLimiter counts connections per inside source address and refuses
// new ones beyond a limit (0: no limit). It is shared by all cores.
type SourceLimiter struct {
	limit     atomic.Int64
	untracked atomic.Uint64
	refused   atomic.Uint64
	slots     []atomic.Uint64 // addr<<32 | bound | count
	mask      uint64
}

const (
	slotBound = 1 << 31
	countMask = slotBound - 1
)

// ErrLimiter is returned for a bad limiter configuration.
var ErrLimiter = errors.New("invalid per-source limiter")

// NewSourceLimiter makes a limiter able to track hosts distinct inside
// addresses (its table has twice as many slots, 8 bytes each).
func NewSourceLimiter(limit, hosts int) (*SourceLimiter, error) {
	if limit < 0 || limit > countMask {
		return nil, fmt.Errorf("%w: limit %d", ErrLimiter, limit)
	}
	if hosts < 1 || hosts > 1<<26 {
		return nil, fmt.Errorf("%w: %d hosts (1 to %d)", ErrLimiter, hosts, 1<<26)
	}
	n := uint64(1) << bits.Len64(uint64(2*hosts-1))
	l := &SourceLimiter{slots: make([]atomic.Uint64, n), mask: n - 1}
	l.limit.Store(int64(limit))
	return l, nil
}

// SetLimit changes the limit (0 turns it off); connections already over a
// lowered limit stay.
func (l *SourceLimiter) SetLimit(n int) error {
	if n < 0 || n > countMask {
		return fmt.Errorf("%w: limit %d", ErrLimiter, n)
	}
	l.limit.Store(int64(n))
	return nil
}

// Limit returns the limit.
func (l *SourceLimiter) Limit() int { return int(l.limit.Load()) }

func (l *SourceLimiter) home(src uint32) uint64 {
	return (uint64(src) * 0x9E3779B97F4A7C15) >> 32 & l.mask
}

// Acquire counts one more connection for src, or refuses it (false) when
// the limit is reached.
func (l *SourceLimiter) Acquire(src uint32) bool {
	key := uint64(src) << 32
	h := l.home(src)
	for i := uint64(0); i <= l.mask; i++ {
		s := &l.slots[(h+i)&l.mask]
		v := s.Load()
		for v == 0 {
			if s.CompareAndSwap(0, key|slotBound|1) {
				return true
			}
			v = s.Load()
		}
		if v&^(countMask|slotBound) != key {
			continue
		}
		for {
			if lim := l.limit.Load(); lim > 0 && int64(v&countMask) >= lim {
				l.refused.Add(1)
				return false
			}
			if v&countMask == countMask || s.CompareAndSwap(v, v+1) {
				return true
			}
			v = s.Load()
		}
	}
	l.untracked.Add(1)
	return true
}

// Release counts one connection of src less.
func (l *SourceLimiter) Release(src uint32) {
	key := uint64(src) << 32
	h := l.home(src)
	for i := uint64(0); i <= l.mask; i++ {
		s := &l.slots[(h+i)&l.mask]
		v := s.Load()
		if v == 0 {
			return // never tracked (it came while the table was full)
		}
		if v&^(countMask|slotBound) != key {
			continue
		}
		for v&countMask != 0 && !s.CompareAndSwap(v, v-1) {
			v = s.Load()
		}
		return
	}
}

// Count returns how many connections src has.
func (l *SourceLimiter) Count(src uint32) int {
	key := uint64(src) << 32
	h := l.home(src)
	for i := uint64(0); i <= l.mask; i++ {
		v := l.slots[(h+i)&l.mask].Load()
		if v == 0 {
			return 0
		}
		if v&^(countMask|slotBound) == key {
			return int(v & countMask)
		}
	}
	return 0
}

// Refused returns how many connections the limit has refused.
func (l *SourceLimiter) Refused() uint64 { return l.refused.Load() }

// Untracked returns how many connections were allowed without counting
// because the limiter had no slot left for their source.
func (l *SourceLimiter) Untracked() uint64 { return l.untracked.Load() }
