package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	"xnat/control/conntrack"
	"xnat/control/daemon"
)

// ErrNotRunning is wrapped by the client's error when nothing serves the
// socket.
var ErrNotRunning = errors.New("xnatd is not running")

// Error is a request the daemon refused: its HTTP status and the reason.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return e.Msg }

// Usage reports whether the daemon found the request itself bad (a bad
// argument, an unknown key) rather than refusing a well-formed change.
func (e *Error) Usage() bool { return e.Status == http.StatusBadRequest }

// ErrTimeout is wrapped by the client's error when the daemon took longer
// than the client's timeout.
var ErrTimeout = errors.New("timed out")

// DefaultTimeout is a new client's timeout.
const DefaultTimeout = 10 * time.Second

// Client talks to xnatd's control socket.
type Client struct {
	socket  string
	timeout time.Duration
	tr      *http.Transport
	hc      *http.Client
}

// NewClient returns a client for the socket at path ("" for DefaultSocket),
// with DefaultTimeout.
func NewClient(path string) *Client {
	if path == "" {
		path = DefaultSocket
	}
	c := &Client{socket: path}
	c.tr = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return c.dial(ctx)
		},
		DisableCompression: true,
	}
	c.hc = &http.Client{Transport: c.tr}
	c.SetTimeout(DefaultTimeout)
	return c
}

// SetTimeout sets how long a request may take, connecting, sending it and
// reading the whole answer included. A streamed answer (ConntrackStream,
// FollowEvents) has no total limit: the daemon may stay silent this long
// at most (a followed event stream, whose daemon writes an empty line every
// FollowHeartbeat, at least three heartbeats). 0 means no limit.
func (c *Client) SetTimeout(d time.Duration) {
	c.timeout = max(d, 0)
	c.tr.ResponseHeaderTimeout = c.timeout
}

// Timeout returns the client's timeout.
func (c *Client) Timeout() time.Duration { return c.timeout }

// Socket returns the socket path.
func (c *Client) Socket() string { return c.socket }

func (c *Client) timeoutError(what string, d time.Duration) error {
	return fmt.Errorf("xnatd on %s: %s: no answer within %v: %w", c.socket, what, d, ErrTimeout)
}

// RestartWait bounds how long a client waits for xnatd to come back
// when a restart is under way: the socket is gone, and the hand-over
// file a stopping xnatd --takeover writes (daemon.HandOverFile) is
// younger than this. The next xnatd removes the file once it serves the
// socket. keepalived's check (xnatctl ha status) thus sees a restart as
// one slow answer, not a dead xnatd; after a systemctl stop the file
// stays, and is too old to wait for once RestartWait has passed.
const RestartWait = 5 * time.Second

// dial connects to the socket, waiting through a restart (RestartWait).
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: c.timeout}
	for {
		conn, err := d.DialContext(ctx, "unix", c.socket)
		if err == nil || !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
			return conn, err
		}
		fi, serr := os.Stat(daemon.HandOverFile(c.socket))
		if serr != nil || time.Since(fi.ModTime()) > RestartWait {
			return nil, err
		}
		t := time.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// dialError turns a failed connection into the message a shell user
// expects.
func (c *Client) dialError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: no socket at %s", ErrNotRunning, c.socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: nothing listens on %s", ErrNotRunning, c.socket)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on %s (the control socket is root's)", c.socket)
	}
	return fmt.Errorf("control socket %s: %w", c.socket, err)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, c.timeout, c.timeoutError(method+" "+path, c.timeout))
		defer cancel()
	}
	resp, err := c.send(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
			return cause
		}
		return fmt.Errorf("reading the daemon's answer: %w", err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, q url.Values, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	u := "http://xnatd" + Version + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, c.timeoutError(method+" "+path, c.timeout)
		}
		return nil, c.dialError(err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		var er ErrorResponse
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &er) != nil || er.Error == "" {
			er.Error = fmt.Sprintf("daemon answered %s", resp.Status)
		}
		return nil, &Error{Status: resp.StatusCode, Msg: er.Error}
	}
	return resp, nil
}

// Stats returns every counter.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var s Stats
	return &s, c.do(ctx, http.MethodGet, "/stats", nil, nil, &s)
}

