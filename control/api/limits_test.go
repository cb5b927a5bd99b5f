package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"xnat/control/conntrack"
	"xnat/flowtable"
	"xnat/internal/nattest"
)

// fakeTable is a connLister of n made-up connections (TCP and UDP in
// turn), made as they are listed: its own memory does not grow with n.
type fakeTable struct {
	n     int
	acct  bool
	calls atomic.Int64
	// onList, if set, runs at the start of every List call.
	onList func(cursor int)
}

func fakeFlow(i int, acct bool) flowtable.FlowInfo {
	proto, st := uint8(6), uint32(flowtable.TCPEstablished)|flowtable.FlagSeenReply|flowtable.FlagAssured
	if i%2 == 1 {
		proto, st = 17, uint32(flowtable.UDP)
	}
	src := 0x0a000000 | uint32(i>>8)&0xffff<<8 | uint32(i&0xff)
	orig := flowtable.MakeTuple(proto, src, uint16(1024+i%60000), 0xc0000202, 443)
	reply := flowtable.MakeTuple(proto, 0xc0000202, 443, 0xc0000201, uint16(1024+i%64000))
	fi := flowtable.FlowInfo{Orig: orig, Reply: reply, Status: st, Mark: uint32(i % 7), Expires: time.Duration(i%300) * time.Second, Owner: i % 2}
	if acct {
		fi.Counters = [2]flowtable.Counter{{Packets: uint64(i), Bytes: uint64(i) * 60}, {Packets: 1, Bytes: 40}}
	}
	return fi
}

func (f *fakeTable) Acct() bool { return f.acct }

func (f *fakeTable) List(cursor int, out []flowtable.FlowInfo) (n, next int) {
	f.calls.Add(1)
	if f.onList != nil {
		f.onList(cursor)
	}
	for n < len(out) && cursor+n < f.n {
		out[n] = fakeFlow(cursor+n, f.acct)
		n++
	}
	if cursor+n >= f.n {
		return n, -1
	}
	return n, cursor + n
}

// newTestServer serves the API's connection-independent routes
// (conntrack listings from tab, events) on a socket, with no daemon.
func newTestServer(t *testing.T, tab connLister, o Options) (*Server, string) {
	t.Helper()
	o.setDefaults()
	s := &Server{conns: tab, opts: o, events: newEventLog(16, nil), stop: make(chan struct{}), monDone: make(chan struct{})}
	close(s.monDone)
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.serve(ln); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, sock
}

