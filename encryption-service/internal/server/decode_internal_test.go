package server

// PendingDecodeFailures counts the decoding notes no handler took yet: none once calls end.
func PendingDecodeFailures() int {
	n := 0
	decodeFailures.Range(func(any, any) bool { n++; return true })
	return n
}
