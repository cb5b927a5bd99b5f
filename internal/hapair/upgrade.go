package hapair

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"xnat/control/api"
	"xnat/internal/netns"
)

// An upgrade (Config.Upgrade) replaces both boxes' xnatd with xnatd
// --takeover started beside the running one, before the kill, while the
// load runs: first the backup's, whose new xnatd refills its external
// cache from the primary (the node asks for the peer's table once the
// pool check accepts it); then, in the middle of the download, the
// primary's, whose sync link closes and reopens. The kill then takes
// the new primary. Nothing may be lost or change its external port
// across the two takeovers, keepalived must not move the addresses, and
// the backup must keep receiving the primary's events: connections made
// through the new primary reach its cache and survive the failover.

// UpgradeResult is what the takeovers before the kill cost.
type UpgradeResult struct {
	// BackupGapMS and PrimaryGapMS are the new xnatds' own measures of
	// their takeover gaps (the takeover log line's gap_ms), the lines
	// themselves in BackupLog and PrimaryLog.
	BackupGapMS  float64 `json:"backup_gap_ms"`
	PrimaryGapMS float64 `json:"primary_gap_ms"`
	BackupLog    string  `json:"backup_takeover_log"`
	PrimaryLog   string  `json:"primary_takeover_log"`
	// RefillMS: from the new backup running to its cache holding every
	// connection again, the TCP ones established.
	RefillMS float64 `json:"refill_ms"`
	// HandedOver: the connections the new primary received and
	// committed.
	HandedOver int `json:"handed_over"`
	Committed  int `json:"committed"`
	// PortsKept: the UDP flows that answered through the new primary with
	// their external port unchanged.
	PortsKept int `json:"ports_kept"`
	// EventsAfter: connections made through the new primary that reached
	// the backup's cache; EventLagMS the longest of their waits.
	EventsAfter int     `json:"events_after"`
	EventLagMS  float64 `json:"event_lag_ms"`
	// Transitions: keepalived state changes on either box during the
	// upgrade (any is a flap: the addresses must stay where they are).
	Transitions int `json:"vrrp_transitions"`
}

// upgradeLoad is what the upgrade needs of the running load.
type upgradeLoad struct {
	sockA, sockB string
	// total connections the backup's cache holds (2 of them established
	// TCP connections).
	total  int
	flows  []*net.UDPConn
	before []string
	srvUDP *net.UDPAddr
	// underWay reports whether the download is far enough along for the
	// primary's takeover to land in its middle.
	underWay func() bool
}

// postFlows are the connections made through the new primary; they stay
// open for the failover's checks.
const postFlows = 20

func haCache(sock string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := api.NewClient(sock).HACache(ctx)
	if err != nil {
		return nil, err
	}
	return c.Conns, nil
}

func establishedTCP(conns []string) int {
	return strings.Count(strings.Join(conns, "\n"), "tcp ESTABLISHED")
}

// transitions counts the state changes keepalived logged so far.
func (p *pair) transitions() int {
	n := 0
	for _, k := range p.kas {
		n += strings.Count(k.out.String(), "Entering ")
	}
	return n
}

// takeOver starts xnatd --takeover beside box name's running xnatd old
// and waits until the new one runs and the old one has exited.
func (p *pair) takeOver(x *netns.NS, name string, old *xnatdProc) (*xnatdProc, float64, string, error) {
	next, err := p.startXnatd(x, name, "--config", p.boxConf(name), "--takeover")
	if err != nil {
		return nil, 0, "", err
	}
	if err := old.wait(20 * time.Second); err != nil {
		return nil, 0, "", fmt.Errorf("hapair: the old xnatd %s: %w", name, err)
	}
	m := gapRE.FindStringSubmatch(next.log.String())
	if m == nil {
		return nil, 0, "", fmt.Errorf("hapair: the new xnatd %s logged no takeover:\n%s", name, next.log.String())
	}
	gap, _ := strconv.ParseFloat(m[4], 64)
	return next, gap, m[0], nil
}

