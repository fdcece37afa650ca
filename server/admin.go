package server

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/herald-rt/herald/store"
	"github.com/herald-rt/herald/store/channel"
)

// The admin listener: the admin API (a deployment-wide view of nodes and channels), the
// metrics, the debug console, Go's profiler, and — for the console's own connection — this
// node's public /v1 routes. It is a second http.Handler, meant for a loopback or private
// address; with an admin token set, every request must carry it (docs/operations.md).

// adminCookie carries the console's proof of the admin token: a browser cannot send a Bearer
// header when it loads a page.
const adminCookie = "herald_admin"

// statsWindow is the span events per second are measured over.
const statsWindow = 10 * time.Second

// adminAPI serves the admin listener.
type adminAPI struct{ *Server }

// AdminHandler is the admin listener's handler.
func (s *Server) AdminHandler() http.Handler { return s.admin }

func (s *Server) newAdmin() *echo.Echo {
	api := adminAPI{s}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.writeError
	e.IPExtractor = clientIP(s.cfg.TrustedProxies)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true}))
	e.Use(api.requireToken)
	if s.cfg.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(s.cfg.Metrics.Handler()))
	}
	e.GET("/admin/nodes", api.nodes)
	e.GET("/admin/channels", api.channels)
	e.GET("/admin/channels/:channel", api.channel)
	e.GET("/debug/pprof/*", echo.WrapHandler(http.HandlerFunc(pprof.Index)))
	e.GET("/debug/pprof/cmdline", echo.WrapHandler(http.HandlerFunc(pprof.Cmdline)))
	e.GET("/debug/pprof/profile", echo.WrapHandler(http.HandlerFunc(pprof.Profile)))
	e.GET("/debug/pprof/symbol", echo.WrapHandler(http.HandlerFunc(pprof.Symbol)))
	e.GET("/debug/pprof/trace", echo.WrapHandler(http.HandlerFunc(pprof.Trace)))
	e.GET("/console", api.consoleLogin)
	e.GET("/console/*", api.consoleFile)
	e.POST("/admin/dev/token", api.devToken)
	// The console's connection uses this node's public API, same handlers and same auth, so
	// the page needs no CORS.
	e.Any("/v1/*", echo.WrapHandler(s.echo))
	return e
}

// requireToken admits a request that carries the admin token, as a Bearer header or as the
// console's cookie; with no token configured, every request. On /v1 routes the Authorization
// header belongs to the public API (a JWT), so there only the cookie counts.
func (api adminAPI) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		// GET /console checks the token in its own query, and trades it for the cookie.
		if len(api.cfg.AdminToken) == 0 || c.Request().URL.Path == "/console" {
			return next(c)
		}
		if ck, err := c.Cookie(adminCookie); err == nil && subtle.ConstantTimeCompare([]byte(ck.Value), []byte(api.consoleCookieValue())) == 1 {
			return next(c)
		}
		if !strings.HasPrefix(c.Request().URL.Path, "/v1/") {
			auth := c.Request().Header.Get("Authorization")
			if tok, ok := strings.CutPrefix(auth, "Bearer "); ok && subtle.ConstantTimeCompare([]byte(tok), []byte(api.cfg.AdminToken)) == 1 {
				return next(c)
			}
		}
		return errAdminToken
	}
}

var errAdminToken = errorf(http.StatusUnauthorized, "admin_token_invalid", "this listener needs the admin token: Authorization: Bearer <admin token>")

// consoleCookieValue is what the cookie holds: derived from the admin token, so the cookie
// is not the token itself.
func (api adminAPI) consoleCookieValue() string {
	mac := hmac.New(sha256.New, []byte(api.cfg.AdminToken))
	mac.Write([]byte("herald console cookie v1"))
	return hex.EncodeToString(mac.Sum(nil))
}

// appParam is the ?app= of an admin call: the default app when absent.
func (api adminAPI) appParam(c echo.Context) (*App, error) {
	id := c.QueryParam("app")
	if id == "" {
		return api.apps.def(), nil
	}
	if a := api.apps.byID(id); a != nil {
		return a, nil
	}
	return nil, errorf(http.StatusNotFound, "unknown_app", "no app "+strconv.Quote(id)+" is served here")
}

// adminNode is one node in GET /admin/nodes: what it registered, and its live figures.
type adminNode struct {
	ID      string    `json:"id"`
	Self    bool      `json:"self"`
	Expires time.Time `json:"expires"`
	nodeInfo
	// Stats are the node's figures (nodeStats) asked just now over the bus, passed on as the
	// node wrote them; null when it did not answer.
	Stats json.RawMessage `json:"stats"`
}

// nodes is GET /admin/nodes?app=: the live nodes of the deployment, ordered by id.
func (api adminAPI) nodes(c echo.Context) error {
	app, err := api.appParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	nodes, err := app.Registry.Nodes(ctx)
	if err != nil {
		return storeError(err)
	}
	out := make([]adminNode, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		out[i] = adminNode{ID: n.ID, Self: n.ID == app.Hub.Node(), Expires: n.Expires.UTC()}
		_ = json.Unmarshal(n.Info, &out[i].nodeInfo)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Stats = api.statsOf(ctx, app, n.ID)
		}()
	}
	wg.Wait()
	return c.JSON(http.StatusOK, map[string]any{"app": app.ID, "nodes": out, "time": time.Now().UTC()})
}

