package ha

import (
	"fmt"
	"time"

	"xnat/flowtable"
)

// Reply returns the reply direction's tuple.
func (c *Conn) Reply() flowtable.Tuple {
	src, dst, sport, dport := c.ReplyTuple()
	return flowtable.MakeTuple(c.Proto, src, sport, dst, dport)
}

// Orig returns the original direction's tuple.
func (c *Conn) Orig() flowtable.Tuple {
	if c.Proto == protoICMP {
		return flowtable.MakeTuple(c.Proto, c.Src, c.SrcPort, c.Dst, 0)
	}
	return flowtable.MakeTuple(c.Proto, c.Src, c.SrcPort, c.Dst, c.DstPort)
}

// State returns the flow table's state for the connection: the TCP state
// as the kernel numbers it, UDP as a stream once assured (as Linux
// decides), ICMP, or generic.
func (c *Conn) State() (flowtable.State, error) {
	switch c.Proto {
	case protoTCP:
		if c.Has&HasTCPState == 0 || c.TCPState == tcpNone || c.TCPState > tcpMax {
			return flowtable.StateNone, fmt.Errorf("%w: TCP connection without a state", ErrMissing)
		}
		return flowtable.State(c.TCPState), nil
	case protoUDP:
		if c.Status&IPSAssured != 0 {
			return flowtable.UDPStream, nil
		}
		return flowtable.UDP, nil
	case protoICMP:
		return flowtable.ICMP, nil
	}
	return flowtable.Generic, nil
}

// NewFlow returns the flow-table record for the connection: both tuples,
// the state and the status flags, and the mark. The caller inserts it on
// the core that owns the reply tuple's port.
func (c *Conn) NewFlow() (flowtable.NewFlow, error) {
	st, err := c.State()
	if err != nil {
		return flowtable.NewFlow{}, err
	}
	status := uint32(st)
	if c.Status&IPSSeenReply != 0 {
		status |= flowtable.FlagSeenReply
	}
	if c.Status&IPSAssured != 0 {
		status |= flowtable.FlagAssured
	}
	orig, reply := c.Orig(), c.Reply()
	if orig.Src != reply.Dst || orig.SrcPort != reply.DstPort {
		status |= flowtable.FlagSrcNAT
	}
	if orig.Dst != reply.Src || orig.DstPort != reply.SrcPort {
		status |= flowtable.FlagDstNAT
	}
	return flowtable.NewFlow{Orig: orig, Reply: reply, Status: status, Mark: c.Mark}, nil
}

// FromFlow describes a flow-table connection for the wire: its original
// tuple, its translation as NAT attributes (only the parts that change,
// as conntrackd sends them), its state, status and the time it has left.
func FromFlow(fi *flowtable.FlowInfo) Conn {
	o, r := fi.Orig, fi.Reply
	c := Conn{Proto: o.Proto, Src: o.Src, Dst: o.Dst, SrcPort: o.SrcPort, DstPort: o.DstPort, Mark: fi.Mark}
	if fi.Mark != 0 {
		c.Has |= HasMark
	}
	st := fi.State()
	c.Status = IPSConfirmed
	if fi.Status&flowtable.FlagSeenReply != 0 {
		c.Status |= IPSSeenReply
	}
	if fi.Status&flowtable.FlagAssured != 0 {
		c.Status |= IPSAssured
	}
	switch {
	case st.IsTCP():
		c.TCPState = uint8(st)
		c.Has |= HasTCPState
	case o.Proto == protoICMP:
		c.ICMPType = icmpEcho
		c.Has |= HasICMP
	}
	if r.Dst != o.Src {
		c.SNAT, c.Has = r.Dst, c.Has|HasSNAT
	}
	if r.Src != o.Dst {
		c.DNAT, c.Has = r.Src, c.Has|HasDNAT
	}
	rsport, rdport := r.SrcPort, r.DstPort
	osport, odport := o.SrcPort, o.DstPort
	if o.Proto == protoICMP {
		// The identifier is the only "port": the request's SrcPort, the reply's DstPort.
		rsport, odport = 0, 0
	}
	if rdport != osport {
		c.SPAT, c.Has = rdport, c.Has|HasSPAT
	}
	if rsport != odport {
		c.DPAT, c.Has = rsport, c.Has|HasDPAT
	}
	if c.Has&(HasSNAT|HasSPAT) != 0 {
		c.Status |= IPSSrcNAT | IPSSrcNATDone | IPSDstNATDone
	}
	if c.Has&(HasDNAT|HasDPAT) != 0 {
		c.Status |= IPSDstNAT | IPSSrcNATDone | IPSDstNATDone
	}
	if fi.Expires > 0 {
		c.Timeout = uint32((fi.Expires + time.Second - 1) / time.Second)
		c.Has |= HasTimeout
	}
	return c
}

// String formats the connection as conntrack -L does.
func (c *Conn) String() string {
	o, r := c.Orig(), c.Reply()
	s := protoName(c.Proto)
	if c.Has&HasTCPState != 0 {
		s += " " + flowtable.State(c.TCPState).String()
	}
	s += fmt.Sprintf(" src=%s dst=%s", flowtable.FormatAddr(o.Src), flowtable.FormatAddr(o.Dst))
	if c.Proto == protoTCP || c.Proto == protoUDP {
		s += fmt.Sprintf(" sport=%d dport=%d", o.SrcPort, o.DstPort)
	}
	if c.Proto == protoICMP {
		s += fmt.Sprintf(" type=%d code=%d id=%d", c.ICMPType, c.ICMPCode, c.SrcPort)
	}
	if c.Status&IPSSeenReply == 0 {
		s += " [UNREPLIED]"
	}
	s += fmt.Sprintf(" src=%s dst=%s", flowtable.FormatAddr(r.Src), flowtable.FormatAddr(r.Dst))
	if c.Proto == protoTCP || c.Proto == protoUDP {
		s += fmt.Sprintf(" sport=%d dport=%d", r.SrcPort, r.DstPort)
	}
	if c.Status&IPSAssured != 0 {
		s += " [ASSURED]"
	}
	if c.Has&HasMark != 0 {
		s += fmt.Sprintf(" mark=%d", c.Mark)
	}
	return s
}
