package api

import (
	"fmt"
	"net/netip"
	"time"

	"xnat/flowtable"
)

func tupleOf(t flowtable.Tuple) Tuple {
	return Tuple{Src: flowtable.FormatAddr(t.Src), Dst: flowtable.FormatAddr(t.Dst), SPort: t.SrcPort, DPort: t.DstPort}
}

// ConnOf converts a connection from the table.
func ConnOf(fi *flowtable.FlowInfo, acct bool) Conn {
	c := Conn{Proto: fi.Orig.Proto, ProtoName: flowtable.ProtoName(fi.Orig.Proto), State: fi.State().String(),
		Timeout: int64(fi.Expires / time.Second), Orig: tupleOf(fi.Orig), Reply: tupleOf(fi.Reply),
		Unreplied: fi.Unreplied(), Assured: fi.Assured(), Mark: fi.Mark, Owner: fi.Owner, Status: fi.Status, Aux: fi.Aux}
	if acct {
		for _, v := range fi.Counters {
			c.Counters = append(c.Counters, Volume{Packets: v.Packets, Bytes: v.Bytes})
		}
	}
	return c
}

func parseAddr(s string) (uint32, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return 0, fmt.Errorf("%q is not an IPv4 address", s)
	}
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), nil
}

func (t Tuple) flow(proto uint8) (flowtable.Tuple, error) {
	src, err := parseAddr(t.Src)
	if err != nil {
		return flowtable.Tuple{}, err
	}
	dst, err := parseAddr(t.Dst)
	if err != nil {
		return flowtable.Tuple{}, err
	}
	return flowtable.MakeTuple(proto, src, t.SPort, dst, t.DPort), nil
}

// FlowInfo converts back to the table's form, for conntrack.WriteEntry.
func (c *Conn) FlowInfo() (flowtable.FlowInfo, error) {
	orig, err := c.Orig.flow(c.Proto)
	if err != nil {
		return flowtable.FlowInfo{}, fmt.Errorf("connection's original tuple: %w", err)
	}
	reply, err := c.Reply.flow(c.Proto)
	if err != nil {
		return flowtable.FlowInfo{}, fmt.Errorf("connection's reply tuple: %w", err)
	}
	fi := flowtable.FlowInfo{Orig: orig, Reply: reply, Status: c.Status, Mark: c.Mark, Aux: c.Aux,
		Expires: time.Duration(c.Timeout) * time.Second, Owner: c.Owner}
	for i := range min(len(c.Counters), 2) {
		fi.Counters[i] = flowtable.Counter{Packets: c.Counters[i].Packets, Bytes: c.Counters[i].Bytes}
	}
	return fi, nil
}
