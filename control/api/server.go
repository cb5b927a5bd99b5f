package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"xnat/control/daemon"
	"xnat/control/iptables"
	"xnat/control/sysctl"
	"xnat/dataplane/rules"
)

// DefaultSocket is where xnatd serves the API unless told otherwise.
const DefaultSocket = "/run/xnat/xnat.sock"

// Options tune a Server.
type Options struct {
	// OnEvent receives every event as it is recorded (xnatd logs them);
	// it must not block for long.
	OnEvent func(Event)
	// Events is how many events the ring keeps; 0 means 1024.
	Events int
	// MonitorInterval is how often the daemon's counters are compared;
	// 0 means 250 ms.
	MonitorInterval time.Duration
	// FullRepeat is the shortest time between two table_full (or
	// out_of_ports) events while drops continue; 0 means 5 s.
	FullRepeat time.Duration
	// ClearAfter is how long without a table_full drop (and with the
	// count below the limit) ends the condition; 0 means 2 s.
	ClearAfter time.Duration

	// The connections' limits; 0 means the Default... constant of the
	// same name. ReadHeaderTimeout bounds a request's headers, ReadTimeout
	// its body, WriteTimeout each write of the answer (not the answer as a
	// whole: a listing of millions of connections streams for as long as
	// the client keeps reading), IdleTimeout a kept-alive connection
	// between requests.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// MaxConns is how many connections are served at once (0: 128);
	// further clients wait to be accepted.
	MaxConns int
	// MaxBody and MaxRestoreBody bound request bodies (0: MaxBody and
	// MaxRestoreBody); a larger one is refused with 413.
	MaxBody, MaxRestoreBody int64
	// Heartbeat is how often a quiet followed event stream carries an
	// empty line (0: FollowHeartbeat).
	Heartbeat time.Duration
}

// Server serves the control API of one daemon.
type Server struct {
	d       *daemon.Daemon
	conns   connLister // the daemon's flow table
	opts    Options
	names   []string
	nInside int
	events  *eventLog

	mu           sync.Mutex // serialises changes
	replacements uint64     // the daemon's replacement count the events account for

	stop    chan struct{}
	monDone chan struct{}

	hmu     sync.Mutex
	servers []*http.Server
	sockets []socketFile
	closed  bool
}

// New makes a server for a running daemon and starts its event monitor.
func New(d *daemon.Daemon, opts Options) *Server {
	if opts.Events <= 0 {
		opts.Events = 1024
	}
	if opts.MonitorInterval <= 0 {
		opts.MonitorInterval = 250 * time.Millisecond
	}
	if opts.FullRepeat <= 0 {
		opts.FullRepeat = 5 * time.Second
	}
	if opts.ClearAfter <= 0 {
		opts.ClearAfter = 2 * time.Second
	}
	opts.setDefaults()
	cfg := d.Config()
	s := &Server{d: d, conns: d.Table(), opts: opts, names: cfg.Interfaces(), nInside: len(cfg.Inside),
		events: newEventLog(opts.Events, opts.OnEvent), stop: make(chan struct{}), monDone: make(chan struct{})}
	go s.monitorLoop()
	return s
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Version+"/stats", s.stats)
	mux.HandleFunc("GET "+Version+"/conntrack", s.conntrackList)
	mux.HandleFunc("GET "+Version+"/conntrack/count", s.conntrackCount)
	mux.HandleFunc("GET "+Version+"/mappings", s.mappings)
	mux.HandleFunc("GET "+Version+"/conntrack/stats", s.conntrackStats)
	mux.HandleFunc("POST "+Version+"/conntrack/delete", s.conntrackDelete)
	mux.HandleFunc("POST "+Version+"/conntrack/flush", s.conntrackFlush)
	mux.HandleFunc("POST "+Version+"/iptables", s.iptables)
	mux.HandleFunc("GET "+Version+"/iptables/save", s.iptablesSave)
	mux.HandleFunc("POST "+Version+"/iptables/restore", s.iptablesRestore)
	mux.HandleFunc("GET "+Version+"/sysctl", s.sysctlGet)
	mux.HandleFunc("POST "+Version+"/sysctl", s.sysctlSet)
	mux.HandleFunc("GET "+Version+"/events", s.eventsGet)
	mux.HandleFunc("GET "+Version+"/top", s.top)
	s.haRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, http.StatusNotFound, fmt.Errorf("no route %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// socketFile is a socket the server put in place, removed on Close
// unless another server's has replaced it since.
type socketFile struct {
	path string
	fi   os.FileInfo
}

// Listen serves the API on a unix socket at path: it creates the socket's
// directory (0755) if needed, replaces a stale socket (one nothing answers
// on; a live one is an error), and makes the socket mode 0600 before it
// appears at path, so only its owner can ever connect.
func (s *Server) Listen(path string) error {
	return s.listen(path, false)
}

// ListenReplacing is Listen for a daemon taking over from the one serving
// on path (xnatd --takeover): the new socket replaces the old one at path
// in one rename, so that a client (keepalived's check) finds an answer
// at every moment — the old daemon's until then, this one's after. The
// old daemon's Close leaves the new socket in place.
func (s *Server) ListenReplacing(path string) error {
	return s.listen(path, true)
}

func (s *Server) listen(path string, replace bool) error {
	if path == "" {
		path = DefaultSocket
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("control socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if !replace {
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				return fmt.Errorf("control socket %s: another daemon is serving on it", path)
			}
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("removing the stale control socket: %w", err)
			}
		}
	}
	// Bind in a private directory, restrict the socket, then move it into
	// place: no moment where it is reachable with a wider mode.
	tmp, err := os.MkdirTemp(dir, ".xnatd-")
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	tmpPath := filepath.Join(tmp, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmpPath, Net: "unix"})
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmpPath, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	fi, err := os.Lstat(tmpPath)
	if err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Rename(tmpPath, path); err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	sf := socketFile{path: path, fi: fi}
	if err := s.serve(ln); err != nil {
		sf.remove()
		return err
	}
	s.hmu.Lock()
	s.sockets = append(s.sockets, sf)
	s.hmu.Unlock()
	return nil
}

