package api_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/danielgtaylor/huma/v2"

	"github.com/loopze/certstore/internal/api"
)

// TestOpenAPIFileMatchesCode fails when openapi/openapi.yaml drifts from the registered
// routes. Regenerate with `make openapi`.
func TestOpenAPIFileMatchesCode(t *testing.T) {
	t.Parallel()
	want, err := api.Spec("yaml")
	require.NoError(t, err)
	have, err := os.ReadFile(filepath.Join("..", "..", "openapi", "openapi.yaml"))
	require.NoError(t, err, "run `make openapi`")
	require.Equal(t, string(want), string(have), "openapi/openapi.yaml is out of date: run `make openapi`")
}

func TestEveryOperationIsDocumented(t *testing.T) {
	t.Parallel()
	s := api.New(api.Deps{Logger: slog.New(slog.DiscardHandler)})
	for path, item := range s.API.OpenAPI().Paths {
		for method, op := range map[string]*huma.Operation{"GET": item.Get, "POST": item.Post, "PUT": item.Put, "DELETE": item.Delete} {
			if op == nil {
				continue
			}
			require.NotEmpty(t, op.OperationID, "%s %s", method, path)
			require.NotEmpty(t, op.Summary, "%s %s", method, path)
			require.NotEmpty(t, op.Tags, "%s %s", method, path)
		}
	}
}
