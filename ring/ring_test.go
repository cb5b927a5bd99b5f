package ring_test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"xnat/ring"
)

// forwarder is the user-space forwarder of the tests: frames received
// on socket 0 (b0) are rewritten in place and transmitted on socket 1
// (b1) from the same UMEM, without copying.
type forwarder struct {
	t       *testing.T
	f       *fwdTopo
	u       *ring.UMEM
	in, out *ring.Socket
	rx      []ring.Desc
	txq     []ring.Desc // received, rewritten, waiting for TX room
	drop    []ring.Desc
	stop    atomic.Bool
	dropped int
}

func newForwarder(t *testing.T, f *fwdTopo, u *ring.UMEM) *forwarder {
	return &forwarder{
		t: t, f: f, u: u, in: u.Socket(0), out: u.Socket(1),
		rx:   make([]ring.Desc, 64),
		txq:  make([]ring.Desc, 0, 64),
		drop: make([]ring.Desc, 0, 64),
	}
}

// step is one iteration of a worker loop; it reports whether it found
// work.
func (w *forwarder) step() bool {
	w.out.Complete()
	w.in.Complete()
	w.in.Fill()
	work := false
	if len(w.txq) > 0 {
		n := w.out.Transmit(w.txq)
		w.txq = w.txq[:copy(w.txq, w.txq[n:])]
		work = true
	}
	if len(w.txq) == 0 {
		n := w.in.Receive(w.rx)
		w.drop = w.drop[:0]
		for _, d := range w.rx[:n] {
			if w.f.forward(w.u.Frame(d)) {
				w.txq = append(w.txq, d)
			} else {
				w.drop = append(w.drop, d)
			}
		}
		if len(w.drop) > 0 {
			w.dropped += len(w.drop)
			w.u.Release(w.drop)
		}
		if n > 0 {
			k := w.out.Transmit(w.txq)
			w.txq = w.txq[:copy(w.txq, w.txq[k:])]
			work = true
		}
	}
	return work
}

func (w *forwarder) loop(done chan<- error) {
	var err error
	for !w.stop.Load() && err == nil {
		if !w.step() {
			err = w.u.Wait()
		}
	}
	done <- err
}

// drain completes every transmission still under way, within a bound.
func (w *forwarder) drain() {
	w.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if len(w.txq) > 0 {
			n := w.out.Transmit(w.txq)
			w.txq = w.txq[:copy(w.txq, w.txq[n:])]
		}
		w.out.Complete()
		st, err := w.out.Stats()
		if err != nil {
			w.t.Fatal(err)
		}
		if st.TxOutstanding == 0 && len(w.txq) == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	w.t.Fatalf("transmissions not completed within 5s")
}

// audit checks that every frame of the UMEM is accounted for exactly
// once and that no ownership transition was refused.
func (w *forwarder) audit() ring.Accounting {
	w.t.Helper()
	acc, err := w.u.Audit(w.txq)
	if err != nil {
		w.t.Fatalf("frame audit: %v (%+v)", err, acc)
	}
	if acc.Total() != int(w.u.Config().NumFrames) {
		w.t.Fatalf("audit accounts for %d frames of %d: %+v", acc.Total(), w.u.Config().NumFrames, acc)
	}
	if st := w.u.Stats(); st.OwnershipErrors != 0 || st.BadDescs != 0 {
		w.t.Fatalf("UMEM stats: %+v", st)
	}
	return acc
}

