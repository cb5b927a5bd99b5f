// Package api is xnat's control API: an HTTP/JSON interface served by
// xnatd on a unix socket, the typed requests and responses shared by the
// server and its client, the event log operators follow, and a Prometheus
// collector over the daemon's counters.
//
// # Routes
//
// Every route is under /v1; bodies are JSON. An error is an HTTP status and
// {"error": "one-line reason"}: 400 for a request that is malformed or
// names something that does not exist (a bad iptables command line, an
// unknown sysctl key, a bad value), 422 for a well-formed change the daemon
// refuses (a rule set that does not compile, a rule that does not exist,
// a read-only key), 413 for a body over the route's limit. A refused
// change leaves everything as it was.
//
//	GET  /v1/stats                    Stats
//	GET  /v1/conntrack?FILTER         ConntrackList, streamed (FILTER: proto src dst sport dport state mark)
//	GET  /v1/conntrack/count          ConntrackCount
//	GET  /v1/conntrack/stats          ConntrackStats
//	POST /v1/conntrack/delete?FILTER  ConntrackDeleted
//	POST /v1/conntrack/flush          ConntrackDeleted
//	GET  /v1/mappings                 MappingList (full-cone mappings, FULLCONENAT)
//	POST /v1/iptables                 IptablesRequest → IptablesResponse
//	GET  /v1/iptables/save?counters=1&table=nat  text/plain, iptables-save format
//	POST /v1/iptables/restore         RestoreRequest → IptablesResponse
//	GET  /v1/sysctl[?name=KEY]        SysctlValues
//	POST /v1/sysctl                   SysctlRequest → SysctlValues
//	GET  /v1/events?after=N[&follow=1]  EventList, or with follow JSON lines (one Event each) as they happen
//	GET  /v1/ha/status                HAStatus (422 without an [ha] section, as every /v1/ha route)
//	GET  /v1/ha/cache                 HACache: the peer's connections (the external cache)
//	POST /v1/ha/flush                 HAFlushed: the external cache emptied
//	POST /v1/ha/resync                the peer asked for its whole table
//	POST /v1/ha/bulk                  this side's whole table sent to the peer
//	POST /v1/ha/commit                HACommitted: the external cache moved into the flow table
//	POST /v1/ha/role                  HARole: the role keepalived gave this box (primary, backup, fault)
//
// # Streamed answers
//
// A connection listing is written while the table is walked: a batch of
// connections is copied out of the table (one short critical section of
// the control plane; the packet path takes no lock and is never waited
// for), encoded and written, and the answer is flushed every 64 KiB. It is
// still one ConntrackList JSON object, "acct" before "conns", so any JSON
// reader takes it whole, and Client.ConntrackStream reads it a connection
// at a time: neither side's memory grows with the table. While a filter
// drops every connection for a second, a blank (JSON whitespace) keeps the
// client informed that the walk goes on. A followed event stream
// (application/x-ndjson) carries an empty line every FollowHeartbeat when
// there is no event.
//
// # Limits
//
// A client has ReadHeaderTimeout (5 s) to send a request's headers and
// ReadTimeout (30 s) for its body; a body is at most MaxBody (1 MiB), or
// MaxRestoreBody (16 MiB) for iptables-restore, and a larger one is cut off
// with 413 without being read. Every write of an answer must finish within
// WriteTimeout (30 s): a client that stops reading is disconnected, however
// long the answer, and the walk behind it stops. Kept-alive connections
// close after IdleTimeout (2 min) without a request; at most MaxConns (128)
// connections are served at once, further ones wait to be accepted. The
// handlers share no lock but the one that serialises rule and sysctl
// changes and the table's control-plane section a listing takes per batch,
// so one client's long listing holds up no other for longer than a batch.
// The client (NewClient) gives every request DefaultTimeout (10 s) in
// total, connecting included; a streamed answer has no total limit, only a
// limit on each silence of the daemon.
//
// # Changes
//
// Rule changes run iptables.Apply or iptables.Restore on a copy of the rule
// set in force and hand the result to daemon.ReplaceRules, which compiles it
// before swapping it in; sysctl changes go through sysctl.Set, which checks
// every assignment before applying any. Changes are serialised by the server.
//
// # Events
//
// A monitor goroutine reads the daemon's counters a few times a second (no
// work on the packet path) and records typed events in a bounded ring with
// sequence numbers: the table full ("nf_conntrack: table full, dropping
// packet", with the drops since the condition began; repeated at most every
// FullRepeat while drops continue) and no longer full (no table_full drop for
// ClearAfter and the count below the limit), out of ports, the rule set
// replaced, an interface's addresses changed, masqueraded connections
// flushed. Options.OnEvent receives each as it is recorded (xnatd logs them).
//
// # The socket
//
// Listen creates the socket's directory (0755) if needed, removes a stale
// socket (refusing to when a daemon answers on it), and makes the socket
// mode 0600, so only its owner (root, for xnatd) may connect.
package api
