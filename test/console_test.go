package test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The debug console in a real browser: headless Debian chromium (driven by chromedp) opens
// /console?token= on the admin listener of a `herald serve --dev`, and the page, with nothing
// but its own files and its own origin, connects, subscribes, mints tokens, publishes and sees
// what it published; a second tab on the same cookie whispers on a presence channel, over SSE
// and then over long-poll, and the first tab shows it. Any exception, console.error or browser log error (a CSP violation, a
// failed load) fails the test. Budget: about 20 s, most of it the browser's start.

// consoleTab is one tab of the console, with the errors it reported.
type consoleTab struct {
	name string
	ctx  context.Context

	mu     sync.Mutex
	errors []string
}

// newConsoleTab opens a tab in the browser of parent and records its errors.
func newConsoleTab(t *testing.T, parent context.Context, name string) *consoleTab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent)
	t.Cleanup(cancel)
	tab := &consoleTab{name: name, ctx: ctx}
	// The callback runs in chromedp's reading loop: it only appends under the lock.
	err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
				return
			}
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			msg = "console." + string(ev.Type) + ": " + strings.Join(args, " ")
		case *log.EventEntryAdded:
			if ev.Entry.Level != log.EntryLevelError {
				return
			}
			msg = "browser log (" + string(ev.Entry.Source) + "): " + ev.Entry.Text + " " + ev.Entry.URL
		default:
			return
		}
		tab.mu.Lock()
		tab.errors = append(tab.errors, msg)
		tab.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("%s: chromium: %v", name, err)
	}
	tab.run(t, "set the viewport", chromedp.EmulateViewport(1400, 1100))
	return tab
}

// run runs actions, bounded by 15 s.
func (tab *consoleTab) run(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %s: %v\n%s", tab.name, what, err, tab.dump())
	}
}

// eval evaluates a JavaScript expression, bounded by 5 s.
func evalIn[T any](t *testing.T, tab *consoleTab, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: evaluate %s: %v", tab.name, expr, err)
	}
	return v
}

// waitFor waits up to 10 s for a JavaScript condition to hold on the page.
func (tab *consoleTab) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, 15*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool]("!!("+cond+")",
		chromedp.WithPollingTimeout(10*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		t.Fatalf("%s: waiting for %s: %v\n%s", tab.name, what, err, tab.dump())
	}
}

