// Package migrations embeds the goose SQL migrations of the certificate store. They are
// forward-only: a released migration is never edited, a change is a new file.
package migrations

import "embed"

// FS holds every *.sql migration, in goose's numbering.
//
//go:embed *.sql
var FS embed.FS