// remove removes the socket file if it is still this one.
func (f socketFile) remove() error {
	cur, err := os.Lstat(f.path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	if !os.SameFile(cur, f.fi) {
		return nil
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// serve serves the API on a listener until Close.
func (s *Server) serve(ln net.Listener) error {
	return s.serveHandler(ln, s.Handler())
}

func (s *Server) serveHandler(ln net.Listener, h http.Handler) error {
	hs := s.httpServer(h)
	s.hmu.Lock()
	if s.closed {
		s.hmu.Unlock()
		ln.Close()
		return errors.New("control API closed")
	}
	s.servers = append(s.servers, hs)
	s.hmu.Unlock()
	go func() { _ = hs.Serve(newLimitListener(ln, s.opts.MaxConns)) }()
	return nil
}

// Close stops serving (followers of the event stream are cut off), stops
// the monitor and removes its sockets (but one another server has
// replaced since: ListenReplacing).
func (s *Server) Close() error {
	s.hmu.Lock()
	if s.closed {
		s.hmu.Unlock()
		return nil
	}
	s.closed = true
	servers, sockets := s.servers, s.sockets
	s.hmu.Unlock()
	close(s.stop)
	<-s.monDone
	var errs []error
	for _, hs := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := hs.Shutdown(ctx); err != nil {
			hs.Close()
		}
		cancel()
	}
	for _, f := range sockets {
		if err := f.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Events returns the events recorded after seq (the ring's oldest first).
func (s *Server) Events(after uint64) []Event {
	ev, _ := s.events.since(after)
	return ev
}

// ReloadRules reloads the daemon's rules file (SIGHUP) and records the
// replacement; on error the rules in force stay.
func (s *Server) ReloadRules() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.d.ReloadRules(); err != nil {
		return err
	}
	s.rulesReplaced("rules file " + s.d.Config().Rules + " (SIGHUP)")
	return nil
}

// httpError is an error with its status.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(err error) error { return &httpError{http.StatusBadRequest, err} }
func refused(err error) error    { return &httpError{http.StatusUnprocessableEntity, err} }

func fail(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorResponse{Error: oneLine(err.Error())})
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		status := http.StatusInternalServerError
		var he *httpError
		if errors.As(err, &he) {
			status = he.status
		}
		fail(w, status, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a request's JSON body into v: one JSON object with known
// fields only, nothing after it. The body's size is bounded by limits.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	err := decodeBody(r.Body, v)
	if err := bodyRead(w, err); err != nil {
		var he *httpError
		if errors.As(err, &he) {
			return err
		}
		return badRequest(fmt.Errorf("request body: %w", err))
	}
	return nil
}

func decodeBody(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			return errors.New("more data after the JSON object")
		}
		return err
	}
	return nil
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) {
	st := s.d.Stats()
	out := StatsOf(&st, s.names, s.nInside, time.Now())
	for i, c := range s.d.Table().CoreStats() {
		out.Conntrack = append(out.Conntrack, conntrackCore(i, c))
	}
	reply(w, out, nil)
}

func (s *Server) conntrackList(w http.ResponseWriter, r *http.Request) {
	args, err := ParseFilterQuery("-L", r.URL.Query())
	if err != nil {
		reply(w, nil, badRequest(err))
		return
	}
	// A write error means the client is gone or too slow: nothing to tell.
	_ = writeConnList(r.Context(), w, s.conns, args.Filter.Match)
}

func (s *Server) conntrackCount(w http.ResponseWriter, r *http.Request) {
	reply(w, ConntrackCount{Count: s.d.Table().Count()}, nil)
}

func (s *Server) conntrackStats(w http.ResponseWriter, r *http.Request) {
	var out ConntrackStats
	for i, c := range s.d.Table().CoreStats() {
		out.Cores = append(out.Cores, conntrackCore(i, c))
	}
	reply(w, out, nil)
}

func (s *Server) conntrackDelete(w http.ResponseWriter, r *http.Request) {
	args, err := ParseFilterQuery("-D", r.URL.Query())
	if err != nil {
		reply(w, nil, badRequest(err))
		return
	}
	n := s.d.Table().DeleteMatching(args.Filter.Match)
	reply(w, ConntrackDeleted{Deleted: n}, nil)
}

func (s *Server) conntrackFlush(w http.ResponseWriter, r *http.Request) {
	reply(w, ConntrackDeleted{Deleted: s.d.Table().Flush()}, nil)
}

// iptables runs one iptables command line against the rules in force.
func (s *Server) iptables(w http.ResponseWriter, r *http.Request) {
	var req IptablesRequest
	if err := decode(w, r, &req); err != nil {
		reply(w, nil, err)
		return
	}
	out, err := s.runIptables(req.Args)
	reply(w, out, err)
}

func (s *Server) runIptables(args []string) (*IptablesResponse, error) {
	if len(args) > 0 && args[0] == "iptables" {
		args = args[1:]
	}
	cmd, err := iptables.Parse(args)
	if err != nil {
		return nil, badRequest(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.d.Rules()
	var buf bytes.Buffer
	switch cmd.Op {
	case iptables.OpList:
		o := iptables.ListOptions{Numeric: cmd.Numeric, Verbose: cmd.Verbose, Exact: cmd.Exact, LineNumbers: cmd.LineNumbers}
		if err := iptables.WriteList(&buf, cur, cmd.Table, cmd.Chain, cmd.Num, o); err != nil {
			return nil, refused(err)
		}
		return &IptablesResponse{Output: buf.String()}, nil
	case iptables.OpListRules:
		if err := iptables.WriteRules(&buf, cur, cmd.Table, cmd.Chain, cmd.Num, cmd.Verbose); err != nil {
			return nil, refused(err)
		}
		return &IptablesResponse{Output: buf.String()}, nil
	case iptables.OpZero:
		rs := s.d.Dataplane().Env().Rules
		if cmd.Num > 0 {
			err = rs.ZeroRule(cmd.Table, cmd.Chain, cmd.Num-1)
		} else {
			err = rs.Zero(cmd.Table, cmd.Chain)
		}
		if err != nil {
			return nil, refused(err)
		}
		return &IptablesResponse{}, nil
	}
	next, err := iptables.Apply(cur, cmd)
	if err != nil {
		return nil, refused(err)
	}
	if cmd.Op == iptables.OpCheck {
		return &IptablesResponse{}, nil
	}
	if err := s.d.ReplaceRules(next); err != nil {
		return nil, refused(err)
	}
	s.rulesReplaced("xnatctl iptables " + strings.Join(args, " "))
	return &IptablesResponse{Changed: true, Warnings: newWarnings(cur, next)}, nil
}

// newWarnings lists the warnings of next that cur did not have.
func newWarnings(cur, next *rules.Model) []string {
	old := rules.Warnings(cur)
	var out []string
	for _, w := range rules.Warnings(next) {
		if !slices.Contains(old, w) {
			out = append(out, w)
		}
	}
	return out
}

func (s *Server) iptablesSave(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opt := iptables.SaveOptions{Header: true, Now: time.Now()}
	if v := q.Get("counters"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			reply(w, nil, badRequest(fmt.Errorf("counters=%q: %w", v, err)))
			return
		}
		opt.Counters = b
	}
	for _, name := range q["table"] {
		t, err := rules.ParseTable(name)
		if err != nil {
			reply(w, nil, badRequest(err))
			return
		}
		opt.Tables = append(opt.Tables, t)
	}
	var buf bytes.Buffer
	if err := iptables.WriteSave(&buf, s.d.Rules(), opt); err != nil {
		reply(w, nil, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

func (s *Server) iptablesRestore(w http.ResponseWriter, r *http.Request) {
	var req RestoreRequest
	if err := decode(w, r, &req); err != nil {
		reply(w, nil, err)
		return
	}
	out, err := s.restore(&req)
	reply(w, out, err)
}

func (s *Server) restore(req *RestoreRequest) (*IptablesResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.d.Rules()
	next, _, err := iptables.Restore(strings.NewReader(req.Rules), cur, iptables.RestoreOptions{Counters: req.Counters, NoFlush: req.NoFlush})
	if err != nil {
		return nil, refused(err)
	}
	if req.Test {
		if _, err := rules.Compile(next, s.names, rules.Options{}); err != nil {
			return nil, refused(err)
		}
		return &IptablesResponse{Warnings: rules.Warnings(next)}, nil
	}
	if err := s.d.ReplaceRules(next); err != nil {
		return nil, refused(err)
	}
	s.rulesReplaced("xnatctl iptables-restore")
	return &IptablesResponse{Changed: true, Warnings: newWarnings(cur, next)}, nil
}

func (s *Server) sysctlTarget() *sysctl.Target {
	dp := s.d.Dataplane()
	return &sysctl.Target{Table: s.d.Table(), Settings: dp.Settings, Limiter: dp.Pools.Limiter(), Ifaces: s.names, Mappings: dp.Mappings}
}

func (s *Server) sysctlValues(names []string) (SysctlValues, error) {
	t := s.sysctlTarget()
	out := SysctlValues{Values: []SysctlValue{}}
	for _, k := range t.Keys() {
		if names != nil && !slices.Contains(names, k.Name) {
			continue
		}
		v, err := sysctl.Get(t, k.Name)
		if err != nil {
			return out, err
		}
		out.Values = append(out.Values, SysctlValue{Name: k.Name, Value: v, ReadOnly: k.ReadOnly, Help: k.Help})
	}
	return out, nil
}

func (s *Server) sysctlGet(w http.ResponseWriter, r *http.Request) {
	names, ok := r.URL.Query()["name"]
	if ok {
		for _, n := range names {
			if _, err := sysctl.Get(s.sysctlTarget(), n); err != nil {
				reply(w, nil, badRequest(err))
				return
			}
		}
	}
	out, err := s.sysctlValues(names)
	reply(w, out, err)
}

func (s *Server) sysctlSet(w http.ResponseWriter, r *http.Request) {
	var req SysctlRequest
	if err := decode(w, r, &req); err != nil {
		reply(w, nil, err)
		return
	}
	if len(req.Set) == 0 {
		reply(w, nil, badRequest(errors.New("nothing to set")))
		return
	}
	as := make([]sysctl.Assignment, len(req.Set))
	names := make([]string, len(req.Set))
	for i, v := range req.Set {
		as[i] = sysctl.Assignment{Name: v.Name, Value: v.Value}
		names[i] = v.Name
	}
	s.mu.Lock()
	err := sysctl.Set(s.sysctlTarget(), as)
	s.mu.Unlock()
	switch {
	case errors.Is(err, sysctl.ErrReadOnly):
		reply(w, nil, refused(err))
		return
	case err != nil:
		reply(w, nil, badRequest(err))
		return
	}
	out, err := s.sysctlValues(names)
	reply(w, out, err)
}

func (s *Server) eventsGet(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			reply(w, nil, badRequest(fmt.Errorf("after=%q: not a sequence number", v)))
			return
		}
		after = n
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			reply(w, nil, badRequest(fmt.Errorf("follow=%q: %w", v, err)))
			return
		}
		follow = b
	}
	if !follow {
		ev, _ := s.events.since(after)
		out := EventList{Events: ev, Next: after}
		if out.Events == nil {
			out.Events = []Event{}
		}
		if len(ev) > 0 {
			out.Next = ev[len(ev)-1].Seq
		}
		reply(w, out, nil)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if rc.Flush() != nil {
		return
	}
	beat := time.NewTicker(s.opts.Heartbeat)
	defer beat.Stop()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for {
		ev, changed := s.events.since(after)
		for _, e := range ev {
			if enc.Encode(e) != nil {
				return
			}
			after = e.Seq
		}
		if buf.Len() > 0 {
			if _, err := w.Write(buf.Bytes()); err != nil || rc.Flush() != nil {
				return
			}
			buf.Reset()
			beat.Reset(s.opts.Heartbeat)
		}
		select {
		case <-changed:
		case <-beat.C:
			if _, err := w.Write([]byte("\n")); err != nil || rc.Flush() != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		}
	}
}