// TestForwardSharedUMEM sends UDP from namespace a through the AF_XDP
// sockets of namespace b (RX on b0, TX on b1, one shared UMEM, frames
// transmitted where they were received) to a kernel socket in
// namespace c, which checks every payload; b does not forward by
// itself (ip_forward=0). Each mode runs a sustained stream with a
// window of frames in flight, then audits every frame of the UMEM.
func TestForwardSharedUMEM(t *testing.T) {
	cases := []struct {
		name   string
		cfg    ring.Config
		frames int
	}{
		{"sleep", ring.Config{Poll: ring.PollSleep, PollTimeout: 20 * time.Millisecond}, 200_000},
		{"busy", ring.Config{Poll: ring.PollBusy}, 30_000},
		{"sleep-no-need-wakeup", ring.Config{Poll: ring.PollSleep, NoNeedWakeup: true}, 20_000},
		{"small-rings-headroom", ring.Config{NumFrames: 256, FillSize: 64, RxSize: 64, TxSize: 32, CompletionSize: 32, Headroom: 128}, 20_000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFwdTopo(t)
			f.attach(t)
			c.cfg.TrackOwnership = true
			u := f.open(t, c.cfg)
			in, out := u.Socket(0), u.Socket(1)
			t.Logf("XDP on b0: %s; socket 0 %+v; socket 1 %+v", f.attachMode, in.Info(), out.Info())
			if !out.Info().SharedUMEM || in.Info().SharedUMEM {
				t.Fatalf("shared UMEM flags: %+v %+v", in.Info(), out.Info())
			}
			if in.Info().ZeroCopy != out.Info().ZeroCopy {
				t.Fatalf("sockets of one UMEM in different modes: %+v %+v", in.Info(), out.Info())
			}
			if got := in.Info().NeedWakeup; got == c.cfg.NoNeedWakeup {
				t.Fatalf("need_wakeup = %v with NoNeedWakeup %v", got, c.cfg.NoNeedWakeup)
			}
			window := 48
			r := f.listen(t, window)
			w := newForwarder(t, f, u)
			// The fill ring is full before the first datagram leaves: a
			// worker goroutine scheduled late (under -race, on a loaded
			// machine) must not find the kernel dropping for want of frames.
			w.in.Fill()
			done := make(chan error, 1)
			go w.loop(done)
			go r.run(c.frames, 60*time.Second)
			start := time.Now()
			sendErr := f.send(t, r, c.frames)
			got := <-r.got
			elapsed := time.Since(start)
			w.stop.Store(true)
			if err := <-done; err != nil {
				t.Fatalf("worker: %v", err)
			}
			if sendErr != nil {
				t.Errorf("sender: %v", sendErr)
			}
			select {
			case err := <-r.bad:
				t.Errorf("receiver: %v", err)
			default:
			}
			w.drain()
			ist, err := in.Stats()
			if err != nil {
				t.Fatal(err)
			}
			ost, err := out.Stats()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d datagrams in %v (%.0f/s); in %+v; out %+v", got, elapsed, float64(got)/elapsed.Seconds(), ist, ost)
			if got != c.frames {
				t.Fatalf("received %d of %d datagrams", got, c.frames)
			}
			if ist.Rx != uint64(c.frames) || ost.Tx != uint64(c.frames) || ost.Completed != uint64(c.frames) || w.dropped != 0 {
				t.Fatalf("counters: rx %d tx %d completed %d dropped %d, want %d each and 0 dropped",
					ist.Rx, ost.Tx, ost.Completed, w.dropped, c.frames)
			}
			if ist.RxDropped != 0 || ist.RxInvalidDescs != 0 || ost.TxInvalidDescs != 0 || ost.KickErrors != 0 {
				t.Fatalf("kernel counters show losses: in %+v out %+v", ist, ost)
			}
			if c.cfg.Poll == ring.PollBusy && ist.Wakeups != 0 && !in.Info().ZeroCopy {
				t.Logf("busy mode kicked RX %d times", ist.Wakeups)
			}
			acc := w.audit()
			t.Logf("frames: %+v", acc)
		})
	}
}