func dial(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawGet sends a GET on its own connection and returns the answer's body.
func rawGet(t *testing.T, sock, path string) (int, []byte) {
	t.Helper()
	c := dial(t, sock)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: xnatd\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// TestConnListStream: the streamed listing is byte for byte what encoding
// the whole ConntrackList gives, filtered or not, with and without
// counters, empty or not; the client reads the same connections back.
func TestConnListStream(t *testing.T) {
	for _, c := range []struct {
		n     int
		acct  bool
		query string
		keep  func(*flowtable.FlowInfo) bool
	}{
		{0, false, "", nil},
		{1, true, "", nil},
		{3*listBatch + 17, false, "", nil},
		{3*listBatch + 17, true, "?proto=17", func(fi *flowtable.FlowInfo) bool { return fi.Orig.Proto == 17 }},
		{2 * listBatch, false, "?proto=132", func(*flowtable.FlowInfo) bool { return false }},
	} {
		tab := &fakeTable{n: c.n, acct: c.acct}
		_, sock := newTestServer(t, tab, Options{})
		want := ConntrackList{Acct: c.acct, Conns: []Conn{}}
		for i := range c.n {
			fi := fakeFlow(i, c.acct)
			if c.keep == nil || c.keep(&fi) {
				want.Conns = append(want.Conns, ConnOf(&fi, c.acct))
			}
		}
		var wb bytes.Buffer
		if err := json.NewEncoder(&wb).Encode(want); err != nil {
			t.Fatal(err)
		}
		code, got := rawGet(t, sock, Version+"/conntrack"+c.query)
		if code != http.StatusOK || !bytes.Equal(got, wb.Bytes()) {
			t.Fatalf("n=%d acct=%v %q: status %d, %d bytes, want %d bytes\n%.300s", c.n, c.acct, c.query, code, len(got), wb.Len(), got)
		}
		cl := NewClient(sock)
		var f conntrack.Filter
		if c.query != "" {
			a, err := conntrack.Parse([]string{"-L", "-p", strings.TrimPrefix(c.query, "?proto=")})
			if err != nil {
				t.Fatal(err)
			}
			f = a.Filter
		}
		l, err := cl.Conntrack(context.Background(), &f)
		if err != nil {
			t.Fatal(err)
		}
		if l.Acct != want.Acct || len(l.Conns) != len(want.Conns) {
			t.Fatalf("client: acct %v, %d connections; want %v, %d", l.Acct, len(l.Conns), want.Acct, len(want.Conns))
		}
		for i := range l.Conns {
			if fmt.Sprint(l.Conns[i]) != fmt.Sprint(want.Conns[i]) {
				t.Fatalf("client: connection %d\n %+v\nwant\n %+v", i, l.Conns[i], want.Conns[i])
			}
		}
	}
}

// heapSampler records the largest HeapInuse it is shown.
type heapSampler struct {
	mu   sync.Mutex
	peak uint64
}

func (h *heapSampler) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.mu.Lock()
	h.peak = max(h.peak, ms.HeapInuse)
	h.mu.Unlock()
}

// countingReader counts what passes through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestConnListMemoryFlat: listing half a million connections (half that
// under the race detector) through the server and the streaming client,
// the heap in use never grows by more than a few megabytes, a small part
// of the answer's size (about 350 bytes a connection).
func TestConnListMemoryFlat(t *testing.T) {
	n := 1 << 19
	if raceEnabled {
		n = 1 << 18
	}
	var hs heapSampler
	tab := &fakeTable{n: n, acct: true}
	tab.onList = func(cursor int) {
		if cursor%(64*listBatch) == 0 {
			hs.sample()
		}
	}
	_, sock := newTestServer(t, tab, Options{})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	hs.peak = base

	// ConntrackStream's own steps, with the bytes counted as the client
	// reads them.
	c := NewClient(sock)
	body, err := c.stream(context.Background(), "/conntrack", nil, c.Timeout())
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	cr := &countingReader{r: body}
	st := &ConnStream{body: body, dec: json.NewDecoder(cr)}
	if err := st.open(); err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		var cn Conn
		ok, err := st.Next(&cn)
		if err != nil {
			t.Fatalf("after %d connections: %v", got, err)
		}
		if !ok {
			break
		}
		if got%(64*listBatch) == 0 {
			hs.sample()
			fi := fakeFlow(got, true)
			if want := ConnOf(&fi, true); fmt.Sprint(cn) != fmt.Sprint(want) {
				t.Fatalf("connection %d: %+v, want %+v", got, cn, want)
			}
		}
		got++
	}
	if got != n {
		t.Fatalf("%d connections read, want %d", got, n)
	}
	hs.sample()
	growth := int64(hs.peak) - int64(base)
	const bound = 12 << 20
	t.Logf("%d connections, %d bytes of answer; heap in use %d MB at start, at most %d MB more while streaming", n, cr.n, base>>20, growth>>20)
	if cr.n < 4*bound {
		t.Fatalf("the answer (%d bytes) is too small for the bound to mean anything", cr.n)
	}
	if growth > bound {
		t.Fatalf("heap in use grew by %d bytes while streaming %d bytes; bound %d", growth, cr.n, bound)
	}
}

// TestSlowClientCutOff: a client that asks for a long listing and never
// reads is cut off once a write has waited WriteTimeout, while other
// clients are served meanwhile; the server produced only what fit in the
// socket's buffers, not the whole answer.
func TestSlowClientCutOff(t *testing.T) {
	const wt = 300 * time.Millisecond
	tab := &fakeTable{n: 1 << 24}
	_, sock := newTestServer(t, tab, Options{WriteTimeout: wt})
	slow := dial(t, sock)
	start := time.Now()
	fmt.Fprintf(slow, "GET %s/conntrack HTTP/1.1\r\nHost: xnatd\r\n\r\n", Version)

	// Others are served while the slow one is stuck.
	concurrently(t, 8, func(int) error {
		t0 := time.Now()
		_, err := NewClient(sock).Events(context.Background(), 0)
		if err == nil && time.Since(t0) > 2*time.Second {
			err = fmt.Errorf("served after %v", time.Since(t0))
		}
		return err
	})

	// The server stops walking the table soon after the deadline...
	var calls int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		time.Sleep(2 * wt)
		c := tab.calls.Load()
		if c == calls && c > 0 {
			break
		}
		calls = c
		if time.Now().After(deadline) {
			t.Fatalf("the server still lists for the stuck client after %v (%d List calls)", time.Since(start), c)
		}
	}
	if walked := calls * listBatch; walked >= int64(tab.n) {
		t.Fatalf("the whole table was walked for a client that read nothing")
	}
	// ...and closes the connection: what was buffered, then EOF.
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, slow)
	if err != nil {
		t.Fatalf("the stuck client's connection was not closed (read %d bytes): %v", n, err)
	}
	t.Logf("stuck client cut off after %v; %d List calls, %d bytes were in the buffers", time.Since(start), calls, n)
}

