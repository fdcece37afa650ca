package redisstore

// SuppressPublish makes s's appends publish no notice, as if pub/sub had lost them, so tests
// can check that live delivery refills them from the log.
func SuppressPublish(s *Store, on bool) { s.suppressPublish.Store(on) }
