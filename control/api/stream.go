package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"xnat/flowtable"
)

// connLister is what a listing walks: the flow table.
type connLister interface {
	Acct() bool
	List(cursor int, out []flowtable.FlowInfo) (n, next int)
}

const (
	// listBatch is how many connections one List call copies (one short
	// critical section of the table).
	listBatch = 256
	// listFlushBytes is how much of a listing is written at once.
	listFlushBytes = 64 << 10
	// listQuiet is the longest a listing leaves the client without a
	// byte while it walks past connections the filter drops; it then
	// writes a blank, which JSON allows between tokens.
	listQuiet = time.Second
)

// writeConnList writes the ConntrackList of the connections match keeps
// ({"acct":...,"conns":[...]} and a newline, as json.Encoder writes it)
// while it walks the table: a batch of connections at a time is copied
// out of the table, encoded and written, so memory stays the same however
// many connections there are, and the table's critical section never
// waits on the client. It stops at the first write error or when ctx
// ends.
func writeConnList(ctx context.Context, w http.ResponseWriter, tab connLister, match func(*flowtable.FlowInfo) bool) error {
	rc := http.NewResponseController(w)
	acct := tab.Acct()
	w.Header().Set("Content-Type", "application/json")
	var buf bytes.Buffer
	buf.WriteString(`{"acct":`)
	buf.WriteString(strconv.FormatBool(acct))
	buf.WriteString(`,"conns":[`)
	enc := json.NewEncoder(&buf)
	batch := make([]flowtable.FlowInfo, listBatch)
	first := true
	last := time.Now()
	for cursor := 0; cursor >= 0; {
		if err := ctx.Err(); err != nil {
			return err
		}
		var n int
		n, cursor = tab.List(cursor, batch)
		for i := range batch[:n] {
			if match != nil && !match(&batch[i]) {
				continue
			}
			if !first {
				buf.WriteByte(',')
			}
			first = false
			c := ConnOf(&batch[i], acct)
			if err := enc.Encode(&c); err != nil {
				return err
			}
			buf.Truncate(buf.Len() - 1) // the Encoder's newline
		}
		now := time.Now()
		if cursor < 0 {
			buf.WriteString("]}\n")
		} else if buf.Len() < listFlushBytes && now.Sub(last) < listQuiet {
			continue
		} else if buf.Len() == 0 {
			buf.WriteByte(' ')
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		if err := rc.Flush(); err != nil {
			return err
		}
		buf.Reset()
		last = now
	}
	return nil
}
