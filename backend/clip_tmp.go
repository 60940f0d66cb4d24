package backend

// clip is replaced by validate.go's on merge.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
