package flowtable

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// Impl chooses the code that reads the table's index: the portable Go
// scans, or the vector ones where they are written (amd64 with AVX2 and
// BMI1, outside the race detector and purego builds). Every vector
// routine has a Go twin with the same answers; the choice is only about
// speed.
type Impl uint8

const (
	// ImplAuto is the vector code on the CPUs where it was measured faster
	// than the Go code, and the Go code everywhere else.
	ImplAuto Impl = iota
	// ImplGo is the Go code on every CPU.
	ImplGo
	// ImplAVX2 is the vector code on any CPU that can run it, for
	// measuring it where ImplAuto does not choose it.
	ImplAVX2
)

// useAVX2 is the implementation tables use: true for ImplAVX2. The hot
// paths read it once or twice a call, an ordinary load on amd64.
var useAVX2 atomic.Bool

func init() { useAVX2.Store(autoImpl() == ImplAVX2) }

var implNames = [...]string{ImplAuto: "auto", ImplGo: "go", ImplAVX2: "avx2"}

func (i Impl) String() string {
	if int(i) < len(implNames) {
		return implNames[i]
	}
	return fmt.Sprintf("Impl(%d)", uint8(i))
}

// ErrImpl is returned for an implementation name ParseImpl does not know,
// and by SetImpl for one this build or CPU cannot run.
var ErrImpl = errors.New("flow table implementation")

// ParseImpl parses an implementation's name: auto, go or avx2.
func ParseImpl(s string) (Impl, error) {
	for i, n := range implNames {
		if s == n {
			return Impl(i), nil
		}
	}
	return 0, fmt.Errorf("%w %q unknown (auto, go or avx2)", ErrImpl, s)
}

// SetImpl selects the implementation every table of the process uses
// from then on; the default is ImplAuto. It refuses ImplAVX2 where the
// vector code cannot run: a CPU without AVX2 or BMI1, another
// architecture, a purego build, or the race detector (whose
// happens-before edges between an insert and a lookup come from the Go
// scan's atomic loads). It may be called at any time: a lookup under way
// may finish on either implementation, and both give the same answers.
func SetImpl(i Impl) error {
	switch i {
	case ImplAuto:
		useAVX2.Store(autoImpl() == ImplAVX2)
	case ImplGo:
		useAVX2.Store(false)
	case ImplAVX2:
		if !vectorAvailable() {
			return fmt.Errorf("%w %v: not available in this build on this CPU", ErrImpl, i)
		}
		useAVX2.Store(true)
	default:
		return fmt.Errorf("%w %v unknown", ErrImpl, i)
	}
	return nil
}

// ActiveImpl returns the implementation tables use now: ImplAVX2 or
// ImplGo, never ImplAuto.
func ActiveImpl() Impl {
	if useAVX2.Load() {
		return ImplAVX2
	}
	return ImplGo
}
