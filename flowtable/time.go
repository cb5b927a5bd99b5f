package flowtable

import "time"

// Time is a table timestamp in centiseconds (Linux's jiffies at HZ=100)
// since the table was created. It wraps after 497 days; it is only ever
// compared by difference, so timeouts are limited to MaxTimeout.
type Time uint32

// Tick is the length of one Time unit.
const Tick = 10 * time.Millisecond

// MaxTimeout is the longest timeout the table accepts: half the wrap, so
// that differences between timestamps stay unambiguous.
const MaxTimeout = time.Duration(1<<31-1) * Tick

// Ticks converts a duration to Time units, rounding down.
func Ticks(d time.Duration) Time { return Time(d / Tick) }

// Duration converts Time units to a duration.
func (t Time) Duration() time.Duration { return time.Duration(t) * Tick }

// since returns now-then in ticks, and whether then is not in now's
// future (another core may have stamped a newer time than this core's now).
func since(now, then Time) (Time, bool) {
	d := now - then
	return d, int32(d) >= 0
}