// TestTxRingFullAndCompletionLag forces the TX ring to fill and the
// completion ring to bound transmissions, with tiny rings: both are
// counted, the refused descriptors stay the caller's, and every frame
// is delivered and accounted for afterwards.
func TestTxRingFullAndCompletionLag(t *testing.T) {
	cases := []struct {
		name          string
		tx, comp      uint32
		wantFull      uint64
		wantCompLag   uint64
		firstAccepted int
	}{
		{"tx-ring-full", 8, 64, 8, 0, 8},
		{"completion-lag", 64, 8, 0, 8, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFwdTopo(t)
			u := f.open(t, ring.Config{NumFrames: 256, FillSize: 64, RxSize: 64, TxSize: c.tx, CompletionSize: c.comp, TrackOwnership: true})
			out := u.Socket(1)
			r := f.listen(t, 16)
			descs := make([]ring.Desc, 16)
			if n := u.Alloc(descs); n != 16 {
				t.Fatalf("Alloc got %d frames", n)
			}
			payload := make([]byte, payloadLen)
			for i := range descs {
				fillPayload(payload, uint64(i))
				full := u.Frame(ring.Desc{Addr: descs[i].Addr, Len: 128})
				descs[i].Len = uint32(f.buildUDP(full, payload))
			}
			go r.run(16, 10*time.Second)
			n := out.Transmit(descs)
			if n != c.firstAccepted {
				t.Fatalf("first Transmit took %d of 16, want %d", n, c.firstAccepted)
			}
			st, err := out.Stats()
			if err != nil {
				t.Fatal(err)
			}
			if st.TxRingFull != c.wantFull || st.CompletionLag != c.wantCompLag {
				t.Fatalf("TxRingFull %d CompletionLag %d, want %d and %d", st.TxRingFull, st.CompletionLag, c.wantFull, c.wantCompLag)
			}
			rest := descs[n:]
			deadline := time.Now().Add(5 * time.Second)
			for len(rest) > 0 && time.Now().Before(deadline) {
				out.Complete()
				k := out.Transmit(rest)
				rest = rest[k:]
				if k == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			if len(rest) > 0 {
				t.Fatalf("%d frames never accepted", len(rest))
			}
			if got := <-r.got; got != 16 {
				t.Fatalf("c received %d of 16", got)
			}
			select {
			case err := <-r.bad:
				t.Fatal(err)
			default:
			}
			w := newForwarder(t, f, u)
			w.drain()
			w.audit()
		})
	}
}

