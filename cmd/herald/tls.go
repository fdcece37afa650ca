package main

import (
	"context"
	"crypto/tls"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/herald-rt/herald/server"
)

// certCheckInterval is how often the certificate files are checked for a renewal.
const certCheckInterval = 10 * time.Second

func tlsConfig(cert *server.Certificate) *tls.Config {
	if cert == nil {
		return nil
	}
	return cert.TLSConfig()
}

// reloadOnHangup reloads the certificate on every SIGHUP until ctx ends, for renewal hooks
// (certbot's --deploy-hook, say) that would rather not wait for the next check. Without a
// certificate SIGHUP is still taken, and only logged: its default action would end the
// process, and a service manager's reload (systemd's ExecReload=kill -HUP) must not.
func reloadOnHangup(ctx context.Context, cert *server.Certificate, log zerolog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if cert == nil {
			log.Info().Msg("SIGHUP: nothing to reload (no --tls-cert)")
			continue
		}
		switch changed, err := cert.Reload(); {
		case err != nil:
			log.Error().Err(err).Msg("tls: SIGHUP: cannot reload the certificate; still serving the previous one")
		case changed:
			log.Info().Msg("tls: SIGHUP: certificate reloaded")
		default:
			log.Info().Msg("tls: SIGHUP: certificate files unchanged")
		}
	}
}

// protocols names what the API listener speaks, for the startup line.
func protocols(tls, h2c bool) string {
	switch {
	case tls && h2c:
		return "https (h2, http/1.1), h2c"
	case tls:
		return "https (h2, http/1.1)"
	case h2c:
		return "http/1.1, h2c"
	}
	return "http/1.1"
}
