package api

import (
	"time"

	"xnat/flowtable"
)

// Version is the path prefix of every route.
const Version = "/v1"

// ErrorResponse is the body of every failed request.
type ErrorResponse struct {
	Error string `json:"error"`
}

// Stats are every counter of the running daemon.
type Stats struct {
	// Time is when the counters were read (for rates).
	Time        time.Time       `json:"time"`
	Interfaces  []IfaceStats    `json:"interfaces"`
	Connections ConnStats       `json:"connections"`
	Pipeline    PipelineStats   `json:"pipeline"`
	Drops       []Count         `json:"drops"` // every drop reason, in dataplane order
	NAT         NATStats        `json:"nat"`
	Mappings    MappingStats    `json:"mappings"`
	XDP         []XDPStats      `json:"xdp"`
	Rings       []RingStats     `json:"rings"`
	Workers     []WorkerStats   `json:"workers"`
	Control     ControlStats    `json:"control"`
	Cores       []CoreStats     `json:"cores"`
	Conntrack   []ConntrackCore `json:"conntrack"` // per core, then the control plane
}

// Count is one named counter.
type Count struct {
	Name  string `json:"name"`
	Value uint64 `json:"value"`
}

// IfaceStats are one interface's traffic through xnat.
type IfaceStats struct {
	Name      string `json:"name"`
	Role      string `json:"role"` // "inside" or "outside"
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}

// ConnStats are the connection table's gauges and counters.
type ConnStats struct {
	Entries      int    `json:"entries"`
	Max          int    `json:"max"`
	Capacity     int    `json:"capacity"`
	Created      uint64 `json:"created"` // connections the pipelines created
	Expired      uint64 `json:"expired"`
	Inserted     uint64 `json:"inserted"`
	InsertFailed uint64 `json:"insert_failed"`
	Drop         uint64 `json:"drop"`
	EarlyDrop    uint64 `json:"early_drop"`
	Deleted      uint64 `json:"deleted"`
	Found        uint64 `json:"found"`
	Invalid      uint64 `json:"invalid"`
}

// PipelineStats are the pipeline's frame counters, summed over cores.
type PipelineStats struct {
	Forwarded uint64 `json:"forwarded"`
	Replies   uint64 `json:"replies"`
	ToKernel  uint64 `json:"to_kernel"`
	// NeighQueued counts frames held while their next hop was resolved.
	NeighQueued uint64 `json:"neigh_queued"`
	Dropped     uint64 `json:"dropped"`
	Batches     uint64 `json:"batches"`
}

// NATStats are the port allocators' counters, summed over pools and cores.
type NATStats struct {
	Allocated      uint64 `json:"allocated"`
	Preserved      uint64 `json:"preserved"`
	Released       uint64 `json:"released"`
	OutOfPorts     uint64 `json:"out_of_ports"`
	PerSourceLimit uint64 `json:"per_source_limit"`
	PerSourceFull  uint64 `json:"per_source_full"`
	PortsInUse     uint64 `json:"ports_in_use"`
}

// MappingStats are the full-cone mappings' (FULLCONENAT) gauges and
// counters: mappings created for an inside endpoint, reused by a later
// connection of it, expired after their last connection, connections
// admitted inbound through one, and connections that could not have or
// join one (they ran as MASQUERADE/SNAT connections).
type MappingStats struct {
	Entries int    `json:"entries"`
	Max     int    `json:"max"`
	Created uint64 `json:"created"`
	Reused  uint64 `json:"reused"`
	Expired uint64 `json:"expired"`
	Inbound uint64 `json:"inbound"`
	Failed  uint64 `json:"failed"`
}

// XDPStats are one interface's XDP program counters.
type XDPStats struct {
	Interface      string `json:"interface"`
	Mode           string `json:"mode"`
	ToXnatForward  uint64 `json:"to_xnat_forward"`
	ToXnatLocal    uint64 `json:"to_xnat_local"`
	RedirectFailed uint64 `json:"redirect_failed"`
	PassNotIPv4    uint64 `json:"pass_not_ipv4"`
	PassLocal      uint64 `json:"pass_local"`
	PassBroadcast  uint64 `json:"pass_broadcast"`
	PassMalformed  uint64 `json:"pass_malformed"`
	PassVLAN       uint64 `json:"pass_vlan"`
}

