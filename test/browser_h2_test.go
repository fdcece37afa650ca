package test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/herald-rt/herald/test/testkit"
)

// Why HTTP/2 matters to SSE, in a real browser: over HTTP/1.1 Chromium opens at most six
// connections per origin, so the seventh tab's EventSource waits until another tab lets one go;
// over HTTP/2 every tab's stream shares one connection and ten tabs all receive every event.
// Each page holds one plain EventSource (not clientjs, whose connect timeout would fall back to
// long-poll and hide the stall). The test CA is trusted through Chromium's flags only.
func TestBrowserHTTP2Tabs(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(browserPage))
	}))
	defer page.Close()
	cors := []string{"--cors-origins", page.URL}
	h1 := startHerald(t, heraldOpts{name: "herald-h1", args: cors})
	h2 := startHerald(t, heraldOpts{name: "herald-h2", tls: true, args: cors})

	allocCtx, allocCancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:0:0],
		chromedp.ExecPath(chromium), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true), // HTTP/3 would blur what is measured
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("ignore-certificate-errors-spki-list", spkiHash(t, testCerts.ServerCert)),
	)...)
	defer allocCancel()
	browser, browserCancel := chromedp.NewContext(allocCtx)
	defer browserCancel()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("chromium (%s) did not start: %v", chromium, err)
	}

	// openTabs opens n tabs, each with one EventSource on the channel, and returns their probes.
	openTabs := func(t *testing.T, base, ch string, n int) ([]browserProbe, []context.CancelFunc) {
		t.Helper()
		pageURL := page.URL + "/?" + url.Values{"s": {base + eventsPath(ch)}}.Encode()
		var probes []browserProbe
		var closers []context.CancelFunc
		for i := range n {
			tab, closeTab := chromedp.NewContext(browser)
			t.Cleanup(closeTab)
			if err := chromedp.Do(tab, chromedp.Navigate(pageURL)); err != nil {
				t.Fatalf("tab %d: %v", i+1, err)
			}
			probes = append(probes, browserProbe{tab, 0})
			closers = append(closers, closeTab)
		}
		return probes, closers
	}
	// connected says which tabs' EventSource got herald:connected.
	connected := func(t *testing.T, tabs []browserProbe) []bool {
		t.Helper()
		out := make([]bool, len(tabs))
		for i, p := range tabs {
			c, _, err := p.snapshot()
			if err != nil {
				t.Fatalf("tab %d: %v", i+1, err)
			}
			out[i] = c > 0
		}
		return out
	}
	count := func(bs []bool) (n int) {
		for _, b := range bs {
			if b {
				n++
			}
		}
		return n
	}
	// expectEvents waits until tab got exactly ids, in order.
	expectEvents := func(t *testing.T, what string, p browserProbe, ids []string) {
		t.Helper()
		var evs []clientEvent
		ok := testkit.WaitFor(15*time.Second, func() bool {
			var err error
			_, evs, err = p.snapshot()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return len(evs) >= len(ids)
		})
		if !ok || len(evs) != len(ids) {
			t.Fatalf("%s: got %d events, want %d", what, len(evs), len(ids))
		}
		for i, e := range evs {
			if e.ID != ids[i] {
				t.Fatalf("%s: event %d has id %s, want %s", what, i, e.ID, ids[i])
			}
		}
	}

	t.Run("HTTP/1.1: the seventh tab waits for a connection", func(t *testing.T) {
		ch := uniqueChannel("tabs-h1")
		tabs, closers := openTabs(t, h1.Base, ch, 7)
		if !testkit.WaitFor(20*time.Second, func() bool { return count(connected(t, tabs)) >= 6 }) {
			t.Fatalf("only %d of the first 6 tabs connected", count(connected(t, tabs)))
		}
		time.Sleep(time.Second) // the seventh would have had time to connect, were it able to
		state := connected(t, tabs)
		if n := count(state); n != 6 {
			t.Fatalf("%d tabs connected over HTTP/1.1, want 6 (Chromium's per-origin limit): %v", n, state)
		}
		stalled := -1
		for i, c := range state {
			if !c {
				stalled = i
			}
		}
		tok := h1.Publisher(t)
		ids := h1.publishN(t, tok, ch, "Tick", 0, 5)
		for i, p := range tabs {
			if i != stalled {
				expectEvents(t, fmt.Sprintf("tab %d", i+1), p, ids)
			}
		}
		if _, evs, _ := tabs[stalled].snapshot(); len(evs) != 0 {
			t.Fatalf("the stalled tab received %d events", len(evs))
		}
		// One tab closes and gives its connection up: the waiting stream goes through.
		other := (stalled + 1) % len(tabs)
		closers[other]()
		if !testkit.WaitFor(15*time.Second, func() bool { c, _, _ := tabs[stalled].snapshot(); return c > 0 }) {
			t.Fatal("the waiting tab did not connect once another tab closed")
		}
		more := h1.publishN(t, tok, ch, "Tick", 5, 3)
		expectEvents(t, "the tab that waited", tabs[stalled], more)
	})

	t.Run("HTTP/2: ten tabs on one connection all receive every event", func(t *testing.T) {
		ch := uniqueChannel("tabs-h2")
		tabs, _ := openTabs(t, h2.Base, ch, 10)
		if !testkit.WaitFor(20*time.Second, func() bool { return count(connected(t, tabs)) == 10 }) {
			t.Fatalf("%d of 10 tabs connected over HTTP/2: %v", count(connected(t, tabs)), connected(t, tabs))
		}
		tok := h2.Publisher(t)
		ids := h2.publishN(t, tok, ch, "Tick", 0, 5)
		for i, p := range tabs {
			expectEvents(t, fmt.Sprintf("tab %d", i+1), p, ids)
		}
	})
}

// spkiHash is what Chromium's --ignore-certificate-errors-spki-list takes: the base64 SHA-256
// of the certificate's public key.
func spkiHash(t testing.TB, certFile string) string {
	t.Helper()
	cert, err := x509.ParseCertificate(pemCert(t, certFile))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
