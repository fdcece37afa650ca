package stream

import "strings"

// SubscribedChannels returns the channels starting with prefix that at least one socket of
// this hub subscribes to, each with its number of sockets. Sockets of other nodes are not
// counted, and channels kept listened to only for the linger time are left out.
func (h *Hub) SubscribedChannels(prefix string) map[string]int {
	h.mu.RLock()
	states := make([]*channelState, 0, len(h.channels))
	for name, cs := range h.channels {
		if strings.HasPrefix(name, prefix) {
			states = append(states, cs)
		}
	}
	h.mu.RUnlock()
	out := make(map[string]int)
	for _, cs := range states {
		cs.mu.RLock()
		n := len(cs.subs)
		cs.mu.RUnlock()
		if n > 0 {
			out[cs.name] = n
		}
	}
	return out
}

// Subscribers reports how many sockets of this hub subscribe to channel.
func (h *Hub) Subscribers(channel string) int {
	h.mu.RLock()
	cs := h.channels[channel]
	h.mu.RUnlock()
	if cs == nil {
		return 0
	}
	cs.mu.RLock()
	defer cs.mu.RUnlock()
	return len(cs.subs)
}

// Terminate ends the socket from any goroutine: Next returns ErrClosed, and whoever reads the
// socket then closes it. Unlike Close it touches nothing Next uses.
func (s *Socket) Terminate() { s.kill(ErrClosed) }
