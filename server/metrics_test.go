package server

import (
	"net/http"
	"testing"
)

// TestMetricsRouteLabels: the route label is the router's pattern, and a path no route
// matches is "unmatched" — a scanner's thousand paths add no series.
func TestMetricsRouteLabels(t *testing.T) {
	m := NewMetrics("test")
	ts, _ := newTestServer(t, Config{Metrics: m})
	for _, p := range []string{"/nope", "/wp-admin/x.php", "/v1/channels/a/nope", "/v1/health"} {
		resp, err := http.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	routes := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "herald_http_requests_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "route" {
					routes[l.GetValue()] += s.GetCounter().GetValue()
				}
			}
		}
	}
	if len(routes) != 2 || routes["unmatched"] != 3 || routes["/v1/health"] != 1 {
		t.Fatalf("requests by route: %v, want 3 unmatched and 1 /v1/health", routes)
	}
}
