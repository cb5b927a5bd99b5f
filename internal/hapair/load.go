package hapair

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"xnat/internal/netns"
)

// load is the traffic through the box (or pair) under test, the same for
// a failover and a restart: on the server, a UDP echo naming the source,
// a paced download and a TCP echo; from the client, UDP flows (ports
// 20000 on) each with the external port it was first seen from, the echo
// session (a round trip every 50 ms), the download (checksummed) and a
// probe flow (port 30000, a datagram every 10 ms). mark sets the moment
// of the event (the kill, the takeover) that the probe's figures and
// echoesAfter count from.
type load struct {
	data    []byte
	want    [32]byte
	udpSrv  *net.UDPConn
	srvUDP  *net.UDPAddr
	lns     []net.Listener
	conns   []io.Closer
	flows   []*net.UDPConn
	before  []string
	ec      net.Conn
	dlGot   atomic.Int64
	dlDone  chan dlResult
	srvErr  atomic.Value
	eventAt atomic.Int64 // mono()

	echoStop            chan struct{}
	echoErr             chan error
	echoes, echoesAfter atomic.Int64
	probe               *net.UDPConn
	probeStop           chan struct{}
	sent                sync.Map     // probe datagram number -> mono() when sent
	lastAnswer, outage  atomic.Int64 // mono(); nanoseconds
	recovered           atomic.Int64 // nanoseconds from the event to the first answer to a datagram sent after it
	closeOnce           sync.Once
}

type dlResult struct {
	n   int
	sum [32]byte
	err error
}

// startLoad starts the whole load: servers, UDP flows, sessions.
func startLoad(cli, srv *netns.NS, size, rate, nflows int) (*load, error) {
	l, err := newLoad(srv, size, rate)
	if err != nil {
		return nil, err
	}
	if err := l.dialFlows(cli, nflows); err != nil {
		l.close()
		return nil, err
	}
	if err := l.startSessions(cli); err != nil {
		l.close()
		return nil, err
	}
	return l, nil
}

// newLoad starts the servers: the UDP echo on port 9000, the download
// (size bytes paced at rate a second) on 8080 and the TCP echo on 8081.
func newLoad(srv *netns.NS, size, rate int) (*load, error) {
	l := &load{dlDone: make(chan dlResult, 1), echoStop: make(chan struct{}), echoErr: make(chan error, 1), probeStop: make(chan struct{}),
		srvUDP: &net.UDPAddr{IP: net.ParseIP(SrvIP), Port: 9000}}
	var dl, echo net.Listener
	if err := srv.Do(func() error {
		var err error
		if l.udpSrv, err = net.ListenUDP("udp4", l.srvUDP); err != nil {
			return err
		}
		if dl, err = net.Listen("tcp4", SrvIP+":8080"); err != nil {
			return err
		}
		echo, err = net.Listen("tcp4", SrvIP+":8081")
		return err
	}); err != nil {
		l.close()
		return nil, err
	}
	l.lns = []net.Listener{dl, echo}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := l.udpSrv.ReadFromUDP(buf)
			if err != nil {
				return
			}
			_, _ = l.udpSrv.WriteToUDP(append([]byte(from.String()+"|"), buf[:n]...), from)
		}
	}()
	l.data = make([]byte, size)
	_, _ = rand.NewChaCha8([32]byte{2}).Read(l.data)
	l.want = sha256.Sum256(l.data)
	go func() {
		c, err := dl.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		const chunk = 32 << 10
		begin := time.Now()
		for off := 0; off < len(l.data); off += chunk {
			if _, err := c.Write(l.data[off:min(off+chunk, len(l.data))]); err != nil {
				l.srvErr.Store(fmt.Sprintf("download server: %v", err))
				return
			}
			time.Sleep(time.Until(begin.Add(time.Duration(off+chunk) * time.Second / time.Duration(rate))))
		}
	}()
	go func() {
		c, err := echo.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := io.Copy(c, c); err != nil {
			l.srvErr.Store(fmt.Sprintf("echo server: %v", err))
		}
	}()
	return l, nil
}

// dialFlows opens n UDP flows from the client (ports 20000 on), each
// answered through the NAT address; before keeps the external endpoint
// each was seen from.
func (l *load) dialFlows(cli *netns.NS, n int) error {
	for i := range n {
		c, err := dialUDP(cli, 20000+i, l.srvUDP)
		if err != nil {
			return err
		}
		l.flows = append(l.flows, c)
		src, err := ask(c, "x", 5)
		if err != nil || !strings.HasPrefix(src, VIPOut+":") {
			return fmt.Errorf("hapair: udp flow %d: %q %v", i, src, err)
		}
		l.before = append(l.before, src)
	}
	return nil
}

