package daemon

import "os"

func writeFileBytes(path string, b []byte) error { return os.WriteFile(path, b, 0o644) }
