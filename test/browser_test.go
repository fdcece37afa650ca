package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The browser interop test: Chromium's native EventSource (headless Debian chromium, driven by
// chromedp) reads Herald streams from a page of another origin (so CORS is exercised), and
// must reconnect with Last-Event-ID after the connection is cut, with no loss and no duplicate.
// Budget: about 60 s, most of it the browser's start.

// browserPage opens one EventSource per stream named in the query (?s=<url>&s=<url>) and keeps
// what each sees in window.herald[i].
const browserPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>herald e2e</title></head><body>
<script>
window.herald = [];
for (const src of new URLSearchParams(location.search).getAll('s')) {
  const log = {opens: 0, errors: 0, connected: 0, events: [], other: []};
  window.herald.push(log);
  const es = new EventSource(src);
  es.onopen = () => { log.opens++; };
  es.onerror = () => { log.errors++; };
  es.onmessage = (e) => { log.other.push(e.data); };
  es.addEventListener('herald:connected', () => { log.connected++; });
  es.addEventListener('herald:resync', (e) => { log.other.push('resync ' + e.data); });
  es.addEventListener('Tick', (e) => { log.events.push({id: e.lastEventId, data: e.data}); });
}
</script></body></html>`

// chromiumAllocator starts headless Chromium at path with a fresh profile and nothing running in
// the background: no updates, sync, extensions or QUIC, and no throttling of pages that are
// not in front (a test's second tab must keep its timers).
func chromiumAllocator(t *testing.T, ctx context.Context, path string) (context.Context, context.CancelFunc) {
	return chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
	)
}

// chromiumPath finds Debian's chromium.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("this test needs Chromium: apt-get install chromium (make test installs it)")
	return ""
}

// browserProbe reads window.herald[idx] through chromedp.
type browserProbe struct {
	ctx context.Context
	idx int
}

func (p browserProbe) snapshot() (int, []clientEvent, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	raw, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf("JSON.stringify(window.herald[%d])", p.idx)))
	if err != nil {
		return 0, nil, err
	}
	var log struct {
		Connected int           `json:"connected"`
		Events    []clientEvent `json:"events"`
		Other     []string      `json:"other"`
	}
	if err := json.Unmarshal([]byte(raw), &log); err != nil {
		return 0, nil, fmt.Errorf("page state %s: %w", raw, err)
	}
	if len(log.Other) > 0 {
		return log.Connected, log.Events, fmt.Errorf("unexpected messages in the browser: %q", log.Other)
	}
	return log.Connected, log.Events, nil
}

func TestBrowserEventSource(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
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

	h := startHerald(t, heraldOpts{args: []string{"--retry", "300ms", "--cors-origins", page.URL}})
	oneCh := uniqueChannel("browser")
	multiCh := uniqueChannel("browser-multi")
	// Two streams, each through its own proxy so a cut affects exactly one of them at a time.
	oneProxy := startProxy(t, h.Addr)
	multiProxy := startProxy(t, h.Addr)
	onePath := eventsPath(oneCh)
	multiPath := "/v1/stream?" + url.Values{"channel": {multiCh, uniqueChannel("browser-other")}}.Encode()
	pageURL := page.URL + "/?" + url.Values{"s": {oneProxy.Base() + onePath, multiProxy.Base() + multiPath}}.Encode()

	allocCtx, allocCancel := chromiumAllocator(t, ctx, chromium)
	defer allocCancel()
	bctx, bcancel := chromedp.NewContext(allocCtx)
	defer bcancel()
	start := time.Now()
	if err := chromedp.Do(bctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("chromium (%s) could not open the test page: %v", chromium, err)
	}
	t.Logf("chromium up and page loaded in %v", time.Since(start))

	t.Run("one-channel", func(t *testing.T) {
		reconnectScenario(t, h, oneProxy, browserProbe{bctx, 0}, oneCh, onePath, false)
	})
	t.Run("multi-channel", func(t *testing.T) {
		reconnectScenario(t, h, multiProxy, browserProbe{bctx, 1}, multiCh, multiPath, true)
	})

	// CORS: herald named the page's origin, as EventSource from another origin needs.
	for _, req := range oneProxy.Requests(onePath) {
		if o := req.Header.Get("Origin"); o != "" && o != page.URL {
			t.Errorf("browser sent Origin %q, want %q", o, page.URL)
		}
	}
	r := mustDo(t, http.MethodGet, h.Base+"/v1/health", http.Header{"Origin": {page.URL}}, nil)
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != page.URL {
		t.Errorf("--cors-origins %s: Access-Control-Allow-Origin = %q", page.URL, got)
	}
	// A refused client on another origin must be able to read when to come back.
	if got := r.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Retry-After") {
		t.Errorf("Access-Control-Expose-Headers = %q, want Retry-After in it", got)
	}
	r = mustDo(t, http.MethodGet, h.Base+"/v1/health", http.Header{"Origin": {"http://127.0.0.1:1"}}, nil)
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("an origin not in --cors-origins got Access-Control-Allow-Origin %q", got)
	}
	t.Logf("browser test took %v", time.Since(start))
}
