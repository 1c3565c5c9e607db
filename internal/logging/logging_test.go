package logging_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/loopze/certstore/internal/logging"
	"github.com/loopze/certstore/internal/secret"
)

const pemText = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHx1c2VyLXNlY3JldC1rZXktbWF0ZXJpYWwtMTIz\n-----END PRIVATE KEY-----\n"

func TestSecretTypesNeverPrint(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		log := logging.New(&buf, format, slog.LevelDebug)
		p := secret.PEM(pemText)
		b := secret.Bytes("key-bytes-0123456789")
		s := secret.String("hunter2-credential")
		log.Info("material", "pem", p, "bytes", b, "str", s, "group", slog.GroupValue(slog.Any("inner", p)))
		log.Info(fmt.Sprintf("%v %s %+v %#v", p, b, s, p))
		out := buf.String()
		require.NotContains(t, out, "-----BEGIN", format)
		require.NotContains(t, out, "key-bytes", format)
		require.NotContains(t, out, "hunter2", format)
		require.Contains(t, out, secret.Redacted, format)
	}
}

func TestSafetyNetMasksPlainPEM(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"text", "json"} {
		var buf bytes.Buffer
		log := logging.New(&buf, format, slog.LevelDebug)
		log.Warn("oops", "raw", pemText, "err", errors.New("parse failed near "+pemText), "blob", []byte(pemText))
		log.With("attached", pemText).Error("with")
		out := buf.String()
		require.NotContains(t, out, "-----BEGIN", format)
		require.NotContains(t, out, "MC4CAQAw", format)
		require.Equal(t, 4, strings.Count(out, logging.Masked), format)
	}
}