// startSessions opens the echo session and the download, and starts the
// probe.
func (l *load) startSessions(cli *netns.NS) error {
	dialTCP := func(addr string) (net.Conn, error) {
		var c net.Conn
		err := cli.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp4", addr, 5*time.Second)
			return err
		})
		return c, err
	}
	var err error
	if l.ec, err = dialTCP(SrvIP + ":8081"); err != nil {
		return err
	}
	l.conns = append(l.conns, l.ec)
	if err := l.roundTrip(0); err != nil {
		return fmt.Errorf("hapair: echo: %w", err)
	}
	dc, err := dialTCP(SrvIP + ":8080")
	if err != nil {
		return err
	}
	l.conns = append(l.conns, dc)
	go func() {
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var r dlResult
		for r.n < len(l.data) {
			_ = dc.SetReadDeadline(time.Now().Add(20 * time.Second))
			n, err := dc.Read(buf)
			h.Write(buf[:n])
			r.n += n
			l.dlGot.Store(int64(r.n))
			if err != nil {
				if !errors.Is(err, io.EOF) || r.n < len(l.data) {
					r.err = err
				}
				break
			}
		}
		copy(r.sum[:], h.Sum(nil))
		l.dlDone <- r
	}()
	go func() {
		for i := 1; ; i++ {
			select {
			case <-l.echoStop:
				l.echoErr <- nil
				return
			case <-time.After(50 * time.Millisecond):
			}
			if err := l.roundTrip(i); err != nil {
				l.echoErr <- fmt.Errorf("echo %d: %w", i, err)
				return
			}
			l.echoes.Add(1)
			if l.eventAt.Load() != 0 {
				l.echoesAfter.Add(1)
			}
		}
	}()
	return l.startProbe(cli)
}

// startProbe sends a datagram every 10 ms on a flow of its own; each
// answer names its datagram. The longest time without an answer is the
// outage; the first answer to a datagram sent after the event times the
// recovery.
func (l *load) startProbe(cli *netns.NS) error {
	var err error
	if l.probe, err = dialUDP(cli, 30000, l.srvUDP); err != nil {
		return err
	}
	if _, err := ask(l.probe, "p-1", 5); err != nil {
		return fmt.Errorf("hapair: probe: %w", err)
	}
	l.lastAnswer.Store(mono())
	go func() {
		for i := 0; ; i++ {
			select {
			case <-l.probeStop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			l.sent.Store(i, mono())
			_, _ = l.probe.Write([]byte("p" + strconv.Itoa(i)))
		}
	}()
	go func() {
		buf := make([]byte, 512)
		for {
			_ = l.probe.SetReadDeadline(time.Now().Add(30 * time.Second))
			n, err := l.probe.Read(buf)
			if errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			if err != nil {
				continue // an ICMP error on the connected socket
			}
			now := mono()
			if d := now - l.lastAnswer.Swap(now); d > l.outage.Load() {
				l.outage.Store(d)
			}
			_, msg, _ := strings.Cut(string(buf[:n]), "|")
			i, err := strconv.Atoi(strings.TrimPrefix(msg, "p"))
			if err != nil {
				continue
			}
			at, ok := l.sent.Load(i)
			if k := l.eventAt.Load(); ok && k != 0 && at.(int64) > k {
				l.recovered.CompareAndSwap(0, now-k)
			}
		}
	}()
	return nil
}

// mark records the event's moment.
func (l *load) mark() { l.eventAt.Store(mono()) }

func (l *load) roundTrip(i int) error {
	msg := []byte(fmt.Sprintf("echo %d\n", i))
	if err := l.ec.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		return err
	}
	if _, err := l.ec.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(l.ec, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("echoed %q for %q", got, msg)
	}
	return nil
}

// outcome is what the event cost the load.
type outcome struct {
	lost                int // connections that did not survive
	downloadOK          bool
	echoes, echoesAfter int
	problems            []string
}

// finish waits for the download, stops the echo session and checks
// every UDP flow's external port; event names the event in problems.
func (l *load) finish(event string) outcome {
	var o outcome
	problem := func(f string, a ...any) { o.problems = append(o.problems, fmt.Sprintf(f, a...)) }
	select {
	case r := <-l.dlDone:
		o.downloadOK = r.err == nil && r.n == len(l.data) && r.sum == l.want
		if !o.downloadOK {
			o.lost++
			problem("download: %d of %d bytes, error %v, checksum match %v", r.n, len(l.data), r.err, r.sum == l.want)
		}
	case <-time.After(60 * time.Second):
		o.lost++
		problem("the download stalled at %d bytes", l.dlGot.Load())
	}
	n := l.echoesAfter.Load()
	_ = eventually("echoes after the download", 10*time.Second, func() bool { return l.echoesAfter.Load() >= n+10 })
	close(l.echoStop)
	if err := <-l.echoErr; err != nil {
		o.lost++
		problem("echo session: %v", err)
	}
	o.echoes, o.echoesAfter = int(l.echoes.Load()), int(l.echoesAfter.Load())
	for i, c := range l.flows {
		src, err := ask(c, "y", 5)
		if err != nil || src != l.before[i] {
			o.lost++
			problem("udp flow %d: left as %s before the %s, %q after (%v)", i, l.before[i], event, src, err)
		}
	}
	if e := l.srvErr.Load(); e != nil {
		problem("%s", e)
	}
	return o
}

func (l *load) close() {
	l.closeOnce.Do(func() {
		close(l.probeStop)
		if l.probe != nil {
			l.probe.Close()
		}
		for _, c := range l.flows {
			c.Close()
		}
		for _, c := range l.conns {
			c.Close()
		}
		for _, ln := range l.lns {
			ln.Close()
		}
		if l.udpSrv != nil {
			l.udpSrv.Close()
		}
	})
}
