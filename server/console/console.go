// Package console holds the debug console's page: static files embedded in the binary and served
// by the admin listener under /console/ (server/console.go, docs/operations.md). It is plain
// HTML, CSS and JavaScript with no build step at run time and nothing fetched from elsewhere;
// herald.min.js is a copy of clientjs's browser bundle, and clientjs/test/bundle.test.js fails
// when the copy differs from a fresh build.
package console

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// Files are the console's files at the root of the FS: index.html, console.js, console.css,
// herald.min.js and favicon.svg.
func Files() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("console: " + err.Error()) // "static" is a valid path: not reached
	}
	return sub
}
