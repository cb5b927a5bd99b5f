// Package bench is xnat's benchmark harness: every performance figure the
// project claims is produced by one of its scenarios, run through
// cmd/xnat-bench, and every scenario measures its peer in the same run so
// that figures are read as ratios on a noisy machine.
//
// A scenario registers itself with Register from an init function. It
// parses its own flags, writes a table for people to the output, or one
// JSON object per result line with --json.
package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Scenario is one named measurement.
type Scenario struct {
	Name    string
	Summary string
	// Run parses args (the words after the scenario name) and writes its
	// results to w. It returns an error for bad arguments or a failed run.
	Run func(args []string, w io.Writer) error
}

var scenarios = map[string]Scenario{}

// Register adds a scenario; it panics on a duplicate name, which is a
// programming error caught at start-up.
func Register(s Scenario) {
	if _, dup := scenarios[s.Name]; dup {
		panic("bench: scenario registered twice: " + s.Name)
	}
	scenarios[s.Name] = s
}

// ErrUnknownScenario is returned by Lookup for a name no scenario has.
var ErrUnknownScenario = errors.New("unknown scenario")

// Lookup returns the scenario with the given name.
func Lookup(name string) (Scenario, error) {
	s, ok := scenarios[name]
	if !ok {
		return Scenario{}, fmt.Errorf("%w %q (have: %s)", ErrUnknownScenario, name, strings.Join(Names(), ", "))
	}
	return s, nil
}

// Names lists the registered scenarios in order.
func Names() []string {
	names := make([]string, 0, len(scenarios))
	for n := range scenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Summaries returns "name  summary" lines for usage text.
func Summaries() string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	for _, n := range Names() {
		fmt.Fprintf(tw, "  %s\t%s\n", n, scenarios[n].Summary)
	}
	tw.Flush()
	return b.String()
}

// WriteJSON writes v as one line of JSON.
func WriteJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding result: %w", err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// report writes each result of a scenario as a line of JSON as soon as
// it is measured (--json), or gathers its rows for one table at the end.
type report struct {
	w    io.Writer
	json bool
	rows [][]string
}

// add reports result v, shown in the table as rows.
func (r *report) add(v any, rows ...[]string) error {
	if r.json {
		return WriteJSON(r.w, v)
	}
	r.rows = append(r.rows, rows...)
	return nil
}

// table writes the gathered rows under header; with --json, nothing.
func (r *report) table(header []string) error {
	if r.json {
		return nil
	}
	return Table(r.w, header, r.rows)
}

// Table writes rows under a header, aligned, for people.
func Table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	return tw.Flush()
}
