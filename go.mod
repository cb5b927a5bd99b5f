module xnat

go 1.26

require github.com/dustin/go-humanize v1.0.1
