// Package conntrack speaks conntrack-tools: it parses the command lines
// of `conntrack -L`, `-D`, `-F`, `-C` and `-S` with their filters, and
// formats connections and statistics exactly as conntrack prints them, so
// that `xnatctl conntrack …` reads and writes like the tool a network
// engineer already knows. It works on flowtable.FlowInfo values and knows
// nothing of sockets or daemons.
package conntrack