// dump is what the page shows, for a failure's message.
func (tab *consoleTab) dump() string {
	ctx, cancel := context.WithTimeout(tab.ctx, 3*time.Second)
	defer cancel()
	text, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : '(no body)'`))
	if err != nil {
		text = "(page unreadable: " + err.Error() + ")"
	}
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return fmt.Sprintf("---- %s shows ----\n%s\n---- %s errors: %q", tab.name, text, tab.name, tab.errors)
}

// expectNoErrors fails the test if the page reported an error.
func (tab *consoleTab) expectNoErrors(t *testing.T) {
	t.Helper()
	tab.mu.Lock()
	defer tab.mu.Unlock()
	for _, e := range tab.errors {
		t.Errorf("%s: %s", tab.name, e)
	}
}

// set puts a value in an input and tells the page, as typing would.
func (tab *consoleTab) set(t *testing.T, id, value string) {
	t.Helper()
	js := fmt.Sprintf(`(() => { const e = document.getElementById(%s); e.value = %s; e.dispatchEvent(new Event('input')); return true; })()`,
		strconv.Quote(id), strconv.Quote(value))
	if !evalIn[bool](t, tab, js) {
		t.Fatalf("%s: could not set #%s", tab.name, id)
	}
}

func (tab *consoleTab) click(t *testing.T, sel string) {
	t.Helper()
	tab.run(t, "click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// connected is the condition of a connected console.
const consoleConnected = `document.getElementById('conn-state').dataset.state === 'connected'`

// subscribedTo is the condition of a channel the page shows subscribed.
func subscribedTo(name string) string {
	return fmt.Sprintf(`document.querySelector('#channel-list li[data-channel=%s]')?.dataset.status === 'subscribed'`, strconv.Quote(name))
}

// logHas is the condition of a row in the page's log: its kind, channel and event, and text.
func logHas(kind, channel, event, text string) string {
	return fmt.Sprintf(`[...document.querySelectorAll('#log-body tr')].some(r => r.dataset.kind === %s && r.dataset.channel === %s && r.dataset.event === %s && r.textContent.includes(%s))`,
		strconv.Quote(kind), strconv.Quote(channel), strconv.Quote(event), strconv.Quote(text))
}

// mint asks the page for a dev token for the channels it names, as user, and waits until the
// connection is back with it.
func (tab *consoleTab) mint(t *testing.T, user, channel string) {
	t.Helper()
	before := evalIn[string](t, tab, `document.getElementById('token').value`)
	tab.set(t, "mint-user", user)
	tab.set(t, "sub-channel", channel)
	tab.click(t, "#mint")
	tab.waitFor(t, "a minted token", fmt.Sprintf(`document.getElementById('token').value !== %s && document.getElementById('token-status').textContent.includes('sub '+%s)`,
		strconv.Quote(before), strconv.Quote(user)))
	tab.waitFor(t, "connected with the token", consoleConnected)
}

// subscribe subscribes the page to channel and waits until it is.
func (tab *consoleTab) subscribe(t *testing.T, channel string) {
	t.Helper()
	tab.set(t, "sub-channel", channel)
	tab.click(t, "#subscribe-form button")
	tab.waitFor(t, "subscribed to "+channel, subscribedTo(channel))
}

func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h := startHerald(t, heraldOpts{args: []string{"--dev", "--admin-token", adminToken}})

	allocCtx, allocCancel := chromiumAllocator(t, ctx, chromium)
	defer allocCancel()
	browser, browserCancel := chromedp.NewContext(allocCtx)
	defer browserCancel()
	if err := chromedp.Do(browser); err != nil { // starts chromium
		t.Fatalf("chromium (%s) did not start: %v", chromium, err)
	}

	ann := newConsoleTab(t, browser, "console A")
	ann.run(t, "open /console?token=", chromedp.Navigate(h.Admin+"/console?token="+adminToken))
	if href := evalIn[string](t, ann, `location.href`); href != h.Admin+"/console/" {
		t.Fatalf("after the login the page is at %s, want %s/console/ (the token out of the address bar)", href, h.Admin)
	}
	ann.waitFor(t, "connected", consoleConnected)
	if tr := evalIn[string](t, ann, `document.getElementById('conn-transport').textContent`); tr != "sse" {
		t.Errorf("transport shown: %q, want sse", tr)
	}
	if sid := evalIn[string](t, ann, `document.getElementById('conn-socket').textContent`); !socketIDRe.MatchString(sid) {
		t.Errorf("socket id shown: %q", sid)
	}
	t.Logf("chromium up, console connected in %v", time.Since(start))

	// A public channel, a token minted for it, and what the page publishes comes back to it.
	news, room := uniqueChannel("console"), "presence-"+uniqueChannel("console-room")
	ann.subscribe(t, news)
	ann.mint(t, "ann", news)
	ann.waitFor(t, "subscribed again after the new token", subscribedTo(news))
	ann.set(t, "pub-channel", news)
	ann.set(t, "pub-data", `{"text":"hello from the e2e test"}`)
	ann.click(t, "#pub-test")
	ann.waitFor(t, "the test message in the log", logHas("event", news, "TestMessage", "hello from the e2e test"))
	ann.set(t, "pub-event", "ConsoleTest")
	ann.click(t, "#publish-form button[type=submit]")
	ann.waitFor(t, "the published event in the log", logHas("event", news, "ConsoleTest", "hello from the e2e test"))
	ids := evalIn[[]string](t, ann, fmt.Sprintf(`[...document.querySelectorAll('#log-body tr[data-kind=event][data-channel=%s] td.id')].map(td => td.textContent).reverse()`, strconv.Quote(news)))
	if len(ids) != 2 || !regexp.MustCompile(`^[a-z0-9]+-1$`).MatchString(ids[0]) || !regexp.MustCompile(`^[a-z0-9]+-2$`).MatchString(ids[1]) {
		t.Errorf("the log's event ids: %q, want the channel's cursors 1 and 2", ids)
	}
	if st := evalIn[string](t, ann, `document.getElementById('publish-status').textContent`); !strings.HasPrefix(st, "201: "+news) {
		t.Errorf("publish status: %q", st)
	}

	// The server panel: health, config and this node.
	ann.waitFor(t, "the server panel", `document.getElementById('server-health').textContent.includes('"ok"') &&
		document.getElementById('server-config').textContent.includes('herald.v1') &&
		document.querySelectorAll('#nodes-body tr[data-node]').length === 1`)

	// A second tab on the same cookie joins the presence channel and whispers.
	bob := newConsoleTab(t, browser, "console B")
	bob.run(t, "open /console/", chromedp.Navigate(h.Admin+"/console/"))
	bob.waitFor(t, "connected", consoleConnected)
	bob.mint(t, "bob", room)
	bob.subscribe(t, room)
	ann.mint(t, "ann", room) // a token for both of its channels
	ann.subscribe(t, room)
	ann.waitFor(t, "two members", fmt.Sprintf(`document.querySelector('#channel-list li[data-channel=%s] .status').textContent.includes('2 members')`, strconv.Quote(room)))
	bob.waitFor(t, "ann joining", logHas("notice", room, "herald:member_added", `"user_id":"ann"`))
	bob.click(t, fmt.Sprintf(`#channel-list li[data-channel=%s] button.whisper`, strconv.Quote(room)))
	ann.waitFor(t, "bob's whisper", logHas("whisper", room, "client-typing", "from bob"))
	bob.waitFor(t, "the whisper sent", logHas("sent", room, "client-typing", `"typing":true`))
	if evalIn[bool](t, bob, logHas("whisper", room, "client-typing", "")) {
		t.Error("a whisper came back to its sender")
	}

	// Bob's console moves to long-poll: a new socket, subscribed again, and its whispers still
	// reach Ann.
	bob.run(t, "choose long-poll", chromedp.SetValue(chromedp.CSS("#transport-choice"), "poll"))
	if !evalIn[bool](t, bob, `document.getElementById('transport-choice').dispatchEvent(new Event('change'))`) {
		t.Fatal("could not choose long-poll")
	}
	bob.waitFor(t, "connected over long-poll", consoleConnected+` && document.getElementById('conn-transport').textContent === 'long-poll'`)
	bob.waitFor(t, "subscribed again over long-poll", subscribedTo(room))
	bob.click(t, fmt.Sprintf(`#channel-list li[data-channel=%s] button.whisper`, strconv.Quote(room)))
	ann.waitFor(t, "bob's whisper over long-poll", fmt.Sprintf(`document.querySelectorAll('#log-body tr[data-kind=whisper][data-channel=%s]').length === 2`, strconv.Quote(room)))

	// The log's filter.
	ann.set(t, "log-filter", "client-typing")
	shown := evalIn[[]string](t, ann, `[...document.querySelectorAll('#log-body tr')].filter(r => !r.hidden).map(r => r.dataset.event)`)
	if len(shown) != 2 || shown[0] != "client-typing" || shown[1] != "client-typing" {
		t.Errorf("filtered by client-typing, the log shows %q", shown)
	}
	ann.set(t, "log-filter", "")

	if n := evalIn[string](t, ann, `document.getElementById('conn-reconnects').textContent`); n != "0" {
		t.Errorf("reconnects shown: %s, want 0 (a new token is no reconnect)", n)
	}

	dir, err := filepath.Abs("artifacts")
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tab := range []*consoleTab{ann, bob} {
		sctx, scancel := context.WithTimeout(tab.ctx, 10*time.Second)
		png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
		scancel()
		if err != nil {
			t.Fatalf("%s: screenshot: %v", tab.name, err)
		}
		name := filepath.Join(dir, "console-"+strings.ToLower(strings.TrimPrefix(tab.name, "console "))+".png")
		if err := os.WriteFile(name, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", name)
	}

	// The JWT the page used went to the server in ?token= (EventSource), and no log has it.
	jwt := evalIn[string](t, ann, `document.getElementById('token').value`)
	if logs := h.logs.String(); jwt == "" || strings.Contains(logs, jwt) || !strings.Contains(logs, "token=REDACTED") {
		t.Errorf("the page's JWT (%d bytes) is in the server's log, or its stream was not logged redacted", len(jwt))
	}
	ann.expectNoErrors(t)
	bob.expectNoErrors(t)
	t.Logf("console test took %v", time.Since(start))
}
