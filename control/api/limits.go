package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// The API's limits, unless Options say otherwise.
const (
	// DefaultReadHeaderTimeout is how long a client has to send a
	// request's line and headers once it has connected (or, on a kept-alive
	// connection, once it starts the next request).
	DefaultReadHeaderTimeout = 5 * time.Second
	// DefaultReadTimeout is how long a client has to send a request's body.
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout is how long each write of an answer may take: a
	// client that stops reading is cut off after it, however long the
	// answer (a listing, followed events) goes on.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout is how long a kept-alive connection may wait for
	// its next request.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxConns is how many connections are served at once; more
	// wait to be accepted.
	DefaultMaxConns = 128
	// MaxBody is the largest request body a route takes, except
	// iptables-restore's.
	MaxBody = 1 << 20
	// MaxRestoreBody is the largest iptables-restore request (its rules
	// file, JSON-encoded).
	MaxRestoreBody = 16 << 20
	// MaxHeaderBytes bounds a request's line and headers.
	MaxHeaderBytes = 64 << 10
	// FollowHeartbeat is how often a followed event stream carries an
	// empty line when there is no event, so that each side sees the other
	// is alive.
	FollowHeartbeat = 5 * time.Second
)

func (o *Options) setDefaults() {
	orDefault(&o.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	orDefault(&o.ReadTimeout, DefaultReadTimeout)
	orDefault(&o.WriteTimeout, DefaultWriteTimeout)
	orDefault(&o.IdleTimeout, DefaultIdleTimeout)
	orDefault(&o.Heartbeat, FollowHeartbeat)
	orDefault(&o.MaxConns, DefaultMaxConns)
	orDefault(&o.MaxBody, MaxBody)
	orDefault(&o.MaxRestoreBody, MaxRestoreBody)
}

// orDefault sets an option left at zero (or below) to its default.
func orDefault[T int | int64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// httpServer is an http.Server for h with the options' limits. It has no
// WriteTimeout of its own: the deadline is set before every write instead
// (deadlineWriter), so a long answer is bounded per write, not in total.
func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           s.limits(h),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
}

// limits wraps every request: its writes get a deadline each, its body a
// size limit (413 beyond) and a read deadline (cleared once decode has
// read it, so a long answer is not cut short by it).
func (s *Server) limits(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: s.opts.WriteTimeout}
		limit := s.opts.MaxBody
		if r.URL.Path == Version+"/iptables/restore" {
			limit = s.opts.MaxRestoreBody
		}
		if r.ContentLength > limit {
			dw.Header().Set("Connection", "close")
			fail(dw, http.StatusRequestEntityTooLarge, tooLarge(limit))
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			// MaxBytesReader gets the server's own writer: it tells the
			// server to close the connection rather than read on.
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			_ = dw.rc.SetReadDeadline(time.Now().Add(s.opts.ReadTimeout))
		}
		h.ServeHTTP(dw, r)
	})
}

func tooLarge(limit int64) error {
	return fmt.Errorf("request body too large: over %d bytes", limit)
}

// deadlineWriter sets the connection's write deadline before every write.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *deadlineWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.d)) }

func (w *deadlineWriter) WriteHeader(code int) {
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bodyRead ends a request body's read deadline once the body has been
// read whole: the answer that follows is bounded by the write deadlines
// only. After an error the deadline stays, for the server's reading of
// what is left of the body. A body that was over the limit is a 413 error.
func bodyRead(w http.ResponseWriter, err error) error {
	if err == nil {
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
		return nil
	}
	var mb *http.MaxBytesError
	if errors.As(err, &mb) {
		return &httpError{http.StatusRequestEntityTooLarge, tooLarge(mb.Limit)}
	}
	return err
}

// limitListener accepts at most n connections at once; Accept waits for
// one to close beyond that.
type limitListener struct {
	net.Listener
	slots chan struct{}
	done  chan struct{}
	once  sync.Once
}

func newLimitListener(ln net.Listener, n int) *limitListener {
	return &limitListener{Listener: ln, slots: make(chan struct{}, n), done: make(chan struct{})}
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn gives its slot back once, at the first Close.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
