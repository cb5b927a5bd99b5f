package e2e

import (
	"testing"
	"time"
)

func TestSyncLags(t *testing.T) {
	ms := time.Millisecond
	// The sink sees 100 connections by 10 ms; the peer holds them 3 ms
	// after the sink for the first half, 7 ms after for the rest.
	var s []SyncSample
	for at := time.Duration(0); at <= 30*ms; at += ms {
		sink := min(uint64(at/ms)*10, 100)
		var peer uint64
		switch {
		case at >= 17*ms:
			peer = 100
		case at >= 3*ms:
			peer = min(uint64((at-3*ms)/ms)*10, 50)
		}
		s = append(s, SyncSample{At: at, Sink: sink, Peer: peer})
	}
	lags := SyncLags(s, 100)
	if len(lags) != 10 {
		t.Fatalf("%d lags: %v", len(lags), lags)
	}
	for i, l := range lags {
		want := 3 * ms
		if i >= 5 {
			want = 17*ms - time.Duration(i+1)*ms
		}
		if l != want {
			t.Errorf("lag %d: %v, want %v (%v)", i, l, want, lags)
		}
	}
	// A count never reached ends the list; no total, no lags.
	if l := SyncLags(s, 200); len(l) != 5 || l[0] != 3*ms || l[2] != 11*ms || l[4] != 7*ms {
		t.Errorf("unreached counts: %v", l)
	}
	if l := SyncLags(nil, 0); len(l) != 0 {
		t.Errorf("empty: %v", l)
	}
}

func TestSyncLoadConfig(t *testing.T) {
	good := SyncLoadConfig{Proto: UDP, Size: 64, NewConns: 1000, Established: 10, Time: time.Second}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, mod := range []func(*SyncLoadConfig){
		func(c *SyncLoadConfig) { c.NewConns = 0 },
		func(c *SyncLoadConfig) { c.NewConns = MaxFlows },
		func(c *SyncLoadConfig) { c.Established = 0 },
		func(c *SyncLoadConfig) { c.Time = 0 },
	} {
		c := good
		mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := Run(Point{Target: "xdp_drop", Flows: 1, Duration: time.Millisecond, Sync: true}); err == nil {
		t.Error("sync without a target accepted")
	}
}