// RingStats are one AF_XDP socket's ring counters (queue, interface).
type RingStats struct {
	Queue         int    `json:"queue"`
	Interface     string `json:"interface"`
	ZeroCopy      bool   `json:"zero_copy"`
	Rx            uint64 `json:"rx"`
	Tx            uint64 `json:"tx"`
	Completed     uint64 `json:"completed"`
	Filled        uint64 `json:"filled"`
	TxRingFull    uint64 `json:"tx_ring_full"`
	CompletionLag uint64 `json:"completion_lag"`
	FillRingEmpty uint64 `json:"fill_ring_empty"`
	FillNoFrames  uint64 `json:"fill_no_frames"`
	Wakeups       uint64 `json:"wakeups"`
	KickRetries   uint64 `json:"kick_retries"`
	KickErrors    uint64 `json:"kick_errors"`
	BadDescs      uint64 `json:"bad_descs"`
	TxOutstanding uint64 `json:"tx_outstanding"`
	// The kernel's XDP_STATISTICS.
	RxDropped            uint64 `json:"rx_dropped"`
	RxInvalidDescs       uint64 `json:"rx_invalid_descs"`
	TxInvalidDescs       uint64 `json:"tx_invalid_descs"`
	RxRingFull           uint64 `json:"rx_ring_full"`
	RxFillRingEmptyDescs uint64 `json:"rx_fill_ring_empty_descs"`
	TxRingEmptyDescs     uint64 `json:"tx_ring_empty_descs"`
}

// WorkerStats are one worker's loop counters.
type WorkerStats struct {
	Queue      int    `json:"queue"`
	CPU        int    `json:"cpu"` // -1: unpinned
	Iterations uint64 `json:"iterations"`
	IdleWaits  uint64 `json:"idle_waits"`
	WaitErrors uint64 `json:"wait_errors"`
	Rx         uint64 `json:"rx"`
	Tx         uint64 `json:"tx"`
	TxRefused  uint64 `json:"tx_refused"`
	Dropped    uint64 `json:"dropped"`
	Kernel     uint64 `json:"kernel"`
}

// ControlStats are the control path's counters.
type ControlStats struct {
	MasqueradeFlushed uint64 `json:"masquerade_flushed"`
	Resolves          uint64 `json:"resolves"`
	ResolveErrors     uint64 `json:"resolve_errors"`
	RuleReplacements  uint64 `json:"rule_replacements"`
	EnvErrors         uint64 `json:"env_errors"`
}

// CoreStats are one core's pipeline counters.
type CoreStats struct {
	Core       int           `json:"core"`
	Interfaces []IfaceStats  `json:"interfaces"`
	Pipeline   PipelineStats `json:"pipeline"`
	Created    uint64        `json:"created"`
	Drops      []Count       `json:"drops"`
}

// ConntrackCore are one core's conntrack statistics, as conntrack -S names
// them (Core -1 is the control plane: its deletes).
type ConntrackCore struct {
	Core          int    `json:"core"`
	Found         uint64 `json:"found"`
	Invalid       uint64 `json:"invalid"`
	Insert        uint64 `json:"insert"`
	InsertFailed  uint64 `json:"insert_failed"`
	Drop          uint64 `json:"drop"`
	EarlyDrop     uint64 `json:"early_drop"`
	SearchRestart uint64 `json:"search_restart"`
	Expired       uint64 `json:"expired"`
	Deleted       uint64 `json:"deleted"`
}

// FlowStats converts back to the table's type (for conntrack.WriteStats).
func (c ConntrackCore) FlowStats() flowtable.Stats {
	return flowtable.Stats{Found: c.Found, Invalid: c.Invalid, Insert: c.Insert, InsertFailed: c.InsertFailed,
		Drop: c.Drop, EarlyDrop: c.EarlyDrop, SearchRestart: c.SearchRestart, Expired: c.Expired, Deleted: c.Deleted}
}

func conntrackCore(core int, s flowtable.Stats) ConntrackCore {
	return ConntrackCore{Core: core, Found: s.Found, Invalid: s.Invalid, Insert: s.Insert, InsertFailed: s.InsertFailed,
		Drop: s.Drop, EarlyDrop: s.EarlyDrop, SearchRestart: s.SearchRestart, Expired: s.Expired, Deleted: s.Deleted}
}

