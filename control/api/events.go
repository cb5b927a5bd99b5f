package api

import (
	"slices"
	"strconv"
	"sync"
	"time"

	"xnat/dataplane"
	"xnat/flowtable"
)

// eventLog is a bounded ring of events with sequence numbers from 1.
type eventLog struct {
	mu      sync.Mutex
	buf     []Event // ring
	next    uint64  // sequence number of the next event
	changed chan struct{}
	onEvent func(Event)
}

func newEventLog(capacity int, on func(Event)) *eventLog {
	return &eventLog{buf: make([]Event, 0, capacity), next: 1, changed: make(chan struct{}), onEvent: on}
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	e.Seq = l.next
	l.next++
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if len(l.buf) < cap(l.buf) {
		l.buf = append(l.buf, e)
	} else {
		l.buf[(e.Seq-1)%uint64(cap(l.buf))] = e
	}
	close(l.changed)
	l.changed = make(chan struct{})
	on := l.onEvent
	l.mu.Unlock()
	if on != nil {
		on(e)
	}
}

// since returns the events after seq still held, oldest first, and a
// channel closed at the next event.
func (l *eventLog) since(seq uint64) ([]Event, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Event
	for _, e := range l.buf {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b Event) int {
		if a.Seq < b.Seq {
			return -1
		}
		return 1
	})
	return out, l.changed
}

// monitor is the state the event monitor keeps between ticks.
type monitor struct {
	started    bool
	fullEvents uint64
	tableFull  uint64 // table_full drops seen
	full       bool
	fullSince  time.Time
	fullFrom   uint64 // table_full drops when it began
	lastDrop   time.Time
	lastFullEv time.Time
	oop        uint64 // out_of_ports drops seen
	oopPending uint64
	lastOOPEv  time.Time
	flushed    uint64
	addrs      map[string][]string
}

// tick compares the daemon's counters with the last tick's and records
// what changed.
func (s *Server) tick(m *monitor, now time.Time) {
	st := s.d.Stats()
	fe, _ := s.d.Table().FullEvents()
	tf := st.Pipeline.Drop(dataplane.ReasonTableFull)
	oop := st.Pipeline.Drop(dataplane.ReasonOutOfPorts)
	addrs := s.addrs()
	if !m.started {
		m.started = true
		m.fullEvents, m.tableFull, m.oop, m.flushed, m.addrs = fe, tf, oop, st.Flushed, addrs
		s.noteReplacements(st.RuleReplacements, "")
		return
	}
	o := &s.opts
	if tf > m.tableFull || fe != m.fullEvents {
		m.lastDrop = now
		if !m.full {
			m.full, m.fullSince, m.fullFrom = true, now, m.tableFull
		}
		if m.lastFullEv.IsZero() || now.Sub(m.lastFullEv) >= o.FullRepeat || m.lastFullEv.Before(m.fullSince) {
			m.lastFullEv = now
			s.events.add(Event{Time: now, Kind: KindTableFull, Level: "WARN", Msg: "nf_conntrack: table full, dropping packet",
				Drops: tf - m.fullFrom, Conns: st.Conns, Max: st.Max})
		}
	} else if m.full && now.Sub(m.lastDrop) >= o.ClearAfter && st.Conns < st.Max {
		m.full = false
		s.events.add(Event{Time: now, Kind: KindTableNotFull, Level: "INFO", Msg: "nf_conntrack: table no longer full",
			Drops: tf - m.fullFrom, Conns: st.Conns, Max: st.Max, Duration: now.Sub(m.fullSince).Round(time.Millisecond).String()})
	}
	m.fullEvents, m.tableFull = fe, tf
	if oop > m.oop {
		m.oopPending += oop - m.oop
	}
	m.oop = oop
	if m.oopPending > 0 && (m.lastOOPEv.IsZero() || now.Sub(m.lastOOPEv) >= o.FullRepeat) {
		m.lastOOPEv = now
		s.events.add(Event{Time: now, Kind: KindOutOfPorts, Level: "WARN", Msg: "out of NAT ports, dropping new connections",
			Drops: m.oopPending})
		m.oopPending = 0
	}
	if st.Flushed > m.flushed {
		s.events.add(Event{Time: now, Kind: KindMasqueradeFlush, Level: "INFO", Msg: "masqueraded connections flushed",
			Count: st.Flushed - m.flushed})
	}
	m.flushed = st.Flushed
	for _, name := range s.names {
		if !slices.Equal(m.addrs[name], addrs[name]) {
			s.events.add(Event{Time: now, Kind: KindAddressChanged, Level: "INFO", Msg: "interface address changed",
				Interface: name, Addrs: addrs[name]})
		}
	}
	m.addrs = addrs
	s.noteReplacements(st.RuleReplacements, "daemon")
}

// noteReplacements records a rules_replaced event for replacements the
// server did not make itself (source "" only catches up).
func (s *Server) noteReplacements(n uint64, source string) {
	if !s.mu.TryLock() {
		return // a change is under way; it records its own event
	}
	defer s.mu.Unlock()
	if n > s.replacements && source != "" {
		s.events.add(Event{Kind: KindRulesReplaced, Level: "INFO", Msg: "rule set replaced", Count: n, Source: source})
	}
	s.replacements = max(s.replacements, n)
}

// rulesReplaced records a replacement the server made. Called with mu held.
func (s *Server) rulesReplaced(source string) {
	n := s.d.Stats().RuleReplacements
	s.replacements = n
	s.events.add(Event{Kind: KindRulesReplaced, Level: "INFO", Msg: "rule set replaced", Count: n, Source: source})
}

// addrs returns each xnat interface's IPv4 addresses (CIDR) in the
// daemon's latest kernel snapshot.
func (s *Server) addrs() map[string][]string {
	snap := s.d.Snapshot()
	out := make(map[string][]string, len(s.names))
	if snap == nil {
		return out
	}
	for _, name := range s.names {
		ifc, ok := snap.IfaceByName(name)
		if !ok {
			out[name] = nil
			continue
		}
		var as []string
		for _, a := range ifc.Addrs {
			as = append(as, flowtable.FormatAddr(a.Addr)+"/"+strconv.Itoa(int(a.Len)))
		}
		out[name] = as
	}
	return out
}

func (s *Server) monitorLoop() {
	defer close(s.monDone)
	t := time.NewTicker(s.opts.MonitorInterval)
	defer t.Stop()
	var m monitor
	s.tick(&m, time.Now())
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.tick(&m, now)
		}
	}
}
