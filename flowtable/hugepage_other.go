//go:build !linux

package flowtable

func hugePages[T any](s []T) {}
