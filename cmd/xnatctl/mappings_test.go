package main

import (
	"regexp"
	"strings"
	"testing"

	"xnat/control/api"
	"xnat/control/api/apitest"
	"xnat/internal/nattest"
)

// TestMappingsCommand: xnatctl mappings lists a live full-cone mapping
// with its connections, as text and JSON, and stats counts it.
func TestMappingsCommand(t *testing.T) {
	b := apitest.New(t, apitest.Options{Rules: nattest.FullConeRules})
	sock := b.Socket
	b.UDPEcho(7000)
	ca := b.UDPDial(b.InsA, apitest.IPA, 40000, 7000)
	if _, err := apitest.Ask(ca, "a"); err != nil {
		t.Fatal(err)
	}
	r := ok(t, sock, "mappings")
	if !regexp.MustCompile(`(?m)^udp +10\.0\.1\.2:40000 +192\.0\.2\.1:\d+ +1 +120$`).MatchString(r.stdout) {
		t.Fatalf("mappings:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "1 full-cone mappings listed") {
		t.Fatalf("stderr: %s", r.stderr)
	}
	var l api.MappingList
	decodeJSON(t, ok(t, sock, "mappings", "-L", "--json").stdout, &l)
	if len(l.Mappings) != 1 || l.Mappings[0].Inside != "10.0.1.2:40000" || l.Mappings[0].Connections != 1 || l.Mappings[0].Proto != "udp" {
		t.Fatalf("--json: %+v", l)
	}
	if r := ok(t, sock, "stats"); !regexp.MustCompile(`(?m)^mappings +entries 1 .*created 1 `).MatchString(r.stdout) {
		t.Fatalf("stats:\n%s", r.stdout)
	}
	if r := xnatctl(t, "--socket", sock, "mappings", "extra"); r.code != 2 {
		t.Fatalf("an extra argument: exit %d", r.code)
	}
}
