package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"xnat/control/conntrack"
)

// stream sends a GET whose answer is read as it arrives: the answer has
// no total time limit, but when idle > 0 and no byte of it arrives for
// idle, the request is cut off and the body's Read returns an error
// wrapping ErrTimeout.
func (c *Client) stream(ctx context.Context, path string, q url.Values, idle time.Duration) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	resp, err := c.send(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		cancel(nil)
		return nil, err
	}
	b := &idleBody{body: resp.Body, cancel: cancel}
	if idle > 0 {
		b.idle = idle
		b.timer = time.AfterFunc(idle, func() { cancel(c.timeoutError("GET "+path, idle)) })
	}
	b.ctx = ctx
	return b, nil
}

// idleBody is a streamed answer's body with its idle timer.
type idleBody struct {
	body   io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	idle   time.Duration
	timer  *time.Timer
	once   sync.Once
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	if n > 0 && b.timer != nil {
		b.timer.Reset(b.idle)
	}
	if err != nil && err != io.EOF && b.ctx.Err() != nil {
		if cause := context.Cause(b.ctx); errors.Is(cause, ErrTimeout) {
			err = cause
		}
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.once.Do(func() {
		if b.timer != nil {
			b.timer.Stop()
		}
	})
	err := b.body.Close()
	b.cancel(nil)
	return err
}

// ConnStream is a connection listing read as the daemon writes it.
type ConnStream struct {
	// Acct says whether the connections carry counters
	// (nf_conntrack_acct); it is known once ConntrackStream returns.
	Acct bool

	body io.ReadCloser
	dec  *json.Decoder
	done bool
}

// ConntrackStream starts listing the connections passing the filter; Next
// reads them one at a time, so a client's memory does not grow with the
// table. The daemon must not stay silent longer than the client's timeout.
func (c *Client) ConntrackStream(ctx context.Context, f *conntrack.Filter) (*ConnStream, error) {
	body, err := c.stream(ctx, "/conntrack", FilterQuery(f), c.timeout)
	if err != nil {
		return nil, err
	}
	s := &ConnStream{body: body, dec: json.NewDecoder(body)}
	if err := s.open(); err != nil {
		body.Close()
		return nil, err
	}
	return s, nil
}

func readErr(err error) error {
	if errors.Is(err, ErrTimeout) {
		return err
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading the daemon's answer: %w", err)
}

// open reads up to the first connection: the object's start and the
// fields before "conns".
func (s *ConnStream) open() error {
	if err := s.delim('{'); err != nil {
		return err
	}
	for {
		if !s.dec.More() {
			// No "conns": an empty listing.
			s.done = true
			return s.delim('}')
		}
		conns, err := s.field()
		if err != nil {
			return err
		}
		if conns {
			return s.delim('[')
		}
	}
}

// field reads one field of the listing's object; it reports true at
// "conns", whose value is left to read.
func (s *ConnStream) field() (bool, error) {
	t, err := s.dec.Token()
	if err != nil {
		return false, readErr(err)
	}
	switch t {
	case "conns":
		return true, nil
	case "acct":
		if err := s.dec.Decode(&s.Acct); err != nil {
			return false, readErr(err)
		}
	default:
		var skip json.RawMessage
		if err := s.dec.Decode(&skip); err != nil {
			return false, readErr(err)
		}
	}
	return false, nil
}

func (s *ConnStream) delim(want json.Delim) error {
	t, err := s.dec.Token()
	if err != nil {
		return readErr(err)
	}
	if d, ok := t.(json.Delim); !ok || d != want {
		return readErr(fmt.Errorf("got %v where %q belongs", t, want))
	}
	return nil
}

// Next reads the next connection into c; it returns false at the end of
// the listing.
func (s *ConnStream) Next(c *Conn) (bool, error) {
	if s.done {
		return false, nil
	}
	if s.dec.More() {
		*c = Conn{}
		if err := s.dec.Decode(c); err != nil {
			return false, readErr(err)
		}
		return true, nil
	}
	s.done = true
	if err := s.delim(']'); err != nil {
		return false, err
	}
	for s.dec.More() {
		conns, err := s.field()
		if err != nil {
			return false, err
		}
		if conns {
			return false, readErr(errors.New(`"conns" given twice`))
		}
	}
	return false, s.delim('}')
}

// Close ends the listing (early, if Next has not reached its end).
func (s *ConnStream) Close() error { return s.body.Close() }
