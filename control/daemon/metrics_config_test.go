package daemon

import (
	"errors"
	"strings"
	"testing"
)

// TestMetricsAddress: the Prometheus endpoint is off by default, loopback
// only unless metrics_allow_remote, and a malformed address is refused.
func TestMetricsAddress(t *testing.T) {
	base := Config{Inside: []string{"in0"}, Outside: []string{"out0"}}
	for _, tc := range []struct {
		addr   string
		remote bool
		bad    string // "" when valid
	}{
		{"", false, ""},
		{"127.0.0.1:9155", false, ""},
		{"[::1]:9155", false, ""},
		{"localhost:9155", false, ""},
		{"0.0.0.0:9155", false, "not a loopback address"},
		{"192.0.2.1:9155", false, "not a loopback address"},
		{"192.0.2.1:9155", true, ""},
		{"127.0.0.1", false, "missing port"},
		{"127.0.0.1:0", false, "port"},
		{"127.0.0.1:http", false, "port"},
	} {
		c := base
		c.Metrics, c.MetricsAllowRemote = tc.addr, tc.remote
		c = c.WithDefaults()
		err := c.Validate()
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q remote=%v: %v", tc.addr, tc.remote, err)
		case tc.bad != "" && (err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%q remote=%v: err %v, want one saying %q", tc.addr, tc.remote, err, tc.bad)
		}
	}
}