// sendBody posts a body of size bytes (made by a reader as it is sent,
// never held in memory) on a raw connection, declared with Content-Length
// or chunked (size < 0 in the header), and returns the answer read while
// the body is still being sent.
func sendBody(t *testing.T, sock, path string, size int64, chunked bool) (*http.Response, []byte, time.Duration) {
	t.Helper()
	c := dial(t, sock)
	req, err := http.NewRequest(http.MethodPost, "http://xnatd"+path, io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	if chunked {
		req.ContentLength = -1
		req.TransferEncoding = []string{"chunked"}
	}
	start := time.Now()
	go func() { _ = req.Write(c) }() // ends when the server closes the connection
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	c.Close()
	return resp, b, took
}

// zeros is an endless reader of spaces (valid JSON padding, so only the
// size decides).
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

// TestBodyLimit: a 1 GB request body, declared or chunked, is refused
// with 413 and a clear error within a moment, and the heap does not grow
// with it; iptables-restore has its own, larger limit.
func TestBodyLimit(t *testing.T) {
	_, sock := newTestServer(t, &fakeTable{}, Options{MaxRestoreBody: 4 << 20})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	for _, chunked := range []bool{false, true} {
		resp, b, took := sendBody(t, sock, Version+"/iptables", 1<<30, chunked)
		var er ErrorResponse
		if resp.StatusCode != http.StatusRequestEntityTooLarge || json.Unmarshal(b, &er) != nil || !strings.Contains(er.Error, "request body too large: over 1048576 bytes") {
			t.Fatalf("chunked %v: %s %q", chunked, resp.Status, b)
		}
		if took > 5*time.Second {
			t.Fatalf("chunked %v: refused after %v", chunked, took)
		}
	}
	runtime.ReadMemStats(&ms)
	if growth := int64(ms.HeapInuse) - int64(base); growth > 16<<20 {
		t.Fatalf("heap in use grew by %d bytes for two refused 1 GB bodies", growth)
	}
	// The restore route takes more than MaxBody (the body is malformed:
	// 400, not 413), up to its own limit.
	resp, b, _ := sendBody(t, sock, Version+"/iptables/restore", 2<<20, false)
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("2 MB restore body: %s %q", resp.Status, b)
	}
	resp, b, _ = sendBody(t, sock, Version+"/iptables/restore", 5<<20, true)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "over 4194304 bytes") {
		t.Fatalf("5 MB restore body: %s %q", resp.Status, b)
	}
}

// TestSlowloris: a client that sends its headers a byte at a time is cut
// off after ReadHeaderTimeout, and one that stalls in its body after
// ReadTimeout (with a 400 naming the timeout).
func TestSlowloris(t *testing.T) {
	const rht, rt = 300 * time.Millisecond, 400 * time.Millisecond
	_, sock := newTestServer(t, &fakeTable{}, Options{ReadHeaderTimeout: rht, ReadTimeout: rt})
	c := dial(t, sock)
	start := time.Now()
	io.WriteString(c, "GET "+Version+"/events HTTP/1.1\r\nHost: xnatd\r\nX-Slow: ")
	closed := make(chan time.Duration, 1)
	go func(start time.Time) { // its own start: the test's is reused below
		b := make([]byte, 512)
		for {
			if _, err := c.Read(b); err != nil {
				closed <- time.Since(start)
				return
			}
		}
	}(start)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var took time.Duration
wait:
	for {
		select {
		case took = <-closed:
			break wait
		case <-tick.C:
			if _, err := c.Write([]byte("a")); err != nil {
				took = time.Since(start)
				break wait
			}
			if time.Since(start) > 10*time.Second {
				t.Fatal("a header sent a byte at a time was not cut off in 10 s")
			}
		}
	}
	if took < rht || took > rht+3*time.Second {
		t.Fatalf("slow header cut off after %v (ReadHeaderTimeout %v)", took, rht)
	}

	// A body that stops coming.
	c2 := dial(t, sock)
	start = time.Now()
	io.WriteString(c2, "POST "+Version+"/iptables HTTP/1.1\r\nHost: xnatd\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"args\":")
	resp, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatalf("stalled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	if took := time.Since(start); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "timeout") || took < rt || took > rt+3*time.Second {
		t.Fatalf("stalled body: %s %q after %v", resp.Status, b, took)
	}
}