// upgrade replaces the backup's then the primary's xnatd (a and b, their
// running processes) and returns the new primary and the flows made
// through it, each with the source the server saw.
func (p *pair) upgrade(res *Result, a, b *xnatdProc, l *upgradeLoad) (*xnatdProc, []*net.UDPConn, []string, error) {
	up := &UpgradeResult{}
	res.Upgrade = up
	problem := func(f string, args ...any) { res.Problems = append(res.Problems, fmt.Sprintf(f, args...)) }
	vrrp0 := p.transitions()
	addressesStay := func(when string) {
		if !hasAddr(p.a, VIPIn) || !hasAddr(p.a, VIPOut) || hasAddr(p.b, VIPIn) || hasAddr(p.b, VIPOut) {
			problem("the addresses moved %s", when)
		}
	}

	// The backup.
	nb, gap, line, err := p.takeOver(p.b, "b", b)
	if err != nil {
		return nil, nil, nil, err
	}
	up.BackupGapMS, up.BackupLog = gap, line
	running := time.Now()
	var cached []string
	if err := eventually("the new backup's cache", 10*time.Second, func() bool {
		c, err := haCache(l.sockB)
		cached = c
		return err == nil && len(c) >= l.total && establishedTCP(c) == 2
	}); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %d connections, %d TCP established, want %d and 2", err, len(cached), establishedTCP(cached), l.total)
	}
	up.RefillMS = float64(time.Since(running)) / float64(time.Millisecond)
	addressesStay("during the backup's takeover")
	_ = nb

	// The primary, in the middle of the download.
	if err := eventually("the download under way", 20*time.Second, l.underWay); err != nil {
		return nil, nil, nil, err
	}
	stB0, err := haStatus(l.sockB)
	if err != nil {
		return nil, nil, nil, err
	}
	na, gap, line, err := p.takeOver(p.a, "a", a)
	if err != nil {
		return nil, nil, nil, err
	}
	up.PrimaryGapMS, up.PrimaryLog = gap, line
	if m := gapRE.FindStringSubmatch(line); m != nil {
		up.HandedOver, _ = strconv.Atoi(m[1])
		up.Committed, _ = strconv.Atoi(m[2])
	}
	for i, c := range l.flows {
		src, err := ask(c, "u", 5)
		if err != nil || src != l.before[i] {
			problem("udp flow %d: left as %s before the upgrade, %q through the new primary (%v)", i, l.before[i], src, err)
			continue
		}
		up.PortsKept++
	}

	// The backup keeps receiving the primary's events: new flows through
	// the new primary reach its cache.
	var post []*net.UDPConn
	var srcs []string
	fail := func(err error) (*xnatdProc, []*net.UDPConn, []string, error) {
		for _, c := range post {
			c.Close()
		}
		return nil, nil, nil, err
	}
	for i := range postFlows {
		c, err := dialUDP(p.cli, 32000+i, l.srvUDP)
		if err != nil {
			return fail(err)
		}
		post = append(post, c)
		src, err := ask(c, "n", 5)
		if err != nil || !strings.HasPrefix(src, VIPOut+":") {
			return fail(fmt.Errorf("hapair: udp flow %d through the new primary: %q %v", i, src, err))
		}
		srcs = append(srcs, src)
		start := time.Now()
		key := fmt.Sprintf(" sport=%d dport=9000 ", 32000+i)
		if err := eventually("a flow of the new primary in the backup's cache", 5*time.Second, func() bool {
			c, err := haCache(l.sockB)
			return err == nil && strings.Contains(strings.Join(c, "\n"), key)
		}); err != nil {
			problem("udp flow %d through the new primary: not in the backup's cache within 5 s", 32000+i)
			continue
		}
		up.EventsAfter++
		up.EventLagMS = max(up.EventLagMS, float64(time.Since(start))/float64(time.Millisecond))
	}
	stB1, err := haStatus(l.sockB)
	if err != nil {
		return fail(err)
	}
	if stB1.Link.MsgRecv <= stB0.Link.MsgRecv {
		problem("the backup received no sync message after the primary's takeover (%d before, %d after)", stB0.Link.MsgRecv, stB1.Link.MsgRecv)
	}
	addressesStay("during the primary's takeover")
	up.Transitions = p.transitions() - vrrp0
	if up.Transitions != 0 {
		problem("keepalived changed state %d times during the upgrade", up.Transitions)
	}
	return na, post, srcs, nil
}
