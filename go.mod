module xnat

go 1.26
