package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// FuzzRequestBody: any request body, through the limits and decode as a
// route reads it, is decoded or refused with 400 or 413 and a one-line
// JSON error, never a panic; what decodes re-encodes to the same request.
func FuzzRequestBody(f *testing.F) {
	for _, s := range []string{
		`{"args":["-A","FORWARD","-j","ACCEPT"]}`,
		`{"rules":"*nat\n-A POSTROUTING -o eth0 -j MASQUERADE\nCOMMIT\n","counters":true,"noflush":true,"test":true}`,
		`{"set":[{"name":"nf_conntrack_max","value":1000}]}`,
		`{"args":[]} {"args":[]}`, `{"args":["a"]}x`, `{"bogus":1}`, `{"args":"-L"}`, `[`, ``, `null`,
		`{"rules":"` + strings.Repeat("x", 3000) + `"}`, "{\"args\":[\"\xff\"]}",
	} {
		for kind := range uint8(3) {
			f.Add(kind, []byte(s))
		}
	}
	s := &Server{opts: Options{MaxBody: 1024, MaxRestoreBody: 2048}}
	s.opts.setDefaults()
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		var v any
		path := "/iptables"
		switch kind % 3 {
		case 0:
			v = &IptablesRequest{}
		case 1:
			v, path = &RestoreRequest{}, "/iptables/restore"
		case 2:
			v, path = &SysctlRequest{}, "/sysctl"
		}
		h := s.limits(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			reply(w, v, decode(w, r, v))
		}))
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, Version+path, bytes.NewReader(body))
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			again := reflect.New(reflect.TypeOf(v).Elem()).Interface()
			if err := decodeBody(bytes.NewReader(b), again); err != nil || !reflect.DeepEqual(v, again) {
				t.Fatalf("%q decodes to %+v, which re-encodes to %s and decodes to %+v, %v", body, v, b, again, err)
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var er ErrorResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &er); err != nil || er.Error == "" || strings.Contains(er.Error, "\n") {
				t.Fatalf("%q: error answer %q", body, rec.Body.String())
			}
			if rec.Code == http.StatusRequestEntityTooLarge && int64(len(body)) <= s.opts.MaxBody {
				t.Fatalf("%q: 413 for %d bytes", body, len(body))
			}
		default:
			t.Fatalf("%q: status %d", body, rec.Code)
		}
	})
}

// FuzzFilterQuery: any conntrack route query parses to a filter or an
// error; a filter encodes to a query that parses back to it.
func FuzzFilterQuery(f *testing.F) {
	for _, s := range []string{"", "proto=6", "proto=udp&src=10.0.0.1&dport=53", "state=ESTABLISHED&mark=1/255",
		"sport=70000", "bogus=1", "proto=6&proto=17", "src=host.example", "mark=0x10", "dst=1.2.3.4&sport=1&dport=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		a, err := ParseFilterQuery("-L", q)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		b, err := ParseFilterQuery("-L", FilterQuery(&a.Filter))
		if err != nil || b.Filter != a.Filter {
			t.Fatalf("%q: %+v encodes to %q, which parses to %+v, %v", raw, a.Filter, FilterQuery(&a.Filter).Encode(), b, err)
		}
	})
}

// FuzzConnStream: any answer to a listing is read as connections or fails
// with an error, never a panic or a hang.
func FuzzConnStream(f *testing.F) {
	for _, n := range []int{0, 1, 3} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		l := ConntrackList{Acct: n == 1, Conns: []Conn{}}
		for i := range n {
			fi := fakeFlow(i, l.Acct)
			l.Conns = append(l.Conns, ConnOf(&fi, l.Acct))
		}
		enc.Encode(l)
		f.Add(buf.Bytes())
	}
	for _, s := range []string{`{}`, `{"conns":[],"acct":true}`, `{"x":[1,{"y":2}],"conns":[{}]}`, `{"conns":[{"proto":"a"}]}`,
		`{"conns":[] , "conns":[]}`, `[`, ``, `{"acct":1}`, `{"conns":[{},`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &ConnStream{body: io.NopCloser(bytes.NewReader(data)), dec: json.NewDecoder(bytes.NewReader(data))}
		if err := s.open(); err != nil {
			return
		}
		for range len(data) + 1 {
			var c Conn
			ok, err := s.Next(&c)
			if err != nil || !ok {
				return
			}
		}
		t.Fatalf("%q: more connections than bytes", data)
	})
}