// Conntrack lists the connections passing the filter, all of them in
// memory; ConntrackStream reads them one at a time.
func (c *Client) Conntrack(ctx context.Context, f *conntrack.Filter) (*ConntrackList, error) {
	st, err := c.ConntrackStream(ctx, f)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	l := &ConntrackList{Conns: []Conn{}}
	for {
		var cn Conn
		ok, err := st.Next(&cn)
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		l.Conns = append(l.Conns, cn)
	}
	l.Acct = st.Acct
	return l, nil
}

// ConntrackDelete deletes the connections passing the filter.
func (c *Client) ConntrackDelete(ctx context.Context, f *conntrack.Filter) (int, error) {
	var d ConntrackDeleted
	err := c.do(ctx, http.MethodPost, "/conntrack/delete", FilterQuery(f), nil, &d)
	return d.Deleted, err
}

// ConntrackFlush deletes every connection.
func (c *Client) ConntrackFlush(ctx context.Context) (int, error) {
	var d ConntrackDeleted
	err := c.do(ctx, http.MethodPost, "/conntrack/flush", nil, nil, &d)
	return d.Deleted, err
}

// ConntrackCount returns the number of connections.
func (c *Client) ConntrackCount(ctx context.Context) (int, error) {
	var n ConntrackCount
	err := c.do(ctx, http.MethodGet, "/conntrack/count", nil, nil, &n)
	return n.Count, err
}

// ConntrackStats returns the per-core conntrack statistics.
func (c *Client) ConntrackStats(ctx context.Context) (*ConntrackStats, error) {
	var s ConntrackStats
	return &s, c.do(ctx, http.MethodGet, "/conntrack/stats", nil, nil, &s)
}

// Iptables runs one iptables command line (without "iptables").
func (c *Client) Iptables(ctx context.Context, args []string) (*IptablesResponse, error) {
	var r IptablesResponse
	return &r, c.do(ctx, http.MethodPost, "/iptables", nil, IptablesRequest{Args: args}, &r)
}

// Save returns the rules in force in iptables-save format.
func (c *Client) Save(ctx context.Context, counters bool, tables []string) (string, error) {
	q := url.Values{}
	if counters {
		q.Set("counters", strconv.FormatBool(counters))
	}
	for _, t := range tables {
		q.Add("table", t)
	}
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, c.timeout, c.timeoutError("GET /iptables/save", c.timeout))
		defer cancel()
	}
	resp, err := c.send(ctx, http.MethodGet, "/iptables/save", q, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil && ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	return string(b), err
}

// Restore loads an iptables-save file, all or nothing.
func (c *Client) Restore(ctx context.Context, req *RestoreRequest) (*IptablesResponse, error) {
	var r IptablesResponse
	return &r, c.do(ctx, http.MethodPost, "/iptables/restore", nil, req, &r)
}

// Sysctl returns the named keys' values, or every key's with no name.
func (c *Client) Sysctl(ctx context.Context, names ...string) ([]SysctlValue, error) {
	q := url.Values{}
	for _, n := range names {
		q.Add("name", n)
	}
	var v SysctlValues
	err := c.do(ctx, http.MethodGet, "/sysctl", q, nil, &v)
	return v.Values, err
}

// SysctlSet sets keys, all or none, and returns their new values.
func (c *Client) SysctlSet(ctx context.Context, set []SysctlValue) ([]SysctlValue, error) {
	var v SysctlValues
	err := c.do(ctx, http.MethodPost, "/sysctl", nil, SysctlRequest{Set: set}, &v)
	return v.Values, err
}

// Events returns the events recorded after seq.
func (c *Client) Events(ctx context.Context, after uint64) (*EventList, error) {
	var l EventList
	q := url.Values{"after": {strconv.FormatUint(after, 10)}}
	return &l, c.do(ctx, http.MethodGet, "/events", q, nil, &l)
}

// FollowEvents calls fn with every event after seq as it is recorded,
// until ctx ends (nil), fn fails, or the daemon goes away or stays silent
// past the timeout (see SetTimeout).
func (c *Client) FollowEvents(ctx context.Context, after uint64, fn func(Event) error) error {
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "follow": {"1"}}
	idle := c.timeout
	if idle > 0 {
		idle = max(idle, 3*FollowHeartbeat)
	}
	body, err := c.stream(ctx, "/events", q, idle)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue // the daemon's heartbeat
		}
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("reading an event: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	return errors.New("xnatd closed the event stream")
}