// waitsIn counts the Waits that return in span: with nothing to do, a
// sleeping UMEM returns once a poll timeout, and a few more times when a
// signal interrupts its poll (which Wait allows).
func waitsIn(t *testing.T, u *ring.UMEM, span time.Duration) int {
	t.Helper()
	n := 0
	for start := time.Now(); time.Since(start) < span; n++ {
		if err := u.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// TestWaitSleepsAndBusyReturns checks the two wait modes: sleeping mode
// sleeps until the timeout when nothing arrives (it does not return at
// once), busy mode returns at once.
func TestWaitSleepsAndBusyReturns(t *testing.T) {
	f := newFwdTopo(t)
	f.attach(t)
	u := f.open(t, ring.Config{Poll: ring.PollSleep, PollTimeout: 60 * time.Millisecond})
	u.Socket(0).Fill()
	if n := waitsIn(t, u, 300*time.Millisecond); n > 20 {
		t.Fatalf("sleeping Wait returned %d times in 300ms with nothing to do (timeout 60ms)", n)
	}
	u.Close()
	if err := u.Wait(); !errors.Is(err, ring.ErrClosed) {
		t.Fatalf("Wait after Close: %v", err)
	}

	f2 := newFwdTopo(t)
	f2.attach(t)
	b := f2.open(t, ring.Config{Poll: ring.PollBusy})
	start := time.Now()
	for range 1000 {
		if err := b.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("1000 busy Waits took %v", d)
	}
}

// TestWaitWakesOnReceive checks that a sleeping Wait returns when a
// packet arrives, long before its timeout.
func TestWaitWakesOnReceive(t *testing.T) {
	f := newFwdTopo(t)
	f.attach(t)
	u := f.open(t, ring.Config{Poll: ring.PollSleep, PollTimeout: 10 * time.Second})
	u.Socket(0).Fill()
	r := f.listen(t, 1)
	sent := make(chan error, 1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		sent <- f.send(t, r, 1)
	}()
	defer func() {
		if err := <-sent; err != nil {
			t.Error(err)
		}
	}()
	// A Wait may also return when a signal interrupts its poll: wait
	// until the frame is there, each Wait far shorter than the timeout.
	start := time.Now()
	descs := make([]ring.Desc, 4)
	n := 0
	for n == 0 {
		if err := u.Wait(); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Wait did not wake on a received packet (%v)", d)
		}
		n = u.Socket(0).Receive(descs)
	}
	if n != 1 {
		t.Fatalf("received %d frames after waking", n)
	}
	u.Release(descs[:1])
}

// TestWaitWakesOnWake: a sleeping Wait returns when another goroutine
// calls Wake, long before its timeout; a Wake before Wait makes the next
// Wait return at once; the Wait after that sleeps again (the wake is
// consumed); Wake after Close does nothing.
func TestWaitWakesOnWake(t *testing.T) {
	f := newFwdTopo(t)
	f.attach(t)
	u := f.open(t, ring.Config{Poll: ring.PollSleep, PollTimeout: 10 * time.Second})
	u.Socket(0).Fill()
	go func() {
		time.Sleep(50 * time.Millisecond)
		u.Wake()
	}()
	// Past the Wake: a Wait that returned earlier was interrupted.
	start := time.Now()
	for time.Since(start) < 45*time.Millisecond {
		if err := u.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Wait returned after %v, want about 50ms (the Wake)", d)
	}
	u.Wake()
	u.Wake()
	start = time.Now()
	if err := u.Wait(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Wait after Wake took %v", d)
	}
	u.Close()
	u.Wake()

	f2 := newFwdTopo(t)
	f2.attach(t)
	v := f2.open(t, ring.Config{Poll: ring.PollSleep, PollTimeout: 100 * time.Millisecond})
	v.Socket(0).Fill()
	v.Wake()
	if err := v.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := waitsIn(t, v, 300*time.Millisecond); n > 20 {
		t.Fatalf("after a consumed Wake, Wait returned %d times in 300ms (timeout 100ms)", n)
	}
}

// TestZeroAllocs checks that the batch paths — receive, rewrite,
// transmit, complete, fill, wait — allocate nothing, with packets
// flowing.
func TestZeroAllocs(t *testing.T) {
	f := newFwdTopo(t)
	f.attach(t)
	u := f.open(t, ring.Config{Poll: ring.PollBusy})
	w := newForwarder(t, f, u)
	w.in.Fill()
	const n = 512
	r := f.listen(t, n)
	if err := f.send(t, r, n); err != nil {
		t.Fatal(err)
	}
	// Let the datagrams reach b's RX ring; c's socket buffers them.
	time.Sleep(100 * time.Millisecond)
	allocs := testing.AllocsPerRun(200, func() {
		w.step()
		_ = u.Wait()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per worker step", allocs)
	}
	ist, _ := w.in.Stats()
	if ist.Rx == 0 {
		t.Fatalf("no packet flowed during the measurement")
	}
	// Each path alone, including the empty cases.
	empty := make([]ring.Desc, 0)
	for name, fn := range map[string]func(){
		"Receive":       func() { w.in.Receive(w.rx) },
		"Transmit":      func() { w.out.Transmit(empty) },
		"Fill":          func() { w.in.Fill() },
		"Complete":      func() { w.out.Complete() },
		"Wait":          func() { _ = u.Wait() },
		"Alloc+Release": func() { k := u.Alloc(w.rx[:8]); u.Release(w.rx[:k]) },
	} {
		if a := testing.AllocsPerRun(100, fn); a != 0 {
			t.Errorf("%s: %v allocations per call", name, a)
		}
	}
	go r.run(int(ist.Rx), 5*time.Second)
	for range 100 {
		w.step()
	}
	w.drain()
	w.audit()
}

// TestOwnershipViolations checks that with TrackOwnership a frame
// released twice, transmitted while free or given with an address
// outside the UMEM is refused and counted, and that without tracking
// the audit finds the duplicate a double release makes.
func TestOwnershipViolations(t *testing.T) {
	f := newFwdTopo(t)
	u := f.open(t, ring.Config{NumFrames: 64, FillSize: 16, RxSize: 16, TxSize: 16, CompletionSize: 16, TrackOwnership: true})
	d := make([]ring.Desc, 2)
	if u.Alloc(d) != 2 {
		t.Fatal("Alloc")
	}
	u.Release(d[:1])
	u.Release(d[:1]) // second release of the same frame
	if st := u.Stats(); st.OwnershipErrors != 1 {
		t.Fatalf("double release: %+v", st)
	}
	d[0].Len = 60
	if n := u.Socket(1).Transmit(d[:1]); n != 1 { // consumed, but refused: the frame is free
		t.Fatalf("Transmit consumed %d", n)
	}
	if st := u.Stats(); st.OwnershipErrors != 2 {
		t.Fatalf("transmit of a free frame: %+v", st)
	}
	u.Release([]ring.Desc{{Addr: 1 << 40}})
	if n := u.Socket(1).Transmit([]ring.Desc{{Addr: 1 << 40, Len: 60}}); n != 1 {
		t.Fatalf("Transmit consumed %d", n)
	}
	if st, _ := u.Socket(1).Stats(); st.BadDescs != 1 || st.Tx != 0 {
		t.Fatalf("socket stats after a bad desc: %+v", st)
	}
	if st := u.Stats(); st.BadDescs != 1 {
		t.Fatalf("UMEM stats after a bad release: %+v", st)
	}
	if _, err := u.Audit(d[1:]); err != nil {
		t.Fatalf("audit after refused violations: %v", err)
	}
	if _, err := u.Audit(nil); !errors.Is(err, ring.ErrFrameLost) {
		t.Fatalf("audit without the held frame: %v", err)
	}
	if _, err := u.Audit(d[1:2:2][:1:1]); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Audit([]ring.Desc{d[1], d[1]}); !errors.Is(err, ring.ErrFrameDuplicated) {
		t.Fatalf("audit with a frame held twice: %v", err)
	}

	// Without tracking a double release is not refused; the audit sees it.
	g := newFwdTopo(t)
	v := g.open(t, ring.Config{NumFrames: 64, FillSize: 16, RxSize: 16, TxSize: 16, CompletionSize: 16})
	e := make([]ring.Desc, 1)
	v.Alloc(e)
	v.Release(e)
	v.Release(e)
	if _, err := v.Audit(nil); !errors.Is(err, ring.ErrFrameDuplicated) {
		t.Fatalf("audit after an untracked double release: %v", err)
	}
}

// TestBindModes: veth has no zero-copy AF_XDP support, so an explicit
// zero-copy bind is refused with ErrZeroCopy and BindAuto falls back to
// copy mode for both sockets.
func TestBindModes(t *testing.T) {
	f := newFwdTopo(t)
	err := f.b.Do(func() error {
		u, err := ring.Open(ring.Config{Bind: ring.BindZeroCopy}, ring.Endpoint{Ifindex: f.b0}, ring.Endpoint{Ifindex: f.b1})
		if err == nil {
			t.Logf("zero-copy bind accepted on veth: %+v", u.Socket(0).Info())
			if !u.Socket(0).Info().ZeroCopy {
				t.Errorf("BindZeroCopy succeeded in copy mode")
			}
			return u.Close()
		}
		if !errors.Is(err, ring.ErrZeroCopy) {
			t.Errorf("zero-copy bind error does not wrap ErrZeroCopy: %v", err)
		}
		t.Logf("zero-copy on veth: %v", err)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	u := f.open(t, ring.Config{Bind: ring.BindAuto})
	for _, s := range u.Sockets() {
		if s.Info().ZeroCopy {
			t.Logf("veth bound zero-copy: %+v", s.Info())
		}
	}
	if err := u.Close(); err != nil { // the queue is then free (after the kernel's deferred release)
		t.Fatal(err)
	}
	c := f.open(t, ring.Config{Bind: ring.BindCopy})
	if c.Socket(0).Info().ZeroCopy || c.Socket(1).Info().ZeroCopy {
		t.Fatalf("BindCopy gave zero-copy")
	}
}