// TestMaxConns: beyond MaxConns connections a client waits to be
// accepted, and is served once one closes.
func TestMaxConns(t *testing.T) {
	_, sock := newTestServer(t, &fakeTable{}, Options{MaxConns: 2, ReadHeaderTimeout: time.Minute})
	a, b := dial(t, sock), dial(t, sock)
	_ = b
	// Make sure both are accepted: a request on each.
	for _, c := range []net.Conn{a, b} {
		fmt.Fprintf(c, "GET %s/events HTTP/1.1\r\nHost: xnatd\r\n\r\n", Version)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	cl := NewClient(sock)
	cl.SetTimeout(300 * time.Millisecond)
	if _, err := cl.Events(context.Background(), 0); !errors.Is(err, ErrTimeout) {
		t.Fatalf("a third client with two connections open: %v, want a timeout", err)
	}
	a.Close()
	cl.SetTimeout(5 * time.Second)
	if _, err := cl.Events(context.Background(), 0); err != nil {
		t.Fatalf("after one closed: %v", err)
	}
}

// TestManyClients: many clients listing and reading events at once are
// all served in full.
func TestManyClients(t *testing.T) {
	n := 5000
	if raceEnabled {
		n = 1000
	}
	_, sock := newTestServer(t, &fakeTable{n: n}, Options{})
	concurrently(t, 32, func(i int) error {
		c := NewClient(sock)
		if i%2 == 0 {
			_, err := c.Events(context.Background(), 0)
			return err
		}
		l, err := c.Conntrack(context.Background(), &conntrack.Filter{})
		if err == nil && len(l.Conns) != n {
			err = fmt.Errorf("%d connections, want %d", len(l.Conns), n)
		}
		return err
	})
}

// concurrently runs f(0) to f(n-1) at once and reports the errors they
// return.
func concurrently(t *testing.T, n int, f func(i int) error) {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(i) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestClientTimeouts: a daemon that accepts and never answers fails a
// request after the timeout; a listing whose daemon falls silent fails
// after the timeout of silence, however long it has been going; an event
// stream stays open past the timeout while heartbeats come.
func TestClientTimeouts(t *testing.T) {
	sock := nattest.MuteSocket(t)
	c := NewClient(sock)
	c.SetTimeout(200 * time.Millisecond)
	start := time.Now()
	if _, err := c.ConntrackCount(context.Background()); !errors.Is(err, ErrTimeout) || time.Since(start) > 3*time.Second {
		t.Fatalf("mute daemon: %v after %v", err, time.Since(start))
	}

	// A listing that goes quiet mid-way.
	stall := make(chan struct{})
	defer close(stall)
	tab := &fakeTable{n: 1 << 20}
	tab.onList = func(cursor int) {
		if cursor >= 64*listBatch {
			<-stall
		}
	}
	_, sock2 := newTestServer(t, tab, Options{})
	c = NewClient(sock2)
	c.SetTimeout(500 * time.Millisecond)
	st, err := c.ConntrackStream(context.Background(), &conntrack.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got := 0
	for {
		var cn Conn
		ok, err := st.Next(&cn)
		if err != nil {
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("after %d connections: %v, want a timeout", got, err)
			}
			break
		}
		if !ok {
			t.Fatal("the listing ended although the daemon stalled")
		}
		got++
	}
	// The server's buffer flushes every 64 KiB, so the client saw nearly
	// every connection listed before the stall.
	if got < 60*listBatch {
		t.Fatalf("%d connections before the stall, want about %d", got, 64*listBatch)
	}

	// Heartbeats keep a quiet event stream alive; they are blank lines.
	_, sock3 := newTestServer(t, &fakeTable{}, Options{Heartbeat: 50 * time.Millisecond})
	conn := dial(t, sock3)
	fmt.Fprintf(conn, "GET %s/events?follow=1 HTTP/1.1\r\nHost: xnatd\r\n\r\n", Version)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	start = time.Now()
	for i := range 5 {
		line, err := br.ReadString('\n')
		if err != nil || line != "\n" {
			t.Fatalf("heartbeat %d: %q, %v", i, line, err)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("5 heartbeats took %v at 50 ms", took)
	}
}
