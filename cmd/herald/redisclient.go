package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// redisTarget is where the apps keep their data: one Redis (--redis-url), a Redis Cluster
// (--redis-cluster) or a master found through Sentinel (--redis-sentinels); none of them
// means the embedded in-memory store.
type redisTarget struct {
	url              string
	cluster          string // seeds
	sentinels        string // seeds
	masterName       string
	sentinelPassword string
	tls              redisTLSFiles
}

func (t redisTarget) enabled() bool { return t.url != "" || t.cluster != "" || t.sentinels != "" }

// describe names the target for log lines and errors, without credentials.
func (t redisTarget) describe() string {
	switch {
	case t.cluster != "":
		_, addrs, _ := parseSeeds(t.cluster)
		return "Redis Cluster " + strings.Join(addrs, ",")
	case t.sentinels != "":
		_, addrs, _ := parseSeeds(t.sentinels)
		return "Redis master " + strconv.Quote(t.masterName) + " via Sentinel " + strings.Join(addrs, ",")
	default:
		if o, err := redis.ParseURL(t.url); err == nil {
			return "Redis at " + o.Addr
		}
		return "Redis"
	}
}

// newClient makes the client the target calls for, with go-redis's handshakes that open-source
// Redis before 7.2 or 8 refuses turned off (CLIENT SETINFO, CLIENT MAINT_NOTIFICATIONS).
func (t redisTarget) newClient() (redis.UniversalClient, error) {
	set := 0
	for _, v := range []string{t.url, t.cluster, t.sentinels} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return nil, errors.New("--redis-url, --redis-cluster and --redis-sentinels are alternatives: give one")
	}
	if t.sentinels == "" && (t.masterName != "" || t.sentinelPassword != "") {
		return nil, errors.New("--redis-master-name and --redis-sentinel-password go with --redis-sentinels")
	}
	noMaint := &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	switch {
	case t.cluster != "":
		base, addrs, err := parseSeeds(t.cluster)
		if err != nil {
			return nil, fmt.Errorf("--redis-cluster: %w", err)
		}
		if base.db != 0 {
			return nil, fmt.Errorf("--redis-cluster: database %d: a Redis Cluster has only database 0", base.db)
		}
		o := &redis.ClusterOptions{Addrs: addrs, Username: base.user, Password: base.password,
			DisableIdentity: true, MaintNotificationsConfig: noMaint}
		if o.TLSConfig, err = t.tls.apply(base.tls); err != nil {
			return nil, err
		}
		return redis.NewClusterClient(o), nil
	case t.sentinels != "":
		base, addrs, err := parseSeeds(t.sentinels)
		if err != nil {
			return nil, fmt.Errorf("--redis-sentinels: %w", err)
		}
		if t.masterName == "" {
			return nil, errors.New("--redis-sentinels needs --redis-master-name")
		}
		o := &redis.FailoverOptions{MasterName: t.masterName, SentinelAddrs: addrs, SentinelPassword: t.sentinelPassword,
			Username: base.user, Password: base.password, DB: base.db, DisableIdentity: true}
		if o.TLSConfig, err = t.tls.apply(base.tls); err != nil {
			return nil, err
		}
		return redis.NewFailoverClient(o), nil
	default:
		o, err := redis.ParseURL(t.url)
		if err != nil {
			return nil, fmt.Errorf("--redis-url: %w", err)
		}
		if o.TLSConfig, err = t.tls.apply(o.TLSConfig); err != nil {
			return nil, err
		}
		o.DisableIdentity, o.MaintNotificationsConfig = true, noMaint
		return redis.NewClient(o), nil
	}
}

// seedBase is what the first seed's URL says for every node.
type seedBase struct {
	user, password string
	db             int
	tls            *tls.Config // non-nil for rediss://
}

// parseSeeds reads "host:port,host:port,…", where the first may instead be a URL,
// redis[s]://[user:password@]host:port[/db], whose scheme and login hold for every node.
func parseSeeds(list string) (seedBase, []string, error) {
	var base seedBase
	var addrs []string
	for i, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if strings.Contains(item, "://") {
			if i > 0 {
				return base, nil, fmt.Errorf("%q: only the first seed may be a URL", item)
			}
			u, err := url.Parse(item)
			if err != nil {
				return base, nil, err
			}
			switch u.Scheme {
			case "rediss":
				base.tls = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
			case "redis":
			default:
				return base, nil, fmt.Errorf("%q: the scheme must be redis or rediss", item)
			}
			base.user = u.User.Username()
			base.password, _ = u.User.Password()
			if db := strings.Trim(u.Path, "/"); db != "" {
				if base.db, err = strconv.Atoi(db); err != nil || base.db < 0 {
					return base, nil, fmt.Errorf("%q: the path must be a database number", item)
				}
			}
			item = u.Host
		}
		if _, port, err := net.SplitHostPort(item); err != nil || port == "" {
			return base, nil, fmt.Errorf("%q is not host:port", item)
		}
		addrs = append(addrs, item)
	}
	if len(addrs) == 0 {
		return base, nil, errors.New("no seed address")
	}
	return base, addrs, nil
}

// pingRedis asks the target for a PONG at startup: a refusal that waiting cannot cure stops the
// node in one line; an unreachable server is only warned about, and answered with 503 until
// it is reachable.
func pingRedis(ctx context.Context, c redis.UniversalClient) (unreachable error, refused error) {
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	err := c.Ping(pctx).Err()
	if misconfigured(err) {
		return nil, err
	}
	return err, nil
}
