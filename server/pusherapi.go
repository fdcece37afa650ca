package server

import "github.com/labstack/echo/v4"

// pusherRoutes mounts the Pusher HTTP API (/apps/{app_id}/…), which Laravel's pusher/reverb
// broadcaster calls.
func (s *Server) pusherRoutes(e *echo.Echo) {}
