// Command xnat-bench runs xnat's benchmark scenarios. Every performance
// figure in the README comes from here, with its peer measured in the same
// run.
//
//	xnat-bench SCENARIO [flags]
//	xnat-bench SCENARIO -h
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"xnat/bench"
)

func usage() {
	fmt.Fprintf(os.Stderr, "usage: xnat-bench SCENARIO [flags]\n\nscenarios:\n%s\nRun 'xnat-bench SCENARIO -h' for a scenario's flags.\n", bench.Summaries())
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	s, err := bench.Lookup(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "xnat-bench: %v\n", err)
		os.Exit(2)
	}
	if err := s.Run(os.Args[2:], os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "xnat-bench %s: %v\n", s.Name, err)
		os.Exit(1)
	}
}
