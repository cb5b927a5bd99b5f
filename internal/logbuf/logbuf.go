// Package logbuf is a byte buffer safe for concurrent use: the output of
// a process a test or benchmark runs (xnatd, keepalived), written by the
// goroutine copying its pipe and read while it runs.
package logbuf

import (
	"bytes"
	"sync"
)

// Buffer collects what is written to it; the zero value is empty.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
