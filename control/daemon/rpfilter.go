package daemon

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"xnat/control/sysctl"
	"xnat/dataplane"
)

// procConf is where the namespace's per-interface IPv4 sysctls are.
const procConf = "/proc/sys/net/ipv4/conf/"

// readRPFilter reads one rp_filter sysctl of the namespace the calling
// thread is in (which, for "all", "default" or an interface, names the
// directory under net/ipv4/conf).
func readRPFilter(which string) (int32, error) {
	b, err := os.ReadFile(procConf + which + "/rp_filter")
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || v < dataplane.RPFilterOff || v > dataplane.RPFilterLoose {
		return 0, fmt.Errorf("%srp_filter: %q is not 0, 1 or 2", procConf+which+"/", strings.TrimSpace(string(b)))
	}
	return int32(v), nil
}

// initRPFilter sets the reverse-path filter as the kernel of the
// namespace has it (net.ipv4.conf.{all,default,IF}.rp_filter), the
// config's rp_filter standing for all's when given. A value the kernel
// does not give (an interface not there yet) is default's, as Linux
// gives an interface created later. It runs on the thread in the
// interfaces' namespace and reports the values as an event.
func (d *Daemon) initRPFilter(rp *dataplane.RPFilter) {
	all, errAll := readRPFilter("all")
	def, errDef := readRPFilter("default")
	for _, err := range []error{errAll, errDef} {
		if err != nil {
			d.emit(warn("reverse-path filter: kernel value not read", "err", err))
		}
	}
	if errAll != nil {
		all = dataplane.RPFilterStrict
	}
	if errDef != nil {
		def = dataplane.RPFilterStrict
	}
	if d.cfg.RPFilter != nil {
		all = int32(*d.cfg.RPFilter)
	}
	rp.All.Store(all)
	rp.Default.Store(def)
	args := []any{"net.ipv4.conf.all.rp_filter", all, "net.ipv4.conf.default.rp_filter", def}
	for id, name := range d.names {
		if id >= len(rp.If) {
			break
		}
		v, err := readRPFilter(name)
		if err != nil {
			v = def
		}
		rp.If[id].Store(v)
		args = append(args, sysctl.RPFilterKey(name), v)
	}
	d.emit(info("reverse-path filter", args...))
}
