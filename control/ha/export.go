package ha

import (
	"context"
	"sync/atomic"
	"time"

	"xnat/dataplane"
	"xnat/flowtable"
)

// EventSource is where connection events come from: the dataplane's
// per-core rings (dataplane.Dataplane).
type EventSource interface {
	Cores() int
	DrainSync(core int, out []dataplane.SyncEvent) int
	SyncDrops() uint64
}

// Sender is where messages go: a Link.
type Sender interface {
	Send(t MsgType, c *Conn)
	Flush() error
}

// Exporter is the primary's sync goroutine: it drains every core's event
// ring, turns each event into a message and sends them in full datagrams.
// When a ring has dropped events (it was full), the peer is sent the whole
// table, as after a resync request.
type Exporter struct {
	src     EventSource
	out     Sender
	tab     *flowtable.Table
	buf     []dataplane.SyncEvent
	drops   uint64
	sent    atomic.Uint64 // events sent
	resends atomic.Uint64 // whole-table sends after dropped events
}

// counters returns the events sent and the whole-table sends after drops.
func (e *Exporter) counters() (sent, resends uint64) { return e.sent.Load(), e.resends.Load() }

// NewExporter returns an exporter from src to out; tab gives the
// timeouts the messages carry and the table sent after drops.
func NewExporter(src EventSource, out Sender, tab *flowtable.Table) *Exporter {
	return &Exporter{src: src, out: out, tab: tab, buf: make([]dataplane.SyncEvent, 1024)}
}

// Poll drains every ring once, sends what it found and returns how many
// events that was.
func (e *Exporter) Poll() (int, error) {
	total := 0
	for c := range e.src.Cores() {
		for {
			n := e.src.DrainSync(c, e.buf)
			for i := range e.buf[:n] {
				e.send(&e.buf[i])
			}
			total += n
			if n < len(e.buf) {
				break
			}
		}
	}
	if d := e.src.SyncDrops(); d != e.drops {
		e.drops = d
		e.resends.Add(1)
		SendTable(e.tab, e.out)
	}
	e.sent.Add(uint64(total))
	return total, e.out.Flush()
}

func (e *Exporter) send(ev *dataplane.SyncEvent) {
	fi := flowtable.FlowInfo{Orig: ev.Orig, Reply: ev.Reply, Status: ev.Status, Mark: ev.Mark}
	t := TypeDelete
	switch ev.Kind {
	case dataplane.SyncNew:
		t = TypeNew
	case dataplane.SyncUpdate:
		t = TypeUpdate
	}
	if t != TypeDelete && e.tab != nil {
		fi.Expires = e.tab.StateTimeout(flowtable.StatusState(ev.Status))
	}
	if t == TypeDelete && e.tab != nil {
		// The peer keys connections by original tuple: a record killed
		// while another with the same original tuple lives (an HA commit
		// replaced it) must not delete the live one there.
		if live, _, ok := e.tab.Get(ev.Orig); ok && live.Orig == ev.Orig {
			return
		}
	}
	c := FromFlow(&fi)
	e.out.Send(t, &c)
}

// busyPoll is how soon the exporter polls again after a poll that found
// events.
const busyPoll = time.Millisecond

// Run polls until ctx ends: every interval, and besides busyPoll (or
// interval, if shorter) after a poll that found events, so that a burst
// of new connections reaches the peer within about a millisecond rather
// than an interval, and a core's ring (16,384 events) does not fill
// between two polls below 16 M events a second. A lone event waits for
// the next tick, as without the extra polls.
func (e *Exporter) Run(ctx context.Context, interval time.Duration) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	again := time.NewTimer(interval)
	again.Stop()
	defer again.Stop()
	busy := min(interval, busyPoll)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-again.C:
		}
		n, err := e.Poll()
		if err != nil {
			return err
		}
		if n > 0 {
			again.Reset(busy)
		}
	}
}

// SendTable sends every connection of tab as an update (a bulk send: the
// answer to a resync request).
func SendTable(tab *flowtable.Table, out Sender) int {
	if tab == nil {
		return 0
	}
	buf := make([]flowtable.FlowInfo, 256)
	sent := 0
	for cursor := 0; ; {
		n, next := tab.List(cursor, buf)
		for i := range buf[:n] {
			c := FromFlow(&buf[i])
			out.Send(TypeUpdate, &c)
		}
		sent += n
		if next < 0 {
			break
		}
		cursor = next
	}
	return sent
}
