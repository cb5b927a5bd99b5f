package conntrack

import (
	"errors"
	"strings"
	"testing"
	"time"

	"xnat/flowtable"
)

func ip(a, b, c, d byte) uint32 { return uint32(a)<<24 | uint32(b)<<16 | uint32(c)<<8 | uint32(d) }

func tcpInfo() flowtable.FlowInfo {
	return flowtable.FlowInfo{
		Orig:    flowtable.MakeTuple(flowtable.ProtoTCP, ip(192, 168, 1, 2), 40000, ip(8, 8, 8, 8), 443),
		Reply:   flowtable.MakeTuple(flowtable.ProtoTCP, ip(8, 8, 8, 8), 443, ip(203, 0, 113, 1), 40000),
		Status:  uint32(flowtable.TCPEstablished) | flowtable.FlagSeenReply | flowtable.FlagAssured | flowtable.FlagSrcNAT,
		Expires: 431999*time.Second + 400*time.Millisecond,
	}
}

func TestWriteEntryGolden(t *testing.T) {
	udp := flowtable.FlowInfo{
		Orig:    flowtable.MakeTuple(flowtable.ProtoUDP, ip(10, 0, 0, 2), 5000, ip(8, 8, 8, 8), 53),
		Reply:   flowtable.MakeTuple(flowtable.ProtoUDP, ip(8, 8, 8, 8), 53, ip(203, 0, 113, 1), 5000),
		Status:  uint32(flowtable.UDP),
		Expires: 29 * time.Second,
		Mark:    7,
	}
	icmp := flowtable.FlowInfo{
		Orig:    flowtable.MakeTuple(flowtable.ProtoICMP, ip(10, 0, 0, 2), 7777, ip(8, 8, 8, 8), 0),
		Reply:   flowtable.MakeTuple(flowtable.ProtoICMP, ip(8, 8, 8, 8), 0, ip(203, 0, 113, 1), 7777),
		Status:  uint32(flowtable.ICMP) | flowtable.FlagSeenReply,
		Expires: 29 * time.Second,
	}
	tcp := tcpInfo()
	for _, c := range []struct {
		fi   flowtable.FlowInfo
		acct bool
		want string
	}{
		{tcp, false, "tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=8.8.8.8 sport=40000 dport=443 src=8.8.8.8 dst=203.0.113.1 sport=443 dport=40000 [ASSURED] mark=0 use=1\n"},
		{udp, false, "udp      17 29 src=10.0.0.2 dst=8.8.8.8 sport=5000 dport=53 [UNREPLIED] src=8.8.8.8 dst=203.0.113.1 sport=53 dport=5000 mark=7 use=1\n"},
		{icmp, false, "icmp     1 29 src=10.0.0.2 dst=8.8.8.8 type=8 code=0 id=7777 src=8.8.8.8 dst=203.0.113.1 type=0 code=0 id=7777 mark=0 use=1\n"},
		{func() flowtable.FlowInfo {
			f := tcp
			f.Counters = [2]flowtable.Counter{{Packets: 3, Bytes: 180}, {Packets: 2, Bytes: 120}}
			return f
		}(), true, "tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=8.8.8.8 sport=40000 dport=443 packets=3 bytes=180 src=8.8.8.8 dst=203.0.113.1 sport=443 dport=40000 packets=2 bytes=120 [ASSURED] mark=0 use=1\n"},
	} {
		var b strings.Builder
		if err := WriteEntry(&b, &c.fi, c.acct); err != nil {
			t.Fatal(err)
		}
		if b.String() != c.want {
			t.Errorf("got  %q\nwant %q", b.String(), c.want)
		}
	}
}

func TestWriteStatsGolden(t *testing.T) {
	var b strings.Builder
	WriteStats(&b, []flowtable.Stats{{Found: 5, Invalid: 1, Insert: 9, InsertFailed: 2, Drop: 3, EarlyDrop: 4, SearchRestart: 6}, {}})
	want := "cpu=0   \tfound=5 invalid=1 insert=9 insert_failed=2 drop=3 early_drop=4 error=0 search_restart=6\n" +
		"cpu=1   \tfound=0 invalid=0 insert=0 insert_failed=0 drop=0 early_drop=0 error=0 search_restart=0\n"
	if b.String() != want {
		t.Errorf("got\n%q\nwant\n%q", b.String(), want)
	}
}

func TestParseAndFilter(t *testing.T) {
	a, err := Parse(strings.Fields("-L -p tcp -s 192.168.1.2 --dport 443 --state ESTABLISHED --mark 0/0xff"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Command != List {
		t.Errorf("command %v", a.Command)
	}
	fi := tcpInfo()
	if !a.Filter.Match(&fi) {
		t.Error("filter does not match its connection")
	}
	for _, words := range []string{"-L -p udp", "-L -s 10.0.0.9", "-L -p tcp --sport 1", "-L -p tcp --state SYN_SENT", "-L --mark 1"} {
		a, err := Parse(strings.Fields(words))
		if err != nil {
			t.Fatalf("%s: %v", words, err)
		}
		if a.Filter.Match(&fi) {
			t.Errorf("%q matched", words)
		}
	}
	for _, words := range []string{"--dump", "-D -p 6", "-F", "-C", "-S", "--count", "-L -o default"} {
		if _, err := Parse(strings.Fields(words)); err != nil {
			t.Errorf("%q: %v", words, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for words, want := range map[string]string{
		"":                        "no command",
		"-L -D":                   "only one command",
		"-L -p":                   "needs a value",
		"-L -p foo":               "unknown protocol",
		"-L -s 300.1.1.1":         "not an IPv4 address",
		"-L -s ::1":               "not an IPv4 address",
		"-L --dport 80":           "need -p tcp or -p udp",
		"-L -p tcp --dport x":     "not a port",
		"-L -p udp --state CLOSE": "--state needs -p tcp",
		"-L -p tcp --state XX":    "unknown TCP state",
		"-L --mark x":             "not a 32-bit value",
		"-L --bogus":              "unknown argument",
		"-F -p tcp":               "filters go with -L and -D",
		"-L -o xml":               "not supported",
	} {
		_, err := Parse(strings.Fields(words))
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v (want %q)", words, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"-L -p tcp -s 1.2.3.4 --dport 80", "-D --mark 1/2", "-S", "-L --state ESTABLISHED -p tcp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := Parse(strings.Fields(s))
		if err == nil && a.Command == 0 {
			t.Fatal("no error and no command")
		}
		if err != nil && !errors.Is(err, ErrUsage) {
			t.Fatalf("error not ErrUsage: %v", err)
		}
	})
}