// statsOf asks node for its figures, briefly; nil when it does not answer in time.
func (api adminAPI) statsOf(ctx context.Context, app *App, node string) json.RawMessage {
	var res socketResult
	if node == app.Hub.Node() {
		res = opNodeStats.run(socketAPI(api), app, ctx, nodeStatsCall{})
	} else {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		res = socketAPI(api).remoteCall(sctx, app, node, opNodeStats.name, node, nodeStatsCall{})
	}
	if res.Status != http.StatusOK || !json.Valid(res.Body) {
		return nil
	}
	return res.Body
}

// adminChannel is one channel in GET /admin/channels.
type adminChannel struct {
	Name            string  `json:"name"`
	Subscribers     int     `json:"subscribers"`
	EventsPerSecond float64 `json:"events_per_second"`
}

// channels is GET /admin/channels?app=&prefix=&sort=&limit=&cursor=: the occupied channels
// (those with subscribers on any node), by name — after cursor, the last name of the previous
// page — or, with sort=subscribers, the busiest first (one page, no cursor).
func (api adminAPI) channels(c echo.Context) error {
	app, err := api.appParam(c)
	if err != nil {
		return err
	}
	limit, err := intParam(c, "limit", 100, 1000)
	if err != nil {
		return err
	}
	sortBy := c.QueryParam("sort")
	if sortBy != "" && sortBy != "name" && sortBy != "subscribers" {
		return badRequest("invalid_sort", "sort is name or subscribers")
	}
	cursor := c.QueryParam("cursor")
	ctx := c.Request().Context()
	occupied, err := app.Registry.Occupied(ctx, c.QueryParam("prefix"))
	if err != nil {
		return storeError(err)
	}
	list := make([]adminChannel, 0, len(occupied))
	for name, n := range occupied {
		if sortBy == "subscribers" || name > cursor {
			list = append(list, adminChannel{Name: name, Subscribers: n})
		}
	}
	if sortBy == "subscribers" {
		slices.SortFunc(list, func(a, b adminChannel) int {
			return cmp.Or(cmp.Compare(b.Subscribers, a.Subscribers), strings.Compare(a.Name, b.Name))
		})
	} else {
		slices.SortFunc(list, func(a, b adminChannel) int { return strings.Compare(a.Name, b.Name) })
	}
	next := ""
	if len(list) > limit {
		list = list[:limit]
		if sortBy != "subscribers" {
			next = list[limit-1].Name
		}
	}
	now := time.Now()
	for i := range list {
		st, err := app.Hub.Store().Stats(ctx, list[i].Name, now.Add(-statsWindow))
		if err != nil {
			return storeError(err)
		}
		list[i].EventsPerSecond = eventsPerSecond(st, now)
	}
	return c.JSON(http.StatusOK, map[string]any{"app": app.ID, "total": len(occupied), "channels": list, "next_cursor": next})
}

// eventsPerSecond is the rate over the last statsWindow, or over the retained history when it
// does not reach back that far.
func eventsPerSecond(st store.ChannelStats, now time.Time) float64 {
	if st.Recent == 0 {
		return 0
	}
	window := statsWindow
	if from := now.Add(-statsWindow); st.OldestTime.After(from) {
		window = max(now.Sub(st.OldestTime), time.Second)
	}
	return float64(st.Recent) / window.Seconds()
}

// channel is GET /admin/channels/{name}?app=: the channel's log, its subscribers per node,
// and its presence members.
func (api adminAPI) channel(c echo.Context) error {
	app, err := api.appParam(c)
	if err != nil {
		return err
	}
	name, err := channelParam(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	now := time.Now()
	st, err := app.Hub.Store().Stats(ctx, name, now.Add(-statsWindow))
	if err != nil {
		return storeError(err)
	}
	perNode, err := app.Registry.Subscriptions(ctx, name)
	if err != nil {
		return storeError(err)
	}
	total := 0
	for _, n := range perNode {
		total += n
	}
	out := struct {
		App             string         `json:"app"`
		Name            string         `json:"name"`
		Head            string         `json:"head"`
		Retained        int            `json:"retained"`
		OldestSeq       uint64         `json:"oldest_seq"`
		OldestTime      *time.Time     `json:"oldest_time"`
		NewestTime      *time.Time     `json:"newest_time"`
		EventsPerSecond float64        `json:"events_per_second"`
		Subscribers     int            `json:"subscribers"`
		ByNode          map[string]int `json:"subscribers_by_node"`
		Members         []store.Member `json:"members,omitempty"`
	}{App: app.ID, Name: name, Retained: st.Retained, OldestSeq: st.Oldest, EventsPerSecond: eventsPerSecond(st, now),
		Subscribers: total, ByNode: perNode}
	if st.Head.Seq > 0 {
		out.Head = st.Head.String()
	}
	if st.Retained > 0 {
		o, n := st.OldestTime.UTC(), st.NewestTime.UTC()
		out.OldestTime, out.NewestTime = &o, &n
	}
	if channel.IsPresence(name) && app.Presence != nil {
		members, err := app.Presence.Members(ctx, name)
		if err != nil {
			return storeError(err)
		}
		out.Members = append([]store.Member{}, members...)
	}
	return c.JSON(http.StatusOK, out)
}