// Tuple is one direction of a connection.
type Tuple struct {
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	SPort uint16 `json:"sport"` // for ICMP queries, the identifier (see flowtable.Tuple)
	DPort uint16 `json:"dport"`
}

// Conn is one connection, as conntrack -L shows it.
type Conn struct {
	Proto     uint8    `json:"proto"`
	ProtoName string   `json:"proto_name"`
	State     string   `json:"state"`
	Timeout   int64    `json:"timeout"` // seconds left
	Orig      Tuple    `json:"orig"`
	Reply     Tuple    `json:"reply"`
	Unreplied bool     `json:"unreplied"`
	Assured   bool     `json:"assured"`
	Mark      uint32   `json:"mark"`
	Owner     int      `json:"owner"` // the core that owns it
	Status    uint32   `json:"status"`
	Aux       uint32   `json:"aux"`
	Counters  []Volume `json:"counters,omitempty"` // original then reply, when accounting is on
}

// Volume is a packet and byte count.
type Volume struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// ConntrackList is the answer to a listing.
type ConntrackList struct {
	Acct  bool   `json:"acct"`
	Conns []Conn `json:"conns"`
}

// ConntrackCount is the answer to -C.
type ConntrackCount struct {
	Count int `json:"count"`
}

// ConntrackDeleted is the answer to -D and -F.
type ConntrackDeleted struct {
	Deleted int `json:"deleted"`
}

// ConntrackStats is the answer to -S.
type ConntrackStats struct {
	Cores []ConntrackCore `json:"cores"`
}

// IptablesRequest is one iptables command line, without "iptables".
type IptablesRequest struct {
	Args []string `json:"args"`
}

// IptablesResponse says what a rules command did: Output is what iptables
// would print on standard output (listings), Warnings lines for standard
// error, Changed whether a new rule set was swapped in.
type IptablesResponse struct {
	Output   string   `json:"output,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
	Changed  bool     `json:"changed"`
}

// RestoreRequest is an iptables-restore run.
type RestoreRequest struct {
	Rules    string `json:"rules"` // the file's text
	Counters bool   `json:"counters,omitempty"`
	NoFlush  bool   `json:"noflush,omitempty"`
	Test     bool   `json:"test,omitempty"` // validate against the running daemon only
}

// SysctlValue is one key and its value.
type SysctlValue struct {
	Name     string `json:"name"`
	Value    int64  `json:"value"`
	ReadOnly bool   `json:"read_only,omitempty"`
	Help     string `json:"help,omitempty"`
}

// SysctlValues is a listing or the values after a change.
type SysctlValues struct {
	Values []SysctlValue `json:"values"`
}

// SysctlRequest sets keys, all or none.
type SysctlRequest struct {
	Set []SysctlValue `json:"set"`
}

// Event kinds.
const (
	KindTableFull       = "table_full"
	KindTableNotFull    = "table_not_full"
	KindOutOfPorts      = "out_of_ports"
	KindRulesReplaced   = "rules_replaced"
	KindAddressChanged  = "address_changed"
	KindMasqueradeFlush = "masquerade_flush"
)

// Event is one thing an operator is told about.
type Event struct {
	Seq   uint64    `json:"seq"`
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"`
	Level string    `json:"level"` // INFO, WARN, ERROR
	Msg   string    `json:"msg"`
	// Drops: table_full — packets dropped since the table became full;
	// table_not_full — dropped while it was full; out_of_ports —
	// allocations that found no port since the last such event.
	Drops uint64 `json:"drops,omitempty"`
	Conns int    `json:"conns,omitempty"`
	Max   int    `json:"max,omitempty"`
	// Duration: table_not_full — how long it was full.
	Duration string `json:"duration,omitempty"`
	// Interface and Addrs: address_changed (the new addresses).
	Interface string   `json:"interface,omitempty"`
	Addrs     []string `json:"addrs,omitempty"`
	// Count: rules_replaced — the daemon's replacement counter;
	// masquerade_flush — connections flushed.
	Count uint64 `json:"count,omitempty"`
	// Source: rules_replaced — what replaced them.
	Source string `json:"source,omitempty"`
}

// EventList is a page of events; Next is the sequence number to ask for
// after (the last one returned, or the after asked for when none).
type EventList struct {
	Events []Event `json:"events"`
	Next   uint64  `json:"next"`
}
