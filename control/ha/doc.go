// Package ha speaks conntrackd's state-synchronisation protocol, so that
// an xnat pair, or xnat and a Linux box running conntrackd (conntrack-tools),
// share their connections.
//
// The wire format (wire.go) is conntrackd's: datagrams hold one or more
// messages, each an 8-byte header (version and type, flags, length,
// sequence number) followed by attribute TLVs that describe one
// connection: its original tuple, protocol, TCP state, status bits,
// timeout, mark and NAT (the translated source and destination address
// and ports). Control messages (ACK, NACK, resync request) carry a
// sequence range after the header.
//
// Session (ftfw.go) is the FTFW reliability layer: every message carries a
// sequence number; the receiver acknowledges each window of messages,
// asks for a gap to be sent again with a NACK, and the sender keeps what
// it sent until acknowledged. A HELLO handshake restarts the peers'
// sequence tracking, ALIVE messages keep the link observed when idle (and
// reveal a lost tail), and a RESYNC request asks the peer for its whole
// table. Session does no I/O: Link (link.go) runs it over UDP unicast or
// multicast, accepting datagrams only from the configured peer.
//
// Cache (cache.go) is the backup's external cache: the peer's
// connections, kept apart from the flow table until committed. Conn
// converts between the wire's view of a connection and the flow table's
// (flowtable.NewFlow and flowtable.FlowInfo). Node.Commit (conntrackd -c)
// hands the cache to a Committer (the dataplane), which inserts each
// connection with its translation and external port on the core that
// owns the port.
//
// Nothing here panics on bad input: a malformed datagram, message or
// attribute is an error, and Session counts it.
package ha
