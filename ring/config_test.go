package ring

import (
	"errors"
	"testing"
)

func TestConfigValidation(t *testing.T) {
	good, err := Config{}.withDefaults(2)
	if err != nil {
		t.Fatal(err)
	}
	if good.FrameSize != DefaultFrameSize || good.NumFrames != DefaultNumFrames || good.FillSize != DefaultRingSize || good.PollTimeout != DefaultPollTimeout {
		t.Fatalf("defaults: %+v", good)
	}
	for name, c := range map[string]Config{
		"frame not pow2":      {FrameSize: 3000},
		"frame too small":     {FrameSize: 1024},
		"frame too large":     {FrameSize: 8192},
		"headroom too large":  {Headroom: 2048 - 256 - 32},
		"ring not pow2":       {RxSize: 1000},
		"fill rings too big":  {NumFrames: 2048, FillSize: 1024},
		"bind mode":           {Bind: 9},
		"poll mode":           {Poll: 9},
		"negative timeout":    {PollTimeout: -1},
		"completion not pow2": {CompletionSize: 3},
	} {
		if _, err := c.withDefaults(2); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
	if _, err := Open(Config{}); !errors.Is(err, ErrNoEndpoints) {
		t.Errorf("Open without endpoints: %v", err)
	}
	if _, err := Open(Config{}, Endpoint{Ifindex: 1}, Endpoint{Ifindex: 1}); !errors.Is(err, ErrDuplicateEndpoint) {
		t.Errorf("Open with duplicate endpoints: %v", err)
	}
	if _, err := Open(Config{}, Endpoint{Ifindex: 0}); !errors.Is(err, ErrConfig) {
		t.Errorf("Open with ifindex 0: %v", err)
	}
	if _, err := Open(Config{FrameSize: 1000}, Endpoint{Ifindex: 1}); !errors.Is(err, ErrConfig) {
		t.Errorf("Open with a bad frame size: %v", err)
	}
}

// TestRingIndicesWrap drives the ring logic over plain memory, with a
// simulated kernel on the other side and indices starting just below
// 2^32, so that every batch crosses the wrap of the free-running
// indices and of the slot mask.
func TestRingIndicesWrap(t *testing.T) {
	const size = 8
	var prod, cons, flags uint32
	start := ^uint32(0) - 5
	prod, cons = start, start
	slots := make([]uint64, size)
	p := prodRing{producer: &prod, consumer: &cons, flags: &flags, cachedProd: start, cachedCons: start, size: size, mask: size - 1}
	c := consRing{producer: &prod, consumer: &cons, flags: &flags, cachedProd: start, cachedCons: start, size: size, mask: size - 1}
	next, want := uint64(0), uint64(0)
	for round := 0; round < 100; round++ {
		n := p.free(5)
		if n != 5 && p.cachedProd-cons+5 <= size {
			t.Fatalf("round %d: free %d", round, n)
		}
		for i := uint32(0); i < n; i++ {
			slots[(p.cachedProd+i)&p.mask] = next
			next++
		}
		p.submit(n)
		if p.cachedProd-cons > size {
			t.Fatalf("overfilled: prod %d cons %d", p.cachedProd, cons)
		}
		m := c.available(uint32(round%7 + 1))
		for i := uint32(0); i < m; i++ {
			if got := slots[(c.cachedCons+i)&c.mask]; got != want {
				t.Fatalf("round %d: got %d want %d", round, got, want)
			}
			want++
		}
		c.release(m)
	}
	if want < 100 {
		t.Fatalf("only %d entries went through", want)
	}
	flags = xdpRingNeedWakeup
	if !p.needWakeup() {
		t.Fatal("needWakeup not seen")
	}
}
